"""Write image/constraints.txt: the exact versions a fleet instance installs.

pip resolves taskfleet's runtime dependencies (no extras) as an instance
would install them, without installing anything; its report's versions are
written as constraints. Run again after changing dependencies:

    python scripts/pin_worker.py     (or: make worker-constraints)
"""

import json
import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
CONSTRAINTS = REPOSITORY / "image" / "constraints.txt"

HEADER = """\
# The versions a fleet instance installs (image/install.sh), resolved by pip
# for taskfleet's runtime dependencies. Written by scripts/pin_worker.py:
# run it again (make worker-constraints) after changing the dependencies.
"""


def normal(name: str) -> str:
    """A package name as the registry compares them (PEP 503)."""
    return name.lower().replace("_", "-").replace(".", "-")


def resolve(*pip_options: str) -> dict[str, str]:
    """Name -> version of every package pip would install for the project."""
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed"]
    command += ["--quiet", "--report", "-", *pip_options, str(REPOSITORY)]
    report = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600)
    names = (item["metadata"] for item in json.loads(report.stdout)["install"])
    return {normal(meta["name"]): meta["version"] for meta in names if meta["name"] != "taskfleet"}


def pinned() -> dict[str, str]:
    """Name -> version of what constraints.txt pins."""
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[normal(name)] = version
    return pins


def main() -> None:
    pins = resolve()
    lines = [f"{name}=={version}" for name, version in sorted(pins.items())]
    CONSTRAINTS.write_text(HEADER + "\n".join(lines) + "\n")
    print(f"{CONSTRAINTS.relative_to(REPOSITORY)}: {len(lines)} packages pinned")


if __name__ == "__main__":
    main()
