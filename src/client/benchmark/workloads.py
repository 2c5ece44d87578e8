"""The uneven workloads the benchmarks run: sorted by task size, and heavy-tailed.

Uniform workloads (the same line many times) show a scheduler's overhead;
these show whether it keeps every worker busy to the end when tasks differ,
which is where chunking and bundling go wrong.
"""

import random
from pathlib import Path

#: The heavy-tailed workload's seed: the same durations on every run.
SEED = 553


def sorted_durations(short: int, long: int, long_ms: int) -> tuple[int, ...]:
    """``short`` `sleep 0`, then ``long`` `sleep long_ms`: the long tasks come last,
    where a scheduler that cut the workload into equal chunks early loses most."""
    return (0,) * short + (long_ms,) * long


def heavy_tailed_durations(tasks: int, scale_ms: int, cap_ms: int) -> tuple[int, ...]:
    """``tasks`` Pareto(1.5) durations of ``scale_ms`` and up, at most ``cap_ms``."""
    rng = random.Random(SEED)
    return tuple(min(cap_ms, int(scale_ms * rng.paretovariate(1.5))) for _ in range(tasks))


def repeated(directory: Path, name: str, line: str, count: int) -> str:
    """A workload file of one line ``count`` times; its path."""
    path = directory / name
    path.write_text(f"{line}\n" * count)
    return str(path)


def sleep_lines(durations: tuple[int, ...]) -> str:
    """A workload file's text: one `sleep N` a line."""
    return "".join(f"sleep {ms}\n" for ms in durations)


def uneven_workloads(
    directory: Path, *, short: int, long: int, long_ms: int, tailed: int, scale_ms: int, cap_ms: int
) -> dict[str, str]:
    """The sorted and the heavy-tailed workload written in ``directory``; their paths by name."""
    paths = {}
    for name, durations in (
        ("sorted", sorted_durations(short, long, long_ms)),
        ("heavy-tailed", heavy_tailed_durations(tailed, scale_ms, cap_ms)),
    ):
        path = directory / f"{name}.txt"
        path.write_text(sleep_lines(durations))
        paths[name] = str(path)
    return paths
