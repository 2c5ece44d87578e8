import pytest

from worker.remote import HEARTBEATS_PER_TIMEOUT, lease_seconds


@pytest.mark.parametrize(("visibility", "lease"), [(60, 54.0), (20, 18.0), (3, 2.0), (1, 2 / 3)])
def test_the_lease_ends_before_the_message_is_delivered_again(
    visibility: int, lease: float
) -> None:
    assert lease_seconds(visibility) == pytest.approx(lease)
    # ...and outlasts a heartbeat interval, so a live holder always renews in time.
    assert lease_seconds(visibility) > visibility / HEARTBEATS_PER_TIMEOUT
