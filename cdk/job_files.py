"""The S3 bucket where fleet jobs' files live: their inputs and their tasks' outputs.

Like the job table, it belongs to the stack and keeps a job's files for the
retention the stack sets: a lifecycle rule expires every object that long
after it was written. Its accesses are logged to a bucket of their own. Both
outlive a ``cdk destroy`` (CloudFormation cannot delete a bucket that is not
empty); their lifecycle rules go on emptying them.
"""

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from cdk.nag import acknowledge, skip_checkov

#: Days the access logs are kept: long enough to look into a job after its
#: files expired, not for ever.
ACCESS_LOG_DAYS = 90

#: Where the access logs of the job-files bucket go in the log bucket.
ACCESS_LOG_PREFIX = "job-files/"

#: Days an upload left unfinished (a client that died mid-way) keeps its parts.
UNFINISHED_UPLOAD_DAYS = 1


class JobFilesBucket(Construct):
    """Encrypted (SSE-S3, or ``encryption_key``: a customer-managed KMS key),
    public access blocked, TLS only; objects expire after ``retention_days``."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        retention_days: int,
        encryption_key: kms.IKey | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        # S3 writes access logs with SSE-S3 only: the log bucket cannot take a KMS key.
        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[
                s3.LifecycleRule(
                    expiration=Duration.days(ACCESS_LOG_DAYS),
                    noncurrent_version_expiration=Duration.days(1),
                )
            ],
            removal_policy=RemovalPolicy.RETAIN,  # what was done outlives the stack
        )
        acknowledge(
            self.access_logs,
            "It is the access-log bucket of the job-files bucket: logging its own "
            "accesses would need a third bucket, and so on.",
            "AwsSolutions-S1",
        )
        skip_checkov(
            self.access_logs,
            "CKV_AWS_18",
            "It is the access-log bucket of the job-files bucket (see AwsSolutions-S1).",
        )
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            encryption=s3.BucketEncryption.S3_MANAGED
            if encryption_key is None
            else s3.BucketEncryption.KMS,
            encryption_key=encryption_key,
            # One data key a bucket, not a KMS request an object (with a key).
            bucket_key_enabled=encryption_key is not None,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[
                s3.LifecycleRule(
                    expiration=Duration.days(retention_days),
                    abort_incomplete_multipart_upload_after=Duration.days(UNFINISHED_UPLOAD_DAYS),
                )
            ],
            # CloudFormation deletes only empty buckets: a stack destroyed before
            # its jobs' files expired leaves the bucket, and they expire there.
            removal_policy=RemovalPolicy.RETAIN,
        )
        self._log_accesses()
        skip_checkov(
            self.bucket,
            "CKV_AWS_21",
            "Objects are written once (inputs under their content's hash, outputs under "
            "their task's id) and expire with their job: no version to keep or restore.",
        )

    def _log_accesses(self) -> None:
        """Log the bucket's accesses, delivered under a policy naming this bucket
        alone. (CDK's own way, ``server_access_logs_bucket``, grants the delivery
        through a legacy ACL unless a feature flag says otherwise.)"""
        resource = self.bucket.node.default_child
        assert isinstance(resource, s3.CfnBucket)
        resource.logging_configuration = s3.CfnBucket.LoggingConfigurationProperty(
            destination_bucket_name=self.access_logs.bucket_name,
            log_file_prefix=ACCESS_LOG_PREFIX,
        )
        self.access_logs.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal("logging.s3.amazonaws.com")],
                actions=["s3:PutObject"],
                resources=[self.access_logs.arn_for_objects(f"{ACCESS_LOG_PREFIX}*")],
                conditions={
                    "ArnLike": {"aws:SourceArn": self.bucket.bucket_arn},
                    "StringEquals": {"aws:SourceAccount": Stack.of(self).account},
                },
            )
        )
