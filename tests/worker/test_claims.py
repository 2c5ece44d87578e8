"""The claim contract, against moto's DynamoDB in process (fast; the e2e test uses a server)."""

import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from worker.claims import DONE_RETENTION_SECONDS, Claim, ClaimLedger, is_done, progress_bitmap
from worker.errors import DuplicateBundleError


@pytest.fixture
def ledger(monkeypatch: pytest.MonkeyPatch) -> Iterator[ClaimLedger]:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        client: Any = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(
            TableName="claims",
            KeySchema=[{"AttributeName": "bundle", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "bundle", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        yield ClaimLedger(client, "claims")


def test_a_bundle_is_claimed_once(ledger: ClaimLedger) -> None:
    assert ledger.claim("b1", "i-a", lease_seconds=60)
    assert not ledger.claim("b1", "i-b", lease_seconds=60)  # held by a live worker
    assert ledger.extend("b1", "i-a", lease_seconds=60)
    assert not ledger.extend("b1", "i-b", lease_seconds=60)


def test_an_expired_lease_may_be_taken_over(ledger: ClaimLedger) -> None:
    assert ledger.claim("b1", "i-a", lease_seconds=0.2)
    time.sleep(0.3)
    assert ledger.claim("b1", "i-b", lease_seconds=60)  # i-a died
    assert not ledger.extend("b1", "i-a", lease_seconds=60)  # the zombie learns it lost
    assert not ledger.complete("b1", "i-a")
    assert ledger.complete("b1", "i-b")


def test_a_done_bundle_is_never_run_again(ledger: ClaimLedger) -> None:
    assert ledger.claim("b1", "i-a", lease_seconds=60)
    assert ledger.complete("b1", "i-a")
    with pytest.raises(DuplicateBundleError, match="b1"):
        ledger.claim("b1", "i-b", lease_seconds=60)


def test_a_released_bundle_is_free_at_once(ledger: ClaimLedger) -> None:
    assert ledger.claim("b1", "i-a", lease_seconds=600)
    assert ledger.release("b1", "i-a")
    assert ledger.claim("b1", "i-b", lease_seconds=60)


def test_a_claim_is_kept_a_week_past_its_end_so_a_late_duplicate_is_known(
    ledger: ClaimLedger,
) -> None:
    began = time.time()
    assert ledger.claim("b1", "i-a", lease_seconds=60)
    item = ledger.dynamodb.get_item(TableName="claims", Key={"bundle": {"S": "b1"}})["Item"]
    expires = int(item["expires_at"]["N"])
    assert began + DONE_RETENTION_SECONDS - 1 <= expires <= time.time() + DONE_RETENTION_SECONDS
    assert (item["state"]["S"], item["holder"]["S"]) == ("claimed", "i-a")
    assert began + 59 <= float(item["lease_until"]["N"]) <= time.time() + 60


def test_an_heir_learns_what_its_predecessor_had_sent(ledger: ClaimLedger) -> None:
    first = ledger.claim("b1", "i-a", lease_seconds=600)
    assert first == Claim(b"")  # nothing sent yet
    sent = progress_bitmap({0, 2, 9}, 10)
    assert ledger.progress("b1", "i-a", sent)
    assert ledger.release("b1", "i-a")
    heir = ledger.claim("b1", "i-b", lease_seconds=60)
    assert heir == Claim(sent)
    assert [is_done(sent, index) for index in range(10)] == [
        index in (0, 2, 9) for index in range(10)
    ]
    assert not ledger.progress("b1", "i-a", sent)  # the first holder lost it


def test_an_extended_lease_keeps_others_out(ledger: ClaimLedger) -> None:
    assert ledger.claim("b1", "i-a", lease_seconds=0.2)
    assert ledger.extend("b1", "i-a", lease_seconds=60)
    time.sleep(0.3)  # past the first lease, well within the second
    assert not ledger.claim("b1", "i-b", lease_seconds=60)


def test_progress_bitmaps_at_a_bytes_edges() -> None:
    assert progress_bitmap(set(range(8)), 8) == b"\xff"  # eight tasks, one byte
    assert progress_bitmap({8}, 9) == b"\x00\x01"
    assert [is_done(b"\x00\x01", index) for index in (0, 7, 8)] == [False, False, True]
    assert not is_done(b"\xff", 8)  # past the bitmap: nothing recorded


def test_a_claim_gone_between_a_refused_write_and_the_read_is_held_by_none() -> None:
    # The write is refused (the claim is held, or done); the read after it finds no
    # claim: it expired in between. Neither done nor this worker's.
    client: Any = boto3.client(
        "dynamodb",
        region_name="us-east-1",
        aws_access_key_id="stub",
        aws_secret_access_key="stub",
    )
    with Stubber(client) as stub:
        stub.add_client_error("update_item", "ConditionalCheckFailedException")
        stub.add_response(
            "get_item",
            {},
            {"TableName": "claims", "Key": {"bundle": {"S": "b1"}}, "ConsistentRead": True},
        )
        assert ClaimLedger(client, "claims").claim("b1", "i-a", lease_seconds=60) is None
        stub.assert_no_pending_responses()
