"""The whole stack as `cdk deploy` would make it (defaults, cdk-nag checked)."""

import json
import re
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import aws_sqs as sqs
from aws_cdk.assertions import Match, Template
from cdk.app import SettingError, build

from tests.cdk.conftest import ACCOUNT, REGION, make_app
from worker.contracts import BOOTSTRAP_SETTINGS, JobFiles, Output

#: Every output the scheduler, the scripts and the tests read.
OUTPUTS = [value for name, value in vars(Output).items() if name.isupper()]

#: Outputs only a stack with a customer-managed key has (tested with the key).
KEY_OUTPUTS = {Output.JOB_QUEUE_KEY}


def test_outputs_name_everything_the_scheduler_and_workers_need(
    synthesized: tuple[Template, Path],
) -> None:
    template, _ = synthesized
    for name in OUTPUTS:
        if name not in KEY_OUTPUTS:
            template.has_output(name, {"Value": Match.any_value()})
    assert not template.find_outputs(Output.JOB_QUEUE_KEY)  # no key: SQS's own


def test_no_vpc_or_nat_gateway_is_created(synthesized: tuple[Template, Path]) -> None:
    template, _ = synthesized
    template.resource_count_is("AWS::EC2::VPC", 0)
    template.resource_count_is("AWS::EC2::NatGateway", 0)


def statements(template: Template) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for policy in template.find_resources("AWS::IAM::Policy").values():
        found.extend(policy["Properties"]["PolicyDocument"]["Statement"])
    return found


