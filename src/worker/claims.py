"""The claim ledger: DynamoDB makes sure a bundle SQS delivers twice runs once.

A worker claims a bundle with a conditional write before running it, holds
it with a lease it extends while it runs (the heartbeat), and marks it done
after its results are sent. A claim whose lease expired, because its holder
died, may be taken over; a done bundle is never run again.
"""

import time
from typing import Any

from botocore.exceptions import ClientError

from worker.errors import DuplicateBundleError

#: Seconds a done bundle's claim is kept, so a late duplicate is still recognised.
DONE_RETENTION_SECONDS = 7 * 24 * 3600

CLAIMED, DONE = "claimed", "done"


def _conditional_failed(error: ClientError) -> bool:
    code: str = error.response.get("Error", {}).get("Code", "")
    return code == "ConditionalCheckFailedException"


class ClaimLedger:
    """Claims in one DynamoDB table (key ``bundle``, TTL attribute ``expires_at``)."""

    def __init__(self, dynamodb: Any, table: str) -> None:
        self.dynamodb = dynamodb  # a boto3 DynamoDB client
        self.table = table

    def claim(self, bundle_id: str, worker: str, lease_seconds: float) -> bool:
        """Take the bundle: True if this worker now holds it, False if a live worker does.

        Raises ``DuplicateBundleError`` if the bundle is done already.
        """
        now = time.time()
        try:
            self.dynamodb.put_item(
                TableName=self.table,
                Item={
                    "bundle": {"S": bundle_id},
                    "state": {"S": CLAIMED},
                    "holder": {"S": worker},
                    "lease_until": {"N": f"{now + lease_seconds:.3f}"},
                    "expires_at": {"N": str(int(now + DONE_RETENTION_SECONDS))},
                },
                # New, or claimed by a worker whose lease ran out (it died).
                ConditionExpression=(
                    "attribute_not_exists(bundle) OR (#state = :claimed AND lease_until < :now)"
                ),
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={
                    ":claimed": {"S": CLAIMED},
                    ":now": {"N": f"{now:.3f}"},
                },
            )
        except ClientError as error:
            if not _conditional_failed(error):
                raise
            item = self.dynamodb.get_item(
                TableName=self.table, Key={"bundle": {"S": bundle_id}}, ConsistentRead=True
            ).get("Item", {})
            if item.get("state", {}).get("S") == DONE:
                raise DuplicateBundleError(f"bundle {bundle_id} is done already") from error
            return False
        return True

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
        except ClientError as error:
            if _conditional_failed(error):
                return False
            raise
        return True
