from scheduler.fleet.bundling import MAX_BUNDLE_BYTES, BundlePacker
from worker.bundle import decode_bundle


def pack(packer: BundlePacker, tasks: list[tuple[int, int, str]]) -> list[str]:
    packed = [bundle for task in tasks if (bundle := packer.add(*task)) is not None]
    last = packer.finish()
    bundles = packed + ([last] if last else [])
    for bundle in bundles:
        decoded = decode_bundle(bundle.body)
        assert (decoded.bundle_id, len(decoded.tasks)) == (bundle.bundle_id, bundle.tasks)
    return [bundle.body for bundle in bundles]


def test_tasks_are_packed_in_order_by_count() -> None:
    tasks = [(1, n, f"sleep {n}") for n in range(1, 11)]
    bodies = pack(BundlePacker("job", ["w.txt"], per_bundle=4), tasks)
    bundles = [decode_bundle(body) for body in bodies]
    assert [len(b.tasks) for b in bundles] == [4, 4, 2]
    prefix = bundles[0].bundle_id.removesuffix("-000001")
    assert [b.bundle_id for b in bundles] == [f"{prefix}-00000{n}" for n in (1, 2, 3)]
    assert [(t.file_number, t.line, t.text) for b in bundles for t in b.tasks] == tasks


def test_bundles_stay_under_the_message_limit() -> None:
    big = "echo " + "x" * 8000
    tasks = [(1, n, big) for n in range(1, 401)]
    bodies = pack(BundlePacker("job", ["w.txt"], per_bundle=10_000), tasks)
    assert len(bodies) > 1
    assert all(len(body.encode()) <= MAX_BUNDLE_BYTES for body in bodies)
    assert sum(len(decode_bundle(body).tasks) for body in bodies) == 400


def test_a_packer_made_again_for_the_same_job_uses_new_bundle_ids() -> None:
    # A restarted scheduler packs the rest of a job anew; the claim table
    # must not take its bundles for ones already done.
    first, again = (
        decode_bundle(pack(BundlePacker("job", ["w.txt"], per_bundle=1), [(1, 1, "true")])[0])
        for _ in range(2)
    )
    assert first.bundle_id.startswith("job-")
    assert first.bundle_id != again.bundle_id
