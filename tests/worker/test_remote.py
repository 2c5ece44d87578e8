import os

import pytest

from worker.contracts import Default, Setting
from worker.remote import HEARTBEATS_PER_TIMEOUT, RemoteConfig, lease_seconds


@pytest.mark.parametrize(("visibility", "lease"), [(60, 54.0), (20, 18.0), (3, 2.0), (1, 2 / 3)])
def test_the_lease_ends_before_the_message_is_delivered_again(
    visibility: int, lease: float
) -> None:
    assert lease_seconds(visibility) == pytest.approx(lease)
    # ...and outlasts a heartbeat interval, so a live holder always renews in time.
    assert lease_seconds(visibility) > visibility / HEARTBEATS_PER_TIMEOUT


def test_settings_not_given_take_the_workers_defaults() -> None:
    environment = {
        Setting.REQUEST_QUEUE_URL: "http://localhost/requests",
        Setting.RESPONSE_QUEUE_URL: "http://localhost/responses",
        Setting.CLAIM_TABLE: "claims",
        Setting.REGION: "us-east-1",
        Setting.INSTANCE_ID: "i-1",  # else it asks the instance metadata
    }
    config = RemoteConfig.from_environment(environment)
    assert config.idle_timeout == Default.IDLE_TIMEOUT_SECONDS
    assert config.visibility_timeout == Default.VISIBILITY_TIMEOUT_SECONDS
    assert config.task_timeout == Default.TASK_TIMEOUT_SECONDS
    assert config.poll_seconds == Default.POLL_SECONDS
    assert config.concurrency == (os.cpu_count() or 1)  # Default.CONCURRENCY: one per CPU


def test_an_option_wins_over_the_environment_and_the_default() -> None:
    environment = {
        Setting.REQUEST_QUEUE_URL: "q1",
        Setting.RESPONSE_QUEUE_URL: "q2",
        Setting.CLAIM_TABLE: "t",
        Setting.REGION: "r",
        Setting.INSTANCE_ID: "i-1",
        Setting.IDLE_TIMEOUT: "30",
    }
    config = RemoteConfig.from_environment(environment, idle_timeout=5, concurrency=3)
    assert (config.idle_timeout, config.concurrency) == (5, 3)
    assert RemoteConfig.from_environment(environment).idle_timeout == 30
