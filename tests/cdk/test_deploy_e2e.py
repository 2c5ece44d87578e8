"""End to end: a real moto_server, the real CDK CLI: bootstrap, deploy, destroy."""

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from scripts import local_aws

pytestmark = pytest.mark.e2e


@pytest.fixture
def emulator_env(tmp_path: Path) -> Iterator[Path]:
    """A state folder for local_aws; the emulator is always stopped afterwards."""
    state = tmp_path / "local-aws"
    yield state
    if (state / "emulator.json").exists():
        local_aws.stop(state)


def client(service: str, port: int) -> Any:
    environment = local_aws.environment(port)
    return boto3.client(
        service,
        endpoint_url=environment["AWS_ENDPOINT_URL"],
        region_name=local_aws.REGION,
        aws_access_key_id=environment["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=environment["AWS_SECRET_ACCESS_KEY"],
    )


def test_deploy_and_destroy_on_the_emulator(emulator_env: Path) -> None:
    if not local_aws.CDK_CLI.exists() and not os.environ.get("CI"):
        pytest.skip("the CDK CLI is not installed (npm ci)")
    outputs = local_aws.up(emulator_env, port=None)
    port = local_aws.emulator_of(emulator_env)["port"]
    sqs, dynamodb, autoscaling, ec2, s3 = (
        client(name, port) for name in ("sqs", "dynamodb", "autoscaling", "ec2", "s3")
    )

    requests = sqs.get_queue_attributes(
        QueueUrl=outputs["RequestQueueUrl"], AttributeNames=["All"]
    )["Attributes"]
    assert requests["VisibilityTimeout"] == outputs["VisibilityTimeoutSeconds"] == "60"
    assert requests["ReceiveMessageWaitTimeSeconds"] == "20"
    assert requests["MaximumMessageSize"] == "1048576"
    assert '"maxReceiveCount": 5' in requests["RedrivePolicy"]
    dead_letters = sqs.get_queue_attributes(
        QueueUrl=outputs["DeadLetterQueueUrl"], AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    assert dead_letters in requests["RedrivePolicy"]
    responses = sqs.get_queue_attributes(
        QueueUrl=outputs["ResponseQueueUrl"], AttributeNames=["All"]
    )["Attributes"]
    assert responses["ReceiveMessageWaitTimeSeconds"] == "20"
    assert responses["MaximumMessageSize"] == "1048576"

    table = dynamodb.describe_table(TableName=outputs["ClaimTableName"])["Table"]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert table["KeySchema"] == [{"AttributeName": "bundle", "KeyType": "HASH"}]

    (group,) = autoscaling.describe_auto_scaling_groups(
        AutoScalingGroupNames=[outputs["AutoScalingGroupName"]]
    )["AutoScalingGroups"]
    assert (group["MinSize"], group["MaxSize"]) == (0, int(outputs["MaxWorkers"]))
    template_id = group["MixedInstancesPolicy"]["LaunchTemplate"]["LaunchTemplateSpecification"][
        "LaunchTemplateId"
    ]
    (version,) = ec2.describe_launch_template_versions(LaunchTemplateId=template_id)[
        "LaunchTemplateVersions"
    ]
    assert version["LaunchTemplateData"]["MetadataOptions"]["HttpTokens"] == "required"

    files = outputs["JobFilesBucket"]
    encryption = s3.get_bucket_encryption(Bucket=files)["ServerSideEncryptionConfiguration"]
    assert encryption["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == (
        "AES256"
    )
    # The emulator's CloudFormation applies none of the bucket's public access block,
    # lifecycle rule, policy, ownership or logging (measured): tests/cdk/test_job_files.py
    # asserts them in the template.

    local_aws.destroy(emulator_env)
    # Kept (with their lifecycle rules, on AWS): CloudFormation deletes only empty buckets.
    kept = {b["Name"] for b in s3.list_buckets()["Buckets"]}
    assert files in kept
    assert any("accesslogs" in name for name in kept)
    assert not sqs.list_queues().get("QueueUrls")
    assert dynamodb.list_tables()["TableNames"] == []
    assert autoscaling.describe_auto_scaling_groups()["AutoScalingGroups"] == []
    assert not (Path.cwd() / "cdk.context.json").exists()  # the emulator's lookups stay out
