"""The uneven workloads both benchmarks run: sorted by task size, and heavy-tailed."""

import random
from pathlib import Path


def uneven_workloads(
    directory: Path, *, short: int, long: int, long_ms: int, tailed: int, scale_ms: int, cap_ms: int
) -> dict[str, str]:
    """A sorted workload (``short`` `sleep 0`, then ``long`` `sleep long_ms`) and a
    heavy-tailed one (``tailed`` Pareto(1.5) sleeps of ``scale_ms`` and up, at most
    ``cap_ms``, from a fixed seed); their paths by name."""
    sorted_path = directory / "sorted.txt"
    sorted_path.write_text("sleep 0\n" * short + f"sleep {long_ms}\n" * long)
    rng = random.Random(553)
    tail = [min(cap_ms, int(scale_ms * rng.paretovariate(1.5))) for _ in range(tailed)]
    tailed_path = directory / "heavy-tailed.txt"
    tailed_path.write_text("".join(f"sleep {ms}\n" for ms in tail))
    return {"sorted": str(sorted_path), "heavy-tailed": str(tailed_path)}