def test_worker_role_is_least_privilege(synthesized: tuple[Template, Path]) -> None:
    template, _ = synthesized
    granted = statements(template)
    actions = {
        a for s in granted for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    assert actions == {
        "sqs:ReceiveMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:GetQueueUrl",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:SendMessage",
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "s3:GetObject*",
        "s3:GetBucket*",
        "s3:List*",
        "autoscaling:SetInstanceProtection",
        "autoscaling:SetInstanceHealth",
        "autoscaling:TerminateInstanceInAutoScalingGroup",
        "autoscaling:CompleteLifecycleAction",
        "s3:GetObject",
        "s3:PutObject",
        "s3:AbortMultipartUpload",
    }
    for statement in granted:
        assert statement["Resource"] != "*", statement  # every grant names its resources
    (source,) = [s for s in granted if "s3:GetObject*" in s["Action"]]
    objects = [json.dumps(r) for r in source["Resource"] if "/" in json.dumps(r)]
    assert len(objects) == 1  # the source zip alone, not the asset bucket's every object
    assert objects[0].endswith('.zip"]]}'), objects
    own_group = [s for s in granted if "autoscaling:SetInstanceProtection" in s["Action"]]
    assert len(own_group) == 1
    assert "autoscaling:SetInstanceHealth" in own_group[0]["Action"]  # its own group's alone
    assert "autoScalingGroupName/" in json.dumps(own_group[0]["Resource"])
    # The jobs' result queues: found and sent to by their name prefix, nothing more.
    (job_queues,) = [s for s in granted if s["Action"] == ["sqs:GetQueueUrl", "sqs:SendMessage"]]
    assert json.dumps(job_queues["Resource"]).endswith(':Taskfleet_job_*"]]}'), job_queues
    (job_states,) = [s for s in granted if s["Action"] == "dynamodb:GetItem"]
    assert "/index/" not in json.dumps(job_states["Resource"])
    # The records a worker sends: put in a job's record shards only, never by a meta item.
    (records,) = [s for s in granted if s["Action"] == "dynamodb:PutItem"]
    assert records["Resource"] == job_states["Resource"]
    assert records["Condition"] == {
        "ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["*#*"]},
        "ForAllValues:StringEquals": {
            "dynamodb:Attributes": ["job", "item", "expires_at", "records", "usage"]
        },
    }
    template.resource_count_is("AWS::IAM::ManagedPolicy", 0)
    template.has_resource_properties("AWS::IAM::Role", {"ManagedPolicyArns": Match.absent()})


def test_workers_read_job_inputs_and_write_job_outputs_and_nothing_else_of_the_bucket(
    synthesized: tuple[Template, Path],
) -> None:
    template, _ = synthesized
    (bucket,) = template.find_resources(
        "AWS::S3::Bucket", {"Properties": {"LoggingConfiguration": Match.any_value()}}
    )
    under = [s for s in statements(template) if bucket in json.dumps(s["Resource"])]
    assert sorted((json.dumps(s["Action"]), json.dumps(s["Resource"])) for s in under) == sorted(
        [
            (
                json.dumps(actions),
                json.dumps({"Fn::Join": ["", [{"Fn::GetAtt": [bucket, "Arn"]}, f"/{prefix}*"]]}),
            )
            for actions, prefix in (
                ("s3:GetObject", JobFiles.INPUTS),
                (["s3:PutObject", "s3:AbortMultipartUpload"], JobFiles.OUTPUTS),
            )
        ]
    )
    template.has_output(Output.JOB_FILES_BUCKET, {"Value": {"Ref": bucket}})


#: What the worker's role may do with the stack's customer-managed key.
KEY_ACTIONS = {"kms:Decrypt", "kms:GenerateDataKey", "kms:Encrypt", "kms:DescribeKey"}

KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def test_by_default_no_key_is_made_or_granted(synthesized: tuple[Template, Path]) -> None:
    template, _ = synthesized
    template.resource_count_is("AWS::KMS::Key", 0)
    assert not [s for s in statements(template) if "kms:" in json.dumps(s["Action"])]


def test_a_key_of_the_stacks_own_encrypts_everything_and_the_worker_may_use_it(
    synthesized_with_key: tuple[Template, Path],
) -> None:
    template, _ = synthesized_with_key
    keys = template.find_resources("AWS::KMS::Key", {"Properties": {"EnableKeyRotation": True}})
    (key,) = keys
    assert keys[key]["DeletionPolicy"] == "Delete"  # cdk destroy schedules its deletion
    arn = {"Fn::GetAtt": [key, "Arn"]}
    assert (
        len(template.find_resources("AWS::SQS::Queue", {"Properties": {"KmsMasterKeyId": arn}}))
        == 3
    )
    template.has_resource_properties(
        "AWS::DynamoDB::Table", {"SSESpecification": Match.object_like({"KMSMasterKeyId": arn})}
    )
    granted = [s for s in statements(template) if "kms:" in json.dumps(s["Action"])]
    actions = {
        a for s in granted for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    assert actions == KEY_ACTIONS  # no ReEncrypt*, no GenerateDataKey*
    assert all(s["Resource"] == arn for s in granted)


def test_an_existing_key_is_used_by_its_arn(tmp_path: Path) -> None:
    app = make_app(tmp_path, **{"taskfleet:kmsKey": KEY_ARN})
    template = Template.from_stack(build(app, account=ACCOUNT, region=REGION))
    template.resource_count_is("AWS::KMS::Key", 0)
    assert (
        len(template.find_resources("AWS::SQS::Queue", {"Properties": {"KmsMasterKeyId": KEY_ARN}}))
        == 3
    )
    template.has_resource_properties(
        "AWS::DynamoDB::Table", {"SSESpecification": Match.object_like({"KMSMasterKeyId": KEY_ARN})}
    )
    granted = [s for s in statements(template) if "kms:" in json.dumps(s["Action"])]
    assert granted
    assert all(s["Resource"] == KEY_ARN for s in granted)
    # The clients make the job queues: the stack tells them the key.
    template.has_output(Output.JOB_QUEUE_KEY, {"Value": KEY_ARN})


def test_user_data_configures_the_worker(synthesized: tuple[Template, Path]) -> None:
    template, _ = synthesized
    (launch_template,) = template.find_resources("AWS::EC2::LaunchTemplate").values()
    user_data = json.dumps(launch_template["Properties"]["LaunchTemplateData"]["UserData"])
    exported = re.findall(r"export (TASKFLEET_\w+)=", user_data)
    assert sorted(exported) == sorted(BOOTSTRAP_SETTINGS)  # what bootstrap.sh requires
    assert "systemctl enable taskfleet-worker.service" in user_data
    assert "systemctl start taskfleet-worker.service" in user_data


def test_settings_come_from_context(tmp_path: Path) -> None:
    app = make_app(
        tmp_path,
        **{
            "taskfleet:stackName": "Fleet2",
            "taskfleet:maxWorkers": "40",
            "taskfleet:visibilityTimeoutSeconds": 120,
            "taskfleet:maxReceiveCount": 2,
            "taskfleet:spot": "false",
            "taskfleet:instanceTypes": "c7i.large",
            "taskfleet:amiId": "ami-0123456789abcdef0",
        },
    )
    stack = build(app, account=ACCOUNT, region=REGION)
    assert stack.stack_name == "Fleet2"
    template = Template.from_stack(stack)
    template.has_resource_properties(
        "AWS::AutoScaling::AutoScalingGroup",
        {
            "MaxSize": "40",
            "MixedInstancesPolicy": Match.object_like(
                {
                    "InstancesDistribution": Match.object_like(
                        {"OnDemandPercentageAboveBaseCapacity": 100}
                    ),
                    "LaunchTemplate": Match.object_like(
                        {"Overrides": [{"InstanceType": "c7i.large"}]}
                    ),
                }
            ),
        },
    )
    template.has_resource_properties(
        "AWS::SQS::Queue",
        {"VisibilityTimeout": 120, "RedrivePolicy": Match.object_like({"maxReceiveCount": 2})},
    )
    template.has_resource_properties(
        "AWS::EC2::LaunchTemplate",
        {"LaunchTemplateData": Match.object_like({"ImageId": "ami-0123456789abcdef0"})},
    )


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("taskfleet:maxWorkers", "0", "whole number >= 1"),
        ("taskfleet:maxWorkers", "many", "invalid literal"),
        ("taskfleet:spot", "maybe", "true or false"),
        ("taskfleet:instanceTypes", " , ", "at least one"),
        ("taskfleet:instanceTypes", "t3.small,t4g.small", "all x86_64 or all arm64"),
        ("taskfleet:image", "ubuntu", "one of debian, al2023"),
        ("taskfleet:setupScript", "/nonexistent/setup.sh", "no such file"),
        ("taskfleet:kmsKey", "alias/taskfleet", "KMS key ARN"),
        ("taskfleet:kmsKey", "yes", "KMS key ARN"),
        ("taskfleet:kmsKey", KEY_ARN.replace("us-east-1", "eu-west-1"), "key is in eu-west-1"),
    ],
)
def test_bad_settings_name_the_key(tmp_path: Path, key: str, value: str, reason: str) -> None:
    with pytest.raises(SettingError, match=f"context {key}=.*{reason}"):
        build(make_app(tmp_path, **{key: value}), account=ACCOUNT, region=REGION)


def test_cdk_nag_fails_synthesis_on_an_unjustified_finding(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    stack = build(app, account=ACCOUNT, region=REGION)
    sqs.Queue(stack, "Unencrypted", encryption=sqs.QueueEncryption.UNENCRYPTED)
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    report = (tmp_path / "validation-report.json").read_text()
    assert "AwsSolutions-SQS2" in report  # server-side encryption
    assert "AwsSolutions-SQS4" in report  # SSL-only access
