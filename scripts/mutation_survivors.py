"""The mutants `make mutation` left alive, sorted by what their change is.

    .venv/bin/python -m scripts.mutation_survivors > docs/mutation-survivors.md

It reads mutmut's results (run `make mutation` first) and each survivor's diff
(`mutmut show`), and puts every one in a group:

- letter case in SQL (SQLite reads keywords and names in any case): the same
  program, nothing a test could catch;
- a message's wording (words in a string wrapped in XX, or changed in case):
  tests match the part of a message that carries its meaning;
- explained: a change no test should catch, with the reason (``EXPLAINED``);
- every other survivor, one by one, with its diff: each one a test should
  kill, or that needs a reason in ``EXPLAINED``. The script exits 1 while any
  is left, and names explanations that no survivor needs any more.
"""

import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import NamedTuple

MUTMUT = str(Path(sys.executable).parent / "mutmut")

#: A string literal, in double or single quotes (the other kind may be inside).
STRING = re.compile(r""""([^"]*)"|'([^']*)'""")

SQL_WORDS = re.compile(
    r"\b(SELECT|UPDATE|INSERT|DELETE|CREATE|ALTER|BEGIN|WHERE|FROM|ORDER BY|SET|VALUES"
    r"|REAL|INTEGER|TEXT)\b",
    re.IGNORECASE,
)


class Explained(NamedTuple):
    """Why the survivors of one function whose changed line holds ``change`` are
    no bug a test should catch."""

    function: str  # as mutmut names it, e.g. "worker.claims.x_is_done"
    change: str  # a piece of the line as the mutant has it
    reason: str


JOURNAL = "scheduler.jobs.journal.xǁJournalǁ"
EQUAL_LENGTHS = (
    "the results are made from the same rows they are zipped with: the lengths are always"
    " equal, so strict never has anything to say"
)
SHELL = "worker.execute.xǁShellRunnerǁ"

#: Survivors that are the same program, or differ only in what no test should
#: pin down (a few hundred microseconds, a cache's bound), each with its reason.
EXPLAINED = [
    Explained(
        "scheduler.service.credentials.xǁCredentialsǁholder",
        'b"XXXX"',
        "a request without a Cookie header reads as one cookie named XXXX with no value:"
        " no session either way",
    ),
    Explained(
        JOURNAL + "__init__",
        "timeout=31.0",
        "how long a write waits for another connection's lock, 31 s instead of 30: telling"
        " them apart takes a test that holds a lock that long",
    ),
    Explained(
        JOURNAL + "__init__",
        "connect(path, isolation_level",
        "how long a write waits for another connection's lock, sqlite's 5 s instead of 30:"
        " telling them apart takes a test that holds a lock that long",
    ),
    Explained(
        JOURNAL + "_retries",
        "return 1 if row is None",
        "a job the journal does not hold has no task a result could update, with a retry"
        " or without",
    ),
    Explained(
        JOURNAL + "_store_files",
        "enumerate(files, ",
        "file numbers only order a job's names (job_files reads them ORDER BY number):"
        " counted from 0 or 2, the order is the same",
    ),
    Explained(
        JOURNAL + "close_unfinished",
        "rows, strict=",
        EQUAL_LENGTHS,
    ),
    Explained(
        JOURNAL + "close_unfinished",
        "rows, ):",
        EQUAL_LENGTHS,
    ),
    Explained(
        JOURNAL + "next_seq",
        "(row[0] or 1) + 1",
        "a fresh journal numbers its first result 2, not 1: sequence numbers are only"
        " compared (results after a cursor), never counted",
    ),
    Explained(
        "worker.claims.x_is_done",
        "index / 8 < len(done)",
        "a quotient is below a whole length exactly when its floor is",
    ),
    Explained(
        "worker.execute.x__read_spool",
        "].decode(",
        "UTF-8 is Python's default codec, and codec names are read in any case",
    ),
    Explained(
        "worker.execute.x__read_spool",
        "OUTPUT_LIMIT_BYTES + 2",
        "one byte more read than it takes to see that the output went past the limit:"
        " the same text, the same answer",
    ),
    Explained(
        "worker.execute.x_precise_sleep",
        "coarse = seconds + SLEEP_SPIN_SECONDS",
        "a sleep that ends 1 ms late (a 10 ms task recorded as 11 ms): a timing that a test"
        " on a shared, loaded machine cannot tell from the machine's own delays",
    ),
    Explained(
        "worker.execute.x_precise_sleep",
        "if coarse >= 0:",
        "time.sleep(0) when the sleep is exactly the spin: nothing",
    ),
    Explained(
        "worker.execute.x_precise_sleep",
        "while time.perf_counter() <= deadline:",
        "one more look at a clock that has passed the deadline or is on it",
    ),
    Explained(
        "worker.execute.x_wait_for_exit",
        "watch.register(pidfd, )",
        "poll's default events include POLLIN, the only one a pidfd reports",
    ),
    Explained(
        "worker.execute.x_wait_for_exit",
        "began > timeout",
        "a time limit reached at the very instant it ends, to the clock's last digit:"
        " a timing, not a behaviour",
    ),
    Explained(
        "worker.execute.xǁSpawnedCommandǁwait",
        "> deadline",
        "a time limit reached at the very instant it ends, to the clock's last digit:"
        " a timing, not a behaviour",
    ),
    Explained(
        "worker.execute.xǁSpawnedCommandǁwait",
        "time.sleep(1.001)",
        "on a kernel without pidfds, a command's end seen up to a second late instead of a"
        " millisecond: a timing that a test on a shared machine cannot pin down",
    ),
    Explained(
        SHELL + "__init__",
        '.get("PATH", ',
        "without PATH, shutil.which(path=None) falls back to os.defpath itself",
    ),
    Explained(
        SHELL + "__init__",
        "os.O_RDONLY & os.O_CLOEXEC",
        "the descriptor of /dev/null reaches no command all the same: it is marked"
        " close-on-exec with the others right after (keep_descriptors_from_commands),"
        " and Popen closes all but the three it hands on",
    ),
    Explained(
        SHELL + "_program",
        "len(self._programs) > PROGRAM_CACHE_SIZE",
        "the cache is cleared at 1,025 programs instead of 1,024: a bound on memory",
    ),
    Explained(
        SHELL + "kill_current",
        "contextlib.suppress(None)",
        "the command's group vanishing between poll() and killpg() is a race with the"
        " stop signal's handler that no test can arrange",
    ),
    Explained(
        SHELL + "_start",
        "executable=",
        "without it, Popen looks the program up on the same PATH that argv() used",
    ),
]


