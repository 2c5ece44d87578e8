"""The DynamoDB table where workers claim bundles, so a bundle SQS delivers twice runs once."""

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_kms as kms
from constructs import Construct

#: Partition key: the bundle id.
KEY_ATTRIBUTE = "bundle"

#: Epoch seconds after which DynamoDB may delete a claim (its TTL attribute).
TTL_ATTRIBUTE = "expires_at"


class ClaimTable(Construct):
    """One item per bundle: who holds it, until when (the lease), and whether it is done.

    Encrypted at rest with the AWS-managed key, or with ``encryption_key`` (a
    customer-managed KMS key) when one is given.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, encryption_key: kms.IKey | None = None
    ) -> None:
        super().__init__(scope, construct_id)
        self.table = dynamodb.Table(
            self,
            "Table",
            partition_key=dynamodb.Attribute(
                name=KEY_ATTRIBUTE, type=dynamodb.AttributeType.STRING
            ),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            time_to_live_attribute=TTL_ATTRIBUTE,
            encryption=dynamodb.TableEncryption.AWS_MANAGED
            if encryption_key is None
            else dynamodb.TableEncryption.CUSTOMER_MANAGED,
            encryption_key=encryption_key,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            # Claims are short-lived bookkeeping: nothing to keep after a destroy.
            removal_policy=RemovalPolicy.DESTROY,
        )
