"""What reaches a terminal from submit, results, status and run shows control,
C1 and bidi-override characters as escapes; results files are 0600."""

import io
import json
import logging
import os
import stat
import subprocess
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from client.cli import app
from client.cli.service import print_jobs
from client.report import usage_lines
from client.terminal import UNSAFE, VisibleLogFormatter, visible, visible_lines, visible_stream
from tests.conftest import StartScheduler, WriteWorkload, taskfleet_command

runner = CliRunner()

#: One of each kind a terminal acts on: ESC (a C0 control), a CSI in C1, a
#: right-to-left override and a right-to-left isolate; BEL and DEL besides.
HOSTILE = "\x1b[2J\u009b31m\u202egnp.exe\u2067\x07\x7f"

#: A shell command that prints HOSTILE (printf's octal escapes of its UTF-8).
PRINT_HOSTILE = "printf '\\033[2J\\302\\23331m\\342\\200\\256gnp.exe\\342\\201\\247\\007\\177'"


def unsafe_in(text: str) -> list[str]:
    """The characters of ``text`` a terminal would act on, other than newlines."""
    return [c for c in text if c != "\n" and UNSAFE.match(c)]


def test_visible_escapes_every_kind_and_nothing_else() -> None:
    assert visible(HOSTILE) == "\\u001b[2J\\u009b31m\\u202egnp.exe\\u2067\\u0007\\u007f"
    for code in [*range(0x20), *range(0x7F, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A)]:
        assert visible(chr(code)) == f"\\u{code:04x}"
    kept = "plain ascii, é, 日本, emoji 🙂, U+200F\u200f, U+00A0\u00a0"
    assert visible(kept) == kept
    assert visible("a\nb") == "a\\u000ab"
    assert visible_lines("a\x1b\nb\u202e\n") == "a\\u001b\nb\\u202e\n"


def test_a_visible_stream_keeps_json_that_decodes_the_same() -> None:
    record = json.dumps({"stdout": HOSTILE + "é"}, ensure_ascii=False) + "\n"
    target = io.BytesIO()
    with visible_stream(target) as stream:
        data = record.encode()
        for n in range(0, len(data), 3):  # pieces that cut characters in two
            stream.write(data[n : n + 3])
    shown = target.getvalue().decode()
    assert unsafe_in(shown) == []
    assert json.loads(shown)["stdout"] == HOSTILE + "é"


def test_log_messages_are_one_visible_line() -> None:
    record = logging.LogRecord(
        "x", logging.WARNING, __file__, 1, "dropped: %s", (HOSTILE + "\nforged",), None
    )
    shown = VisibleLogFormatter().format(record)
    assert "\n" not in shown
    assert unsafe_in(shown) == []


def test_run_shows_a_bad_file_name_and_its_records_visibly(workload: WriteWorkload) -> None:
    bad = workload("sleep abc", name=f"bad{HOSTILE}.txt")
    result = runner.invoke(app, ["run", bad])
    assert result.exit_code == 2
    assert "bad\\u001b[2J\\u009b31m" in result.stderr
    assert unsafe_in(result.stderr) == []
    good = workload(PRINT_HOSTILE, name=f"good{HOSTILE}.txt")
    result = runner.invoke(app, ["run", good, "-w", "1"])
    assert result.exit_code == 0, result.stderr
    assert unsafe_in(result.stdout) == []
    (record,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert (record["stdout"], record["file"]) == (HOSTILE, good)  # the same record, escaped


def test_a_usage_error_shows_what_was_typed_visibly(workload: WriteWorkload) -> None:
    result = runner.invoke(app, ["run", workload("sleep 0"), f"--no-such-{HOSTILE}"])
    assert result.exit_code == 2
    assert "No such option" in result.stderr
    assert unsafe_in(result.stderr) == []


def test_status_shows_names_and_words_from_the_scheduler_visibly() -> None:
    job = {
        "job": "j1",
        "state": "done",
        "tasks": 1,
        "succeeded": 1,
        "failed": 0,
        "files": [f"name{HOSTILE}.txt"],
        "file_count": 1,
    }
    screen = io.StringIO()
    print_jobs(Console(file=screen, width=400), [job])
    assert "name\\u001b[2J" in screen.getvalue()
    assert unsafe_in(screen.getvalue()) == []
    figures = {"usage": {"instance_seconds": 1.0}, "priced_at": {"instance_basis": HOSTILE}}
    assert unsafe_in("".join(usage_lines(figures))) == []


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_run_creates_its_results_file_0600(workload: WriteWorkload, tmp_path: Path) -> None:
    output = tmp_path / "results.jsonl"
    umask = os.umask(0o022)  # what most people have: files 0644 unless made otherwise
    try:
        result = runner.invoke(app, ["run", workload("echo secret"), "-o", str(output)])
    finally:
        os.umask(umask)
    assert result.exit_code == 0, result.stderr
    assert mode_of(output) == 0o600
    assert json.loads(output.read_text())["stdout"] == "secret\n"


def run_with_umask_022(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """The real CLI, started with the umask most people have (files 0644 unless made otherwise)."""
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        ["sh", "-c", 'umask 022; exec "$@"', "sh", *taskfleet_command(), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        **kwargs,
    )


@pytest.mark.e2e
def test_submit_results_and_status_show_visibly_and_write_0600(
    scheduler_service: StartScheduler, workload: WriteWorkload, tmp_path: Path
) -> None:
    service = scheduler_service()
    # Bidi characters may be in a file name the scheduler keeps; controls may not.
    name = "report\u202etxt.exe\u2066.txt"
    path = workload(PRINT_HOSTILE, name=name)
    submitted = tmp_path / "submitted.jsonl"
    done = run_with_umask_022("submit", path, "--scheduler", service.url, "-o", str(submitted))
    assert done.returncode == 0, done.stderr
    assert mode_of(submitted) == 0o600
    assert json.loads(submitted.read_text())["stdout"] == HOSTILE  # the file keeps the bytes
    job = done.stderr.split("job ", 1)[1].split(":", 1)[0]

    shown = run_with_umask_022("results", job, "--scheduler", service.url)
    assert shown.returncode == 0, shown.stderr
    assert unsafe_in(shown.stdout) == []
    assert json.loads(shown.stdout)["stdout"] == HOSTILE
    fetched = tmp_path / "fetched.jsonl"
    done = run_with_umask_022("results", job, "--scheduler", service.url, "-o", str(fetched))
    assert done.returncode == 0, done.stderr
    assert mode_of(fetched) == 0o600

    followed = run_with_umask_022("submit", path, "--scheduler", service.url)
    assert followed.returncode == 0, followed.stderr
    assert unsafe_in(followed.stdout + followed.stderr) == []
    assert json.loads(followed.stdout)["file"] == path

    table = run_with_umask_022(
        "status", "--scheduler", service.url, env={**os.environ, "COLUMNS": "400"}
    )
    assert table.returncode == 0, table.stderr
    assert "report\\u202etxt.exe\\u2066.txt" in table.stdout
    assert unsafe_in(table.stdout) == []

    refused = run_with_umask_022("results", f"no{HOSTILE}", "--scheduler", service.url)
    assert refused.returncode == 2
    assert refused.stderr.startswith("taskfleet: not a job id: no\\u001b[2J")
    assert unsafe_in(refused.stderr) == []


def test_the_test_sees_what_it_looks_for() -> None:
    # unsafe_in finds each kind, so a test above that finds none has looked.
    assert len(unsafe_in(HOSTILE)) == len("\x1b\u009b\u202e\u2067\x07\x7f")
