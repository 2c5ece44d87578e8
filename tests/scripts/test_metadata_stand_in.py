"""The instance metadata stand-in: one folder of answers per instance, over real HTTP."""

import json
from pathlib import Path

import pytest

from scripts.metadata_stand_in import MetadataStandIn, spot_notice
from worker.interruptions import InterruptionWatcher, Metadata, Notice


def test_each_instance_sees_its_own_answers(tmp_path: Path) -> None:
    with MetadataStandIn(tmp_path) as stand_in:
        for instance in ("i-1", "i-2"):
            stand_in.answer("instance-id", instance, instance)
        stand_in.answer("spot/instance-action", spot_notice(), "i-2")
        first, second = (Metadata(stand_in.url_for(i)) for i in ("i-1", "i-2"))
        assert (first.instance_id(), second.instance_id()) == ("i-1", "i-2")
        assert InterruptionWatcher(first, print).look() is None
        assert InterruptionWatcher(second, print).look() == Notice.SPOT
        # Another process gives a notice by writing the file.
        (tmp_path / "i-1" / "autoscaling").mkdir()
        (tmp_path / "i-1" / "autoscaling" / "target-lifecycle-state").write_text("Terminated")
        assert InterruptionWatcher(first, print).look() == Notice.LIFECYCLE
    assert json.loads(spot_notice())["action"] == "terminate"


@pytest.mark.parametrize(
    "path",
    [
        "/i-1/latest/meta-data/../../secret",
        "/i-1/latest/meta-data/a//b",
        "/../latest/meta-data/instance-id",
        "/i-1/latest/user-data",
        "/i-1/latest/meta-data/a%2F..",
    ],
)
def test_nothing_outside_an_instances_answers_is_served(tmp_path: Path, path: str) -> None:
    (tmp_path / "secret").write_text("no")
    stand_in = MetadataStandIn(tmp_path / "answers")
    stand_in.answer("instance-id", "i-1", "i-1")
    assert stand_in.lookup("/i-1/latest/meta-data/instance-id") == "i-1"
    assert stand_in.lookup(path) is None
    with pytest.raises(ValueError, match="not a metadata path"):
        stand_in.answer("../secret", "x", "i-1")
    stand_in.server.server_close()
