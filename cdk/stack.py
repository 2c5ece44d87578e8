"""The taskfleet stack: composes the constructs, holds the grants and the outputs."""

from pathlib import Path
from typing import Any

from aws_cdk import CfnOutput, CfnResource, Duration, Stack, Stage, Token
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct

from cdk.claims import ClaimTable
from cdk.fleet import TERMINATION_HOOK, WorkerFleet, read_image_file
from cdk.image import machine_image
from cdk.job_files import JobFilesBucket
from cdk.jobs import JobTable
from cdk.key import WORKER_KEY_ACTIONS, encryption_key
from cdk.nag import acknowledge
from cdk.queues import TaskQueues
from cdk.setup_script import setup_script_commands
from cdk.source import write_source_zip
from worker.contracts import JobFiles, JobItem, Output, Setting
from worker.record_items import RECORD_ATTRIBUTES
from worker.usage import Usage

REPOSITORY = Path(__file__).resolve().parent.parent


class TaskfleetStack(Stack):
    """Queues, claim table and worker fleet of one taskfleet deployment."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        instance_types: list[str],
        max_workers: int,
        slots_per_instance: int,
        idle_timeout: Duration,
        visibility_timeout: Duration,
        max_receive_count: int,
        job_retention_days: int,
        vpc_id: str | None,
        image: str,
        ami_id: str | None,
        spot: bool,
        kms_key: str | None = None,
        setup_script: str | None = None,
        **kwargs: object,
    ) -> None:
        """``image``: the official image to boot (cdk/image.py) unless ``ami_id``
        names a baked one. ``kms_key``: None to encrypt with each service's own
        key, ``create`` for a customer-managed key of the stack's own, or an
        existing key's ARN. ``setup_script``: shell run at each boot before the
        worker starts."""
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        key = encryption_key(self, kms_key)
        queues = TaskQueues(
            self,
            "Queues",
            visibility_timeout=visibility_timeout,
            max_receive_count=max_receive_count,
            encryption_key=key,
        )
        claims = ClaimTable(self, "Claims", encryption_key=key)
        jobs = JobTable(self, "Jobs", encryption_key=key)
        job_files = JobFilesBucket(
            self, "JobFiles", retention_days=job_retention_days, encryption_key=key
        )
        # Each fleet job's results come back on a queue of its own, made by the
        # client that submits the job: named this prefix and the job id.
        # A stack name has no "_" (CloudFormation allows letters, digits and "-"), so
        # no other stack's job queues start with this prefix: the grants below reach
        # this stack's alone.
        job_queue_prefix = f"{self.stack_name}_job_"
        vpc = (
            ec2.Vpc.from_lookup(self, "Vpc", vpc_id=vpc_id)
            if vpc_id
            else ec2.Vpc.from_lookup(self, "Vpc", is_default=True)
        )
        booted = (
            ec2.MachineImage.generic_linux({self.region: ami_id})
            if ami_id
            else machine_image(image, instance_types)
        )
        source_zip = write_source_zip(
            REPOSITORY,
            Path(Stage.of(self).outdir) / "taskfleet-source.zip",  # type: ignore[union-attr]
        )
        source = s3_assets.Asset(self, "Source", path=str(source_zip))
        # The worker's configuration. Its group's name is not here: the launch
        # template cannot name the group made from it; the instance reads it
        # from its own tags (instance metadata).
        settings = {
            Setting.SOURCE_URL: source.s3_object_url,
            Setting.REGION: self.region,
            Setting.REQUEST_QUEUE_URL: queues.requests.queue_url,
            Setting.RESPONSE_QUEUE_URL: queues.responses.queue_url,
            Setting.CLAIM_TABLE: claims.table.table_name,
            Setting.JOB_TABLE: jobs.table.table_name,
            Setting.JOB_QUEUE_PREFIX: job_queue_prefix,
            Setting.IDLE_TIMEOUT: str(int(idle_timeout.to_seconds())),
            Setting.VISIBILITY_TIMEOUT: str(int(visibility_timeout.to_seconds())),
            Setting.CONCURRENCY: str(slots_per_instance),
            Setting.LIFECYCLE_HOOK: TERMINATION_HOOK,
        }
        user_data = ec2.UserData.for_linux()
        user_data.add_commands(
            *(f"export {name}='{value}'" for name, value in settings.items()),
            *([setup_script_commands(setup_script)] if setup_script else []),
            read_image_file("bootstrap.sh"),
        )
        fleet = WorkerFleet(
            self,
            "Fleet",
            vpc=vpc,
            machine_image=booted,
            instance_types=instance_types,
            max_workers=max_workers,
            spot=spot,
            user_data=user_data,
            requests=queues.requests,
        )
        self._grant_worker(fleet, queues, claims, source, key)
        self._grant_job_queues(fleet.role, job_queue_prefix)
        self._grant_job_files(fleet.role, job_files)
        self._grant_job_table(fleet.role, jobs.table.table_arn)

        outputs = {
            Output.REQUEST_QUEUE_URL: queues.requests.queue_url,
            Output.RESPONSE_QUEUE_URL: queues.responses.queue_url,
            Output.DEAD_LETTER_QUEUE_URL: queues.dead_letters.queue_url,
            Output.CLAIM_TABLE_NAME: claims.table.table_name,
            Output.GROUP_NAME: fleet.group.auto_scaling_group_name,
            Output.REGION: self.region,
            Output.MAX_WORKERS: str(max_workers),
            Output.SLOTS_PER_INSTANCE: str(slots_per_instance),
            Output.IDLE_TIMEOUT_SECONDS: settings[Setting.IDLE_TIMEOUT],
            Output.VISIBILITY_TIMEOUT_SECONDS: settings[Setting.VISIBILITY_TIMEOUT],
            Output.INSTANCE_TYPES: ",".join(instance_types),
            Output.SPOT: "true" if spot else "false",
            Output.JOB_TABLE_NAME: jobs.table.table_name,
            Output.JOB_QUEUE_PREFIX: job_queue_prefix,
            Output.JOB_RETENTION_DAYS: str(job_retention_days),
            Output.JOB_FILES_BUCKET: job_files.bucket.bucket_name,
        }
        if key is not None:
            # The clients make the job queues: they encrypt them with this key too.
            outputs[Output.JOB_QUEUE_KEY] = key.key_arn
        for name, value in outputs.items():
            CfnOutput(self, name, value=value)

    def _grant_worker(
        self,
        fleet: WorkerFleet,
        queues: TaskQueues,
        claims: ClaimTable,
        source: s3_assets.Asset,
        key: kms.IKey | None,
    ) -> None:
        """The worker's grants: these queues, this table, its own group, the
        stack's key if it has one; nothing else."""
        role = fleet.role
        if key is not None:
            key.grant(role, *WORKER_KEY_ACTIONS)
        queues.requests.grant_consume_messages(role)
        # What grant_send_messages grants, less the key actions it adds with a key
        # (ReEncrypt*, GenerateDataKey*): the key's grant above is what the worker needs.
        sending = ("sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl")
        queues.requests.grant(role, *sending)  # a bundle given back goes as a fresh copy
        queues.responses.grant(role, *sending)
        claims.table.grant(role, "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem")
        # The source object alone, not the whole asset bucket.
        source.bucket.grant_read(role, source.s3_object_key)
        # A policy of its own: in the role's default policy, the group's ARN would
        # make the launch template wait on the group that waits on it.
        own_group = iam.Policy(
            self,
            "OwnGroupOnly",
            roles=[role],
            statements=[
                iam.PolicyStatement(
                    actions=[
                        "autoscaling:SetInstanceProtection",
                        # A failed setup script marks its instance unhealthy.
                        "autoscaling:SetInstanceHealth",
                        "autoscaling:TerminateInstanceInAutoScalingGroup",
                        "autoscaling:CompleteLifecycleAction",
                    ],
                    resources=[fleet.group.auto_scaling_group_arn],
                )
            ],
        )
        group_resource = fleet.group.node.default_child
        assert isinstance(group_resource, CfnResource)
        acknowledge(
            own_group,
            "An Auto Scaling group's ARN has its id as '*' until it exists; the statement "
            "still names this group alone (autoScalingGroupName/<this group>).",
            "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:autoscaling:"
            f"{self._as_nag_writes(self.region, 'AWS::Region')}:"
            f"{self._as_nag_writes(self.account, 'AWS::AccountId')}:autoScalingGroup:*:"
            f"autoScalingGroupName/<{self.get_logical_id(group_resource)}>]",
        )
        acknowledge(
            role,
            "CDK's read grant on the project source object: read-only actions "
            "(s3:GetObject*, s3:GetBucket*, s3:List*) on that one object of the asset bucket.",
            "AwsSolutions-IAM5[Action::s3:GetObject*]",
            "AwsSolutions-IAM5[Action::s3:GetBucket*]",
            "AwsSolutions-IAM5[Action::s3:List*]",
        )

    def _grant_job_table(self, role: iam.IRole, table_arn: str) -> None:
        """Workers read a job's state (cancelled?) and add their idle tail to it: the
        table's items, not its index, and of an update only the tail's figures.
        They keep the records they send as they send them: only in a job's record
        shards (``<job>#<k>``), never in a job's own partition, where its meta item
        is, and only a record item's attributes (no ``day``: nothing of the jobs
        index)."""

        def allow(action: str, conditions: dict[str, Any] | None = None) -> None:
            role.add_to_principal_policy(
                iam.PolicyStatement(actions=[action], resources=[table_arn], conditions=conditions)
            )

        tail = [JobItem.TAIL_PREFIX + figure for figure in Usage.__struct_fields__]
        allow("dynamodb:GetItem")
        allow(
            "dynamodb:UpdateItem",
            {
                "ForAllValues:StringEquals": {
                    "dynamodb:Attributes": [JobItem.PARTITION, JobItem.SORT, *tail]
                }
            },
        )
        allow(
            "dynamodb:PutItem",
            {
                "ForAllValues:StringLike": {
                    "dynamodb:LeadingKeys": [f"*{JobItem.SHARD_SEPARATOR}*"]
                },
                "ForAllValues:StringEquals": {"dynamodb:Attributes": list(RECORD_ATTRIBUTES)},
            },
        )

    def _grant_job_queues(self, role: iam.IRole, prefix: str) -> None:
        """Workers may find and send to the jobs' result queues, and to nothing
        else of that name space: queues named with the stack's job prefix."""
        queues = f"arn:{self.partition}:sqs:{self.region}:{self.account}:{prefix}*"
        policy = iam.Policy(
            self,
            "JobQueuesOnly",
            roles=[role],
            statements=[
                iam.PolicyStatement(
                    actions=["sqs:GetQueueUrl", "sqs:SendMessage"], resources=[queues]
                )
            ],
        )
        acknowledge(
            policy,
            "A job's result queue is made when the job is submitted: the statement names "
            "the stack's own job queues by their name prefix, and allows only finding "
            "them and sending to them.",
            "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:sqs:"
            f"{self._as_nag_writes(self.region, 'AWS::Region')}:"
            f"{self._as_nag_writes(self.account, 'AWS::AccountId')}:{prefix}*]",
        )

    def _grant_job_files(self, role: iam.IRole, job_files: JobFilesBucket) -> None:
        """Workers may read jobs' inputs and write their tasks' outputs, each under
        its own prefix; nothing else of the bucket (no listing, no deleting). The
        stack's key, if any, is granted with the worker's other grants."""
        bucket = job_files.bucket
        policy = iam.Policy(
            self,
            "JobFilesOnly",
            roles=[role],
            statements=[
                iam.PolicyStatement(
                    actions=["s3:GetObject"],
                    resources=[bucket.arn_for_objects(f"{JobFiles.INPUTS}*")],
                ),
                iam.PolicyStatement(
                    # An output too big for one request goes up in parts.
                    actions=["s3:PutObject", "s3:AbortMultipartUpload"],
                    resources=[bucket.arn_for_objects(f"{JobFiles.OUTPUTS}*")],
                ),
            ],
        )
        bucket_resource = bucket.node.default_child
        assert isinstance(bucket_resource, CfnResource)
        arn = f"<{self.get_logical_id(bucket_resource)}.Arn>"
        acknowledge(
            policy,
            "Jobs' files are named when the jobs run: the statements name the job-files "
            "bucket's input prefix (read only) and output prefix (write only).",
            f"AwsSolutions-IAM5[Resource::{arn}/{JobFiles.INPUTS}*]",
            f"AwsSolutions-IAM5[Resource::{arn}/{JobFiles.OUTPUTS}*]",
        )

    @staticmethod
    def _as_nag_writes(value: str, pseudo: str) -> str:
        """A value as cdk-nag writes it in a finding's id: itself, or <NAME> if unresolved."""
        return f"<{pseudo}>" if Token.is_unresolved(value) else value
