"""The direction of imports between taskfleet's packages, read from the source.

client ──▶ scheduler ──▶ worker; inside scheduler, toward ``jobs/``: the
journal and the dispatcher know no path (``local/``, ``fleet/``) and no HTTP
service, and only the service and the CLI's service commands import
``scheduler.service``. ``worker`` imports neither of the others: what runs
on an instance is the worker's code alone.
"""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def imports_of(path: Path) -> set[str]:
    """Every module a source file imports, at any depth (lazy imports too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def modules(package: str) -> dict[str, set[str]]:
    """A package's files (relative to src) and what each imports."""
    return {
        str(path.relative_to(SRC)): imports_of(path)
        for path in sorted((SRC / package).rglob("*.py"))
    }


def offenders(package: str, forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    """ "FILE -> MODULE" for each import of a forbidden package, but from allowed files."""
    return [
        f"{file} -> {module}"
        for file, imported in modules(package).items()
        if not file.startswith(allowed)
        for module in sorted(imported)
        if module.startswith(forbidden)
    ]


def test_the_worker_imports_neither_the_scheduler_nor_the_client() -> None:
    assert offenders("worker", ("scheduler", "client")) == []


def test_the_scheduler_never_imports_the_client() -> None:
    assert offenders("scheduler", ("client",)) == []


def test_only_the_service_imports_the_service() -> None:
    assert offenders("scheduler", ("scheduler.service",), ("scheduler/service/",)) == []
    assert offenders("client", ("scheduler.service",), ("client/cli/service.py",)) == []


def test_jobs_know_no_path() -> None:
    assert offenders("scheduler/jobs", ("scheduler.local", "scheduler.fleet")) == []


def test_the_paths_know_nothing_of_each_other() -> None:
    assert offenders("scheduler/local", ("scheduler.fleet",)) == []
    assert offenders("scheduler/fleet", ("scheduler.local",)) == []


def test_an_import_against_the_rules_is_found(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text("def f():\n    from scheduler.service.api import build_app\n")
    assert imports_of(planted) == {"scheduler.service.api"}
