"""Sorting surviving mutants by what their change is."""

from scripts.mutation_survivors import EXPLAINED, Survivor, explanation_of, group_of


def test_a_change_of_case_in_sql_is_the_same_program() -> None:
    before = '"UPDATE jobs SET cpu_seconds = cpu_seconds + ? WHERE id = ?"'
    assert group_of(before, before.lower()) == "sql case"
    kind = 'kind = "REAL" if column.endswith("seconds") else "INTEGER"'
    assert group_of(kind, kind.replace("REAL", "real")) == "sql case"  # a column's type


def test_a_messages_wording() -> None:
    assert group_of('raise X("no job")', 'raise X("XXno jobXX")') == "message wording"
    assert group_of('raise X("no job")', 'raise X("NO JOB")') == "message wording"
    # Quotes of the other kind inside a message.
    quoted = "raise X(\"sleep needs a duration, e.g. 'sleep 100'\")"
    assert group_of(quoted, quoted.replace('("', '("XX').replace('")', 'XX")')) == (
        "message wording"
    )


def test_anything_else_is_listed() -> None:
    assert group_of("timeout=30.0", "timeout=31.0") == "other"
    assert group_of("'$.duration_ms'", "'$.DURATION_MS'") == "other"  # a path, not words
    assert group_of('key = "job"', 'key = "XXjobXX"') == "other"  # a name


def test_a_survivor_is_explained_by_its_functions_reason_for_its_change() -> None:
    function = "worker.execute.xǁShellRunnerǁ_start"
    changed = Survivor(f"{function}__mutmut_24", "executable=program,", "executable=None,")
    removed = Survivor(f"{function}__mutmut_30", "executable=program,", "")
    elsewhere = Survivor("worker.task.x_check_line__mutmut_1", "executable=program,", "")
    other_change = Survivor(f"{function}__mutmut_13", "stdin=streams[0],", "stdin=None,")
    (reason,) = [e for e in EXPLAINED if e.function == function and e.change == "executable="]
    assert explanation_of(changed) == explanation_of(removed) == reason
    assert explanation_of(elsewhere) is None
    assert explanation_of(other_change) is None
