"""The customer-managed KMS key the stack's data may be encrypted with (taskfleet:kmsKey)."""

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_kms as kms
from constructs import Construct

#: The setting's value that has the stack create a key of its own.
CREATE = "create"

#: What the worker's role may do with the key: SQS encrypts a message it is
#: sent with a data key made under it and decrypts it for its reader; DynamoDB
#: decrypts the table's key on the caller's behalf (and encrypts under it).
WORKER_KEY_ACTIONS = ("kms:Decrypt", "kms:GenerateDataKey", "kms:Encrypt", "kms:DescribeKey")


def encryption_key(scope: Construct, setting: str | None) -> kms.IKey | None:
    """None (each service's own key), a new key of the stack's (``create``),
    or the existing key with this ARN."""
    if setting is None:
        return None
    if setting == CREATE:
        return kms.Key(
            scope,
            "Key",
            description="taskfleet: encrypts the stack's queues and claim table",
            enable_key_rotation=True,
            # Nothing outlives the stack that would need it: cdk destroy
            # schedules its deletion (no charge while pending).
            removal_policy=RemovalPolicy.DESTROY,
            pending_window=Duration.days(7),
        )
    return kms.Key.from_key_arn(scope, "Key", setting)
