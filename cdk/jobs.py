"""The DynamoDB table where fleet jobs live: their state, settings and records.

A job on the fleet belongs to the stack, not to the client that submitted it:
any client with the stack's credentials reads its state and records here for
the retention the stack sets (DynamoDB's TTL deletes them after it).
"""

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_kms as kms
from constructs import Construct

from worker.contracts import JobItem


class JobTable(Construct):
    """One partition per job: a ``meta`` item and its record items, and an index
    of recent jobs by submission day. Encrypted at rest with the AWS-managed key,
    or with ``encryption_key`` (a customer-managed KMS key) when one is given."""

    def __init__(
        self, scope: Construct, construct_id: str, *, encryption_key: kms.IKey | None = None
    ) -> None:
        super().__init__(scope, construct_id)
        self.table = dynamodb.Table(
            self,
            "Table",
            partition_key=dynamodb.Attribute(
                name=JobItem.PARTITION, type=dynamodb.AttributeType.STRING
            ),
            sort_key=dynamodb.Attribute(name=JobItem.SORT, type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            time_to_live_attribute=JobItem.TTL,
            encryption=dynamodb.TableEncryption.AWS_MANAGED
            if encryption_key is None
            else dynamodb.TableEncryption.CUSTOMER_MANAGED,
            encryption_key=encryption_key,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            # Jobs expire after the retention anyway; a destroy takes them with it.
            removal_policy=RemovalPolicy.DESTROY,
        )
        # Only meta items carry the day: a sparse index of jobs, not of records.
        self.table.add_global_secondary_index(
            index_name=JobItem.DAY_INDEX,
            partition_key=dynamodb.Attribute(name=JobItem.DAY, type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="submitted_at", type=dynamodb.AttributeType.NUMBER),
            projection_type=dynamodb.ProjectionType.ALL,
        )
