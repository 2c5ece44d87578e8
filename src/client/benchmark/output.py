"""What `taskfleet bench` leaves behind: JSON, CSV, PNG plots, a markdown report, a table."""

import csv
import json
import os
import platform
import time
from importlib import metadata
from pathlib import Path

from rich.table import Table

from client.benchmark.suite import Row

#: What each kind of experiment is judged by, for tables and plots.
MEASURE = {
    "throughput": "tasks/s",
    "efficiency": "efficiency",
    "uneven": "efficiency",
    "commands": "tasks/s",
}

#: Files a run writes in its output folder.
FILES = ("results.json", "results.csv", "throughput.png", "efficiency.png", "report.md")


def machine() -> dict[str, object]:
    """The facts a figure depends on, kept with it."""
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cores": os.cpu_count(),
        "cpu": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "taskfleet": metadata.version("taskfleet"),
        "msgspec": metadata.version("msgspec"),
    }


def write_data(folder: Path, rows: list[Row], facts: dict[str, object]) -> None:
    """results.json (facts and rows) and results.csv (rows)."""
    records = [r.as_dict() for r in rows]
    document = {"machine": facts, "rows": records}
    (folder / "results.json").write_text(json.dumps(document, indent=2) + "\n")
    with (folder / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]) if records else ["kind"])
        writer.writeheader()
        for row, record in zip(rows, records, strict=True):
            writer.writerow({**record, "runs": " ".join(f"{s:.6f}" for s in row.runs)})


def write_plots(folder: Path, rows: list[Row]) -> None:
    """throughput.png (sleep 0 and commands) and efficiency.png, figures against workers."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display
    from matplotlib import pyplot

    for name, kinds in (
        ("throughput", ("throughput", "commands")),
        ("efficiency", ("efficiency", "uneven")),
    ):
        # One panel per workload (per task count for throughput), in the order they ran.
        panels = list(
            dict.fromkeys(
                (r.kind, r.line, 0 if MEASURE[r.kind] == "efficiency" else r.tasks)
                for r in rows
                if r.kind in kinds and not r.absent
            )
        )
        figure, axes = pyplot.subplots(
            1, max(len(panels), 1), figsize=(5.5 * max(len(panels), 1), 4.2), squeeze=False
        )
        for axis, (kind, line, tasks) in zip(axes[0], panels, strict=False):
            chosen = [
                r
                for r in rows
                if r.kind == kind
                and r.line == line
                and (not tasks or r.tasks == tasks)
                and not r.absent
            ]
            for system in dict.fromkeys(r.system for r in chosen):
                points = sorted((r.workers, r.figure) for r in chosen if r.system == system)
                style = "--" if next(r.peer for r in chosen if r.system == system) else "-"
                axis.plot(*zip(*points, strict=True), style, marker="o", label=system)
            workers = sorted({r.workers for r in chosen})
            axis.set_xscale("log", base=2)
            axis.set_xticks(workers, [str(w) for w in workers])
            axis.set_xlabel("workers")
            axis.set_ylabel(MEASURE[kind])
            if MEASURE[kind] != "efficiency":
                axis.set_yscale("log")
            title = f"{line}" + (f", {tasks:,} tasks" if tasks else "")
            axis.set_title(title)
            axis.grid(True, which="both", alpha=0.3)
            axis.legend(fontsize="small")
        figure.tight_layout()
        figure.savefig(folder / f"{name}.png", dpi=100)
        pyplot.close(figure)


def table(rows: list[Row]) -> Table:
    """Every row, with its ratio to the best peer on the same workload."""
    view = Table(title="taskfleet bench (medians)")
    for column in ("workload", "tasks", "workers", "system", "seconds", "figure", "vs best peer"):
        view.add_column(
            column, no_wrap=True, justify="left" if column in ("workload", "system") else "right"
        )
    for r in rows:
        view.add_row(
            r.line,
            f"{r.tasks:,}",
            str(r.workers),
            r.system,
            seconds_text(r),
            figure_text(r),
            "" if r.vs_best_peer is None else f"{r.vs_best_peer:.2f}x",
            style=None if r.peer else "bold",
        )
    return view


def seconds_text(row: Row) -> str:
    return "-" if row.absent else f"{row.seconds:.3f}"


def figure_text(row: Row) -> str:
    if row.absent:
        return "absent (not installed)"
    if row.efficiency is not None:
        return f"{row.efficiency:.4f}"
    return f"{row.tasks_per_second:,.0f}/s"


def write_report(
    folder: Path, rows: list[Row], facts: dict[str, object], settings: dict[str, object]
) -> None:
    """report.md: the machine, the settings, every figure, the plots."""
    lines = [
        "# taskfleet bench",
        "",
        "Machine: " + ", ".join(f"{key} {value}" for key, value in facts.items()),
        "",
        "Settings: " + ", ".join(f"{key} {value}" for key, value in settings.items()),
        "",
        "Each figure is the median of the runs; seconds run from the first task handed over",
        "to the last result back, workers already started. Efficiency is ideal time over",
        "measured time (for the uneven workloads, the least any schedule could take: the work",
        "spread evenly, or the longest task); the last column is each row's figure over the",
        "best peer's. The peers",
        "do the same work per task (parse the line, run it) but keep no record of it;",
        "taskfleet writes a JSON result record per task (and the service journals it).",
        "",
        "| workload | tasks | workers | system | seconds | figure | vs best peer |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        system = r.system if r.peer else f"**{r.system}**"
        ratio = "" if r.vs_best_peer is None else f"{r.vs_best_peer:.2f}x"
        lines.append(
            f"| `{r.line}` | {r.tasks:,} | {r.workers} | {system} | {seconds_text(r)} "
            f"| {figure_text(r)} | {ratio} |"
        )
    lines += ["", "![throughput](throughput.png)", "", "![efficiency](efficiency.png)", ""]
    (folder / "report.md").write_text("\n".join(lines))