class Survivor(NamedTuple):
    name: str
    before: str  # the lines the mutant changed
    after: str  # the lines it put instead

    @property
    def function(self) -> str:
        return self.name.split("__mutmut_")[0]


def statuses() -> dict[str, str]:
    """Every mutant's name and status (killed, survived, timeout, no tests, ...)."""
    shown = subprocess.run(
        [MUTMUT, "results", "--all", "true"], capture_output=True, text=True, check=True
    )
    found = {}
    for line in shown.stdout.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if name:
            found[name] = status
    return found


def change_of(name: str) -> tuple[str, str]:
    """The lines a mutant removed and the lines it put instead."""
    shown = subprocess.run([MUTMUT, "show", name], capture_output=True, text=True, check=True)
    lines = shown.stdout.splitlines()
    removed = [line[1:] for line in lines if line.startswith("-") and not line.startswith("---")]
    added = [line[1:] for line in lines if line.startswith("+") and not line.startswith("+++")]
    return "\n".join(removed).strip(), "\n".join(added).strip()


def literals(code: str) -> list[str]:
    return [double or single for double, single in STRING.findall(code)]


def group_of(before: str, after: str) -> str:
    if before.lower() == after.lower() and SQL_WORDS.search(before):
        return "sql case"
    # Words (a message), not a name or a path, changed in case or wrapped in XX.
    pairs = zip(literals(before), literals(after), strict=False)
    changed = [old for old, new in pairs if old != new]
    reworded = before.lower() == after.lower() or re.sub("XX", "", after) == before
    if reworded and changed and all(" " in old for old in changed):
        return "message wording"
    return "other"


def explanation_of(survivor: Survivor) -> Explained | None:
    """The reason that covers a survivor: its function's, whose piece of code is
    in the mutant's line (or in the line it removed)."""
    for explained in EXPLAINED:
        if survivor.function == explained.function and explained.change in (
            survivor.after or survivor.before
        ):
            return explained
    return None


def by_function_and_number(name: str) -> tuple[str, int]:
    function, _, number = name.rpartition("__mutmut_")
    return function, int(number)


def main() -> int:
    found = statuses()
    tally = Counter(found.values())
    groups: dict[str, list[Survivor]] = defaultdict(list)
    reasons: dict[str, Explained] = {}
    survived = [name for name, status in found.items() if status == "survived"]
    for name in sorted(survived, key=by_function_and_number):
        survivor = Survivor(name, *change_of(name))
        group = group_of(survivor.before, survivor.after)
        explained = explanation_of(survivor) if group == "other" else None
        if explained is not None:
            group = "explained"
            reasons[name] = explained
        groups[group].append(survivor)
    reached = len(found) - tally["no tests"]
    caught = tally["killed"] + tally["timeout"]
    print("# Surviving mutants\n")
    print(
        f"From `make mutation` on this code: {len(found)} mutants; {tally['killed']} killed"
        f" and {tally['timeout']} timed out, {caught / len(found):.0%} of all and"
        f" {caught / reached:.0%} of the {reached} the selected tests reach;"
        f" {tally['no tests']} in code no selected test runs;"
        f" {tally['survived']} survived:\n"
    )
    print(f"- letter case in SQL, the same program: {len(groups['sql case'])}")
    print(f"- a message's wording: {len(groups['message wording'])}")
    print(f"- explained below, each with its reason: {len(groups['explained'])}")
    print(f"- not explained yet, below one by one: {len(groups['other'])}\n")
    unreached = sorted({name.split("__mutmut_")[0] for name, s in found.items() if s == "no tests"})
    if unreached:
        print("## In code no selected test runs\n")
        print("".join(f"- `{function}`\n" for function in unreached))
    for title, group in (("Explained", "explained"), ("Not explained yet", "other")):
        if not groups[group]:
            continue
        print(f"## {title}\n")
        by_function: dict[str, list[Survivor]] = defaultdict(list)
        for survivor in groups[group]:
            by_function[survivor.function].append(survivor)
        for function, survivors in sorted(by_function.items()):
            print(f"### `{function}` ({len(survivors)})\n")
            for survivor in survivors:
                number = survivor.name.rsplit("_", 1)[-1]
                print(f"- `{number}`: `{survivor.before}` → `{survivor.after}`")
                if survivor.name in reasons:
                    print(f"  — {reasons[survivor.name].reason}")
            print()
    unused = [e for e in EXPLAINED if e not in reasons.values()]
    for explained in unused:
        print(f"no survivor needs: {explained.function}: {explained.change}", file=sys.stderr)
    return 1 if groups["other"] or unused else 0


if __name__ == "__main__":
    sys.exit(main())
