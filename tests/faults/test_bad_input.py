"""Bad input, generated: the parser and every request the scheduler takes (hypothesis).

Whatever the bytes, the answer is a task or a clear refusal that names the file
and line (the parser), or a 4xx with a JSON error (the service): never a crash,
never a 500.
"""

import json
import string
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import in_process_service
from worker.errors import TaskfleetError
from worker.task import MAX_SLEEP_MS, check_line
from worker.workload import WorkloadCounts, check_workload

#: Generated inputs per property: 10,000 in all, half of them through HTTP.
LINES = 5_500
FILES = 1_000
UPLOADS = 800
QUERIES = 600


def examples(count: int) -> settings:
    """``count`` generated inputs, however slow this machine is today."""
    return settings(max_examples=count, deadline=None, suppress_health_check=[HealthCheck.too_slow])


sleep_like = st.builds(
    lambda gap, argument: f"sleep{gap}{argument}",
    st.sampled_from(["", " ", "\t", "  "]),
    st.one_of(st.text(max_size=20), st.integers().map(str), st.floats().map(str)),
)


@examples(LINES)
@given(st.one_of(st.text(), sleep_like))
def test_any_line_is_a_task_or_a_clear_refusal(text: str) -> None:
    planned = parsed(text)
    if isinstance(planned, ValueError):
        assert str(planned)  # a reason, in words
    elif planned is not None:
        assert text.startswith("sleep")
        assert 0 <= planned <= MAX_SLEEP_MS


def parsed(text: str) -> int | ValueError | None:
    try:
        return check_line(text)
    except ValueError as refused:
        return refused


@examples(FILES)
@given(st.binary(max_size=4096))
def test_any_workload_file_is_counted_or_refused_naming_file_and_line(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "w.txt"
        path.write_bytes(content)
        counts = counted(str(path))
    if isinstance(counts, TaskfleetError):
        message = str(counts)
        assert message.startswith(f"{path}:"), message
        rest = message[len(str(path)) + 1 :]
        line, _, reason = rest.partition(": ")
        if reason:
            assert line.isdigit(), message
        else:
            assert rest.strip() == "no tasks (only blank lines and # comments)", message
    else:
        assert counts.total >= 1


def counted(path: str) -> WorkloadCounts | TaskfleetError:
    try:
        return check_workload([path])
    except TaskfleetError as refused:
        return refused


@pytest.fixture(scope="module")
def service() -> Iterator[httpx.Client]:
    """The service in this process (nothing generated ever runs), and a client of it."""
    with (
        in_process_service() as running,
        httpx.Client(base_url=running.url, headers=running.headers) as client,
    ):
        yield client


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
task_objects = st.fixed_dictionaries(
    {},
    optional={
        "file": st.one_of(st.text(max_size=20), json_values),
        "line": st.one_of(st.integers(), json_values),
        "task": st.one_of(st.text(max_size=40), sleep_like, json_values),
    },
)
upload_bodies = st.one_of(
    st.binary(max_size=2048),
    st.lists(task_objects, max_size=5).map(
        lambda tasks: b"\n".join(json.dumps(t).encode() for t in tasks)
    ),
)


@pytest.mark.volume
@examples(UPLOADS)
@given(
    body=upload_bodies,
    placement=st.one_of(st.sampled_from(["local", "remote", "hybrid"]), st.text(max_size=8)),
)
def test_any_upload_is_taken_or_refused_with_a_4xx(
    service: httpx.Client, body: bytes, placement: str
) -> None:
    response = service.post("/jobs", content=body, params={"placement": placement})
    assert response.status_code in (201, 400, 409, 413), response.text
    answer = response.json()
    if response.status_code == 201:
        assert answer["tasks"] >= 1
    else:
        assert answer["error"]


@pytest.mark.volume
@examples(QUERIES)
@given(
    # "." and ".." are dot segments: the client resolves them (RFC 3986) before
    # sending, so they never reach a job route.
    job=st.text(alphabet=string.printable, min_size=1, max_size=24).filter(
        lambda job: job not in (".", "..")
    ),
    follow=st.text(max_size=6),
    route=st.sampled_from(["status", "results", "cancel"]),
)
def test_any_job_query_is_answered_never_a_crash(
    service: httpx.Client, job: str, follow: str, route: str
) -> None:
    path = f"/jobs/{quote(job, safe='')}"
    if route == "status":
        response = service.get(path)
    elif route == "results":
        response = service.get(f"{path}/results", params={"follow": follow})
    else:
        response = service.post(f"{path}/cancel")
    # Generated ids name no job (new ids are 8 random hex digits) or no route;
    # "/jobs/" + "/" is redirected to /jobs.
    assert response.status_code in (307, 404, 405), (path, response.status_code, response.text)
