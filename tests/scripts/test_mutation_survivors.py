"""Sorting surviving mutants by what their change is."""

from scripts.mutation_survivors import group_of


def test_a_change_of_case_in_sql_is_the_same_program() -> None:
    before = '"UPDATE jobs SET cpu_seconds = cpu_seconds + ? WHERE id = ?"'
    assert group_of(before, before.lower()) == "sql case"


def test_a_messages_wording() -> None:
    assert group_of('raise X("no job")', 'raise X("XXno jobXX")') == "message wording"
    assert group_of('raise X("no job")', 'raise X("NO JOB")') == "message wording"


def test_anything_else_is_listed() -> None:
    assert group_of("timeout=30.0", "timeout=31.0") == "other"
    assert group_of("'$.duration_ms'", "'$.DURATION_MS'") == "other"  # a path, not words
    assert group_of('key = "job"', 'key = "XXjobXX"') == "other"  # a name
