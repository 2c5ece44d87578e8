import json

import pytest

from worker.bundle import (
    Bundle,
    BundleTask,
    decode_bundle,
    decode_result_batch,
    encode_bundle,
    result_messages,
)
from worker.contracts import MAX_MESSAGE_BYTES
from worker.errors import BundleError
from worker.result import Outcome, Status, make_result


def test_bundles_round_trip_compactly() -> None:
    bundle = Bundle(
        "b1", "job1", ["a.txt", "b.txt"], [BundleTask(1, 3, "sleep 1"), BundleTask(2, 7, "echo é")]
    )
    body = encode_bundle(bundle)
    assert json.loads(body)["tasks"] == [[1, 3, "sleep 1"], [2, 7, "echo é"]]
    assert decode_bundle(body) == bundle


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        json.dumps({"bundle_id": "b", "job": "j", "files": ["a"]}),
        json.dumps({"bundle_id": "b", "job": "j", "files": ["a"], "tasks": [[2, 1, "x"]]}),
        json.dumps({"bundle_id": "b", "job": "j", "files": ["a"], "tasks": [["1", 1, "x"]]}),
    ],
)
def test_bad_bundles_are_refused(body: str) -> None:
    with pytest.raises(BundleError):
        decode_bundle(body)


def test_results_split_to_stay_under_the_message_limit() -> None:
    output = "x" * 60_000
    outcome = Outcome(Status.SUCCEEDED, 0, 1.0, 2.0, 1.0, output, output, False)
    results = [make_result(f"j:1:{n}", "j", "f", n, "cmd", "i-1", outcome) for n in range(1, 41)]
    messages = result_messages("b1", "i-1", results)
    assert len(messages) > 1
    assert all(len(m.encode()) < MAX_MESSAGE_BYTES for m in messages)
    batches = [decode_result_batch(m) for m in messages]
    assert [r.line for b in batches for r in b.results] == list(range(1, 41))
    assert {b.bundle_id for b in batches} == {"b1"}
