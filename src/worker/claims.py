"""The claim ledger: DynamoDB makes sure a bundle SQS delivers twice runs once.

A worker claims a bundle with a conditional write before running it, holds
it with a lease it extends while it runs (the heartbeat), records which of
its tasks have their results sent (``progress``), and marks it done after
the last results are sent. A claim whose lease expired, because its holder
died, may be taken over, and so may one its holder gave up (``release``) or
held under the same worker name before a restart; the heir runs only the
tasks without recorded progress. A done bundle is never run again.
"""

import time
from typing import Any, NamedTuple

from worker.errors import DuplicateBundleError

#: Seconds a done bundle's claim is kept, so a late duplicate is still recognised.
DONE_RETENTION_SECONDS = 7 * 24 * 3600

CLAIMED, DONE = "claimed", "done"


class Claim(NamedTuple):
    """A bundle this worker now holds, and what an earlier holder finished of it."""

    done: bytes  # a bitmap over the bundle's tasks, by index: bit set = result sent


def is_done(done: bytes, index: int) -> bool:
    return index // 8 < len(done) and bool(done[index // 8] >> (index % 8) & 1)


def progress_bitmap(indexes: "set[int] | list[int]", size: int) -> bytes:
    """The bitmap of ``indexes`` among ``size`` tasks."""
    bitmap = bytearray((size + 7) // 8)
    for index in indexes:
        bitmap[index // 8] |= 1 << (index % 8)
    return bytes(bitmap)


class ClaimLedger:
    """Claims in one DynamoDB table (key ``bundle``, TTL attribute ``expires_at``)."""

    def __init__(self, dynamodb: Any, table: str) -> None:
        self.dynamodb = dynamodb  # a boto3 DynamoDB client
        self.table = table

    def claim(self, bundle_id: str, worker: str, lease_seconds: float) -> Claim | None:
        """Take the bundle: its Claim if this worker now holds it, None if a live
        worker does. Raises ``DuplicateBundleError`` if the bundle is done already.

        A claim keeps the progress its earlier holders recorded.
        """
        now = time.time()
        try:
            answer = self.dynamodb.update_item(
                TableName=self.table,
                Key={"bundle": {"S": bundle_id}},
                UpdateExpression=(
                    "SET #state = :claimed, holder = :me, lease_until = :until, expires_at = :ttl"
                ),
                # New; or claimed by a worker whose lease ran out (it died, or gave
                # the bundle up), or by this worker before it was restarted.
                ConditionExpression=(
                    "attribute_not_exists(bundle) OR "
                    "(#state = :claimed AND (lease_until < :now OR holder = :me))"
                ),
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={
                    ":claimed": {"S": CLAIMED},
                    ":me": {"S": worker},
                    ":now": {"N": f"{now:.3f}"},
                    ":until": {"N": f"{now + lease_seconds:.3f}"},
                    ":ttl": {"N": str(int(now + DONE_RETENTION_SECONDS))},
                },
                ReturnValues="ALL_NEW",
            )
        except self.dynamodb.exceptions.ConditionalCheckFailedException as error:
            # Held by another, or done. (The claim may also have expired, a week
            # after it was made, in between: then it is gone.)
            item = self.dynamodb.get_item(
                TableName=self.table, Key={"bundle": {"S": bundle_id}}, ConsistentRead=True
            ).get("Item", {})
            if item.get("state", {}).get("S") == DONE:
                raise DuplicateBundleError(f"bundle {bundle_id} is done already") from error
            return None
        return Claim(answer["Attributes"].get("done", {}).get("B", b""))

    def progress(self, bundle_id: str, worker: str, done: bytes) -> bool:
        """Record which tasks have their results sent; False if the bundle was lost."""
        return self._update_held(bundle_id, worker, "SET done = :done", {":done": {"B": done}})

    def extend(self, bundle_id: str, worker: str, lease_seconds: float) -> bool:
        """Renew this worker's lease; False if it no longer holds the bundle."""
        return self._update_held(
            bundle_id,
            worker,
            "SET lease_until = :until",
            {":until": {"N": f"{time.time() + lease_seconds:.3f}"}},
        )

    def complete(self, bundle_id: str, worker: str) -> bool:
        """Mark the bundle done; False if this worker had lost it meanwhile."""
        return self._update_held(bundle_id, worker, "SET #state = :done", {":done": {"S": DONE}})

    def release(self, bundle_id: str, worker: str) -> bool:
        """Give the bundle up unfinished: its lease ends now, so another may take it."""
        return self._update_held(
            bundle_id, worker, "SET lease_until = :zero", {":zero": {"N": "0"}}
        )

    def _update_held(
        self, bundle_id: str, worker: str, update: str, values: dict[str, Any]
    ) -> bool:
        try:
            self.dynamodb.update_item(
                TableName=self.table,
                Key={"bundle": {"S": bundle_id}},
                UpdateExpression=update,
                ConditionExpression="holder = :me AND #state = :claimed",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={
                    ":me": {"S": worker},
                    ":claimed": {"S": CLAIMED},
                    **values,
                },
            )
        except self.dynamodb.exceptions.ConditionalCheckFailedException:
            return False
        return True
