import pytest

from scheduler.bundling import MAX_BUNDLE_BYTES, BundlePacker, tasks_per_bundle
from worker.bundle import decode_bundle


def pack(packer: BundlePacker, tasks: list[tuple[int, int, str]]) -> list[str]:
    bodies = [body for task in tasks if (body := packer.add(*task)) is not None]
    last = packer.finish()
    return bodies + ([last] if last else [])


def test_never_fewer_bundles_than_slots() -> None:
    assert tasks_per_bundle(10_000, 16) == 625
    assert tasks_per_bundle(10, 16) == 1
    assert tasks_per_bundle(17, 16) == 2
    with pytest.raises(ValueError, match="at least 1"):
        tasks_per_bundle(0, 4)


def test_tasks_are_packed_in_order_by_count() -> None:
    tasks = [(1, n, f"sleep {n}") for n in range(1, 11)]
    bodies = pack(BundlePacker("job", ["w.txt"], per_bundle=4), tasks)
    bundles = [decode_bundle(body) for body in bodies]
    assert [len(b.tasks) for b in bundles] == [4, 4, 2]
    assert [b.bundle_id for b in bundles] == ["job-000001", "job-000002", "job-000003"]
    assert [(t.file_number, t.line, t.text) for b in bundles for t in b.tasks] == tasks


def test_bundles_stay_under_the_message_limit() -> None:
    big = "echo " + "x" * 8000
    tasks = [(1, n, big) for n in range(1, 401)]
    bodies = pack(BundlePacker("job", ["w.txt"], per_bundle=10_000), tasks)
    assert len(bodies) > 1
    assert all(len(body.encode()) <= MAX_BUNDLE_BYTES for body in bodies)
    assert sum(len(decode_bundle(body).tasks) for body in bodies) == 400
