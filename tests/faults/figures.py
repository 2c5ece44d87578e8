"""The fault suite's figures: each fault records its trials, and they are printed
at the end. A plugin of the root conftest: with pytest-xdist, the controller
(which collects nothing itself) prints what its workers hand it."""

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

#: Where the figures of the last run are kept too (FAULT_FIGURES overrides).
FIGURES_FILE = Path(os.environ.get("FAULT_FIGURES", ".pytest_cache/fault-figures.json"))


class Figures(NamedTuple):
    """What one fault did to the tasks over its trials."""

    fault: str
    trials: int
    tasks: int  # tasks over all trials
    lost: int  # tasks with no result
    reported_twice: int  # tasks with more than one result
    executed_twice: int  # tasks whose command ran twice
    note: str  # how executed-twice is bounded, or what else was checked
    # Of those, tasks whose first run had ended before the fault (None: not measured).
    finished_ran_again: int | None = None
    # Tasks reported lost that had finished, or had never started (None: not measured).
    finished_but_lost: int | None = None
    unstarted_but_lost: int | None = None


_recorded: list[Figures] = []


@pytest.fixture
def record() -> Iterator[list[Figures]]:
    """Append a fault's Figures; they are printed in the terminal summary."""
    mine: list[Figures] = []
    yield mine
    _recorded.extend(mine)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """On a pytest-xdist worker: hand this worker's figures to the controller."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["fault_figures"] = [f._asdict() for f in _recorded]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any) -> None:
    """On the pytest-xdist controller: gather a worker's figures, to print them
    (none from a worker that crashed)."""
    figures = getattr(node, "workeroutput", {}).get("fault_figures", [])
    _recorded.extend(Figures(**f) for f in figures)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _recorded or hasattr(terminalreporter.config, "workeroutput"):
        return  # nothing, or a worker's share: the controller prints them all
    terminalreporter.section("fault suite figures")
    terminalreporter.write_line(
        f"{'fault':72} {'trials':>6} {'tasks':>6} {'lost':>5} {'twice':>6} {'ran 2x':>6}"
        f" {'fin. 2x':>7} {'fin. lost':>9} {'unst. lost':>10}"
    )
    for f in _recorded:
        optional = [
            "-" if figure is None else str(figure)
            for figure in (f.finished_ran_again, f.finished_but_lost, f.unstarted_but_lost)
        ]
        terminalreporter.write_line(
            f"{f.fault:72} {f.trials:>6} {f.tasks:>6} {f.lost:>5} "
            f"{f.reported_twice:>6} {f.executed_twice:>6} {optional[0]:>7} {optional[1]:>9}"
            f" {optional[2]:>10}"
        )
    FIGURES_FILE.parent.mkdir(parents=True, exist_ok=True)
    FIGURES_FILE.write_text(json.dumps([f._asdict() for f in _recorded], indent=2) + "\n")
