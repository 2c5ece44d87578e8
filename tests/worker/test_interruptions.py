"""Notices from instance metadata, served by a stand-in over real HTTP."""

import pytest

from tests.conftest import fake_metadata
from worker.errors import WorkerConfigError
from worker.interruptions import InterruptionWatcher, Metadata, Notice


def test_no_notice_then_a_spot_notice_then_a_lifecycle_one() -> None:
    with fake_metadata() as fake:
        watcher = InterruptionWatcher(Metadata(fake.url), lambda _notice: None)
        assert watcher.look() is None
        fake.answer("autoscaling/target-lifecycle-state", "InService")
        assert watcher.look() is None
        fake.answer("autoscaling/target-lifecycle-state", "Terminated")
        assert watcher.look() == Notice.LIFECYCLE
        fake.answer("spot/instance-action", '{"action": "terminate", "time": "..."}')
        assert watcher.look() == Notice.SPOT


def test_an_unreachable_service_is_no_notice() -> None:
    watcher = InterruptionWatcher(Metadata("http://127.0.0.1:9/latest"), lambda _notice: None)
    assert watcher.look() is None


def test_the_instance_id_comes_from_metadata() -> None:
    with fake_metadata() as fake:
        fake.answer("instance-id", "i-0123")
        assert Metadata(fake.url).instance_id() == "i-0123"
    with pytest.raises(WorkerConfigError, match="did not answer"):
        Metadata("http://127.0.0.1:9/latest").instance_id()
