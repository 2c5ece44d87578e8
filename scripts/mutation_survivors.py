"""The mutants `make mutation` left alive, sorted by what their change is.

    .venv/bin/python -m scripts.mutation_survivors > docs/mutation-survivors.md

It reads mutmut's results (run `make mutation` first) and each survivor's diff
(`mutmut show`), and puts every one in a group:

- letter case in SQL (SQLite reads keywords and names in any case): the same
  program, nothing a test could catch;
- a message's wording (words in a string wrapped in XX, or changed in case):
  tests match the part of a message that carries its meaning;
- every other survivor, one by one, with its diff: the ones a test should
  kill, or that need a word of explanation.
"""

import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

MUTMUT = str(Path(sys.executable).parent / "mutmut")

STRING = re.compile(r"""["']([^"']*)["']""")

SQL_WORDS = re.compile(
    r"\b(SELECT|UPDATE|INSERT|DELETE|CREATE|ALTER|BEGIN|WHERE|FROM|ORDER BY|SET|VALUES)\b",
    re.IGNORECASE,
)


def survivors() -> list[str]:
    shown = subprocess.run([MUTMUT, "results"], capture_output=True, text=True, check=True)
    return [line.split(":")[0].strip() for line in shown.stdout.splitlines() if "survived" in line]


def change_of(name: str) -> tuple[str, str]:
    """The line a mutant removed and the line it put instead."""
    shown = subprocess.run([MUTMUT, "show", name], capture_output=True, text=True, check=True)
    removed = [line[1:] for line in shown.stdout.splitlines() if line.startswith("- ")]
    added = [line[1:] for line in shown.stdout.splitlines() if line.startswith("+ ")]
    return "\n".join(removed).strip(), "\n".join(added).strip()


def group_of(before: str, after: str) -> str:
    if before.lower() == after.lower() and SQL_WORDS.search(before):
        return "sql case"
    # Words (a message), not a name or a path, changed in case or wrapped in XX.
    literals = zip(STRING.findall(before), STRING.findall(after), strict=False)
    changed = [old for old, new in literals if old != new]
    reworded = before.lower() == after.lower() or re.sub("XX", "", after) == before
    if reworded and changed and all(" " in old for old in changed):
        return "message wording"
    return "other"


def main() -> None:
    groups: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for name in survivors():
        before, after = change_of(name)
        groups[group_of(before, after)].append((name, before, after))
    total = sum(len(found) for found in groups.values())
    print("# Surviving mutants\n")
    print(f"From `make mutation` on this code: {total} survivors.\n")
    print(f"- letter case in SQL, the same program: {len(groups['sql case'])}")
    print(f"- a message's wording: {len(groups['message wording'])}")
    print(f"- others, below one by one: {len(groups['other'])}\n")
    by_function: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for name, before, after in groups["other"]:
        by_function[name.split("__mutmut_")[0]].append((name, before, after))
    for function, found in sorted(by_function.items()):
        print(f"## `{function}` ({len(found)})\n")
        for name, before, after in found:
            print(f"- `{name.rsplit('_', 1)[-1]}`: `{before}` → `{after}`")
        print()


if __name__ == "__main__":
    main()
