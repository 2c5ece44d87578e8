"""`taskfleet bench --quick` end to end: the real command, real worker processes and peers."""

import csv
import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.e2e


def test_a_quick_bench_leaves_figures_plots_and_a_report(tmp_path: Path) -> None:
    folder = tmp_path / "figures"
    done = run_cli("bench", "--quick", "-o", str(folder), timeout=240)
    assert done.returncode == 0, done.stderr

    document = json.loads((folder / "results.json").read_text())
    assert document["machine"]["cores"] >= 1
    assert document["machine"]["taskfleet"]
    rows = document["rows"]
    systems = {r["system"] for r in rows}
    assert {"taskfleet run", "taskfleet service", "Pool chunksize=1"} <= systems
    assert {"Pool map (auto chunks)", "ProcessPoolExecutor", "xargs -P"} <= systems
    # GNU parallel is a peer of the commands whether it is installed or not.
    (parallel,) = [r for r in rows if r["system"] == "GNU parallel -j"]
    assert parallel["absent"] == (shutil.which("parallel") is None)
    assert {r["line"] for r in rows if r["kind"] == "uneven"} == {"sorted", "heavy-tailed"}
    for row in rows:
        if row["absent"]:
            assert (row["runs"], row["vs_best_peer"]) == ([], None)
            continue
        assert row["tasks_per_second"] > 0
        assert row["seconds"] == sorted(row["runs"])[len(row["runs"]) // 2]
        assert row["vs_best_peer"] > 0
        if row["line"] in ("sleep 10", "sorted", "heavy-tailed"):
            # Nothing can beat the ideal time by more than the clock's noise.
            assert 0 < row["efficiency"] <= 1.02
        else:
            assert row["efficiency"] is None
    for kind, workers in (("throughput", 1), ("throughput", 2), ("efficiency", 2), ("uneven", 2)):
        best_peer = max(
            r["vs_best_peer"]
            for r in rows
            if r["kind"] == kind and r["workers"] == workers and r["peer"]
        )
        assert best_peer == pytest.approx(1.0)

    with (folder / "results.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == len(rows)
    for plot in ("throughput.png", "efficiency.png"):
        assert (folder / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (folder / "report.md").read_text()
    assert "![throughput](throughput.png)" in report
    assert report.count("| `sleep 0` |") == sum(1 for r in rows if r["line"] == "sleep 0")
    assert "taskfleet service" in done.stdout  # the table
    if parallel["absent"]:
        assert "absent (not installed)" in report


def test_bench_refuses_a_folder_it_cannot_write(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    done = run_cli("bench", "--quick", "-o", str(blocker / "figures"))
    assert done.returncode == 2
    assert "cannot write the figures" in done.stderr


def test_bench_names_an_experiment_it_does_not_have(tmp_path: Path) -> None:
    done = run_cli("bench", "--quick", "--only", "sleep 5", "-o", str(tmp_path / "figures"))
    assert done.returncode == 2
    assert "--only sleep 5: no such experiment" in done.stderr
