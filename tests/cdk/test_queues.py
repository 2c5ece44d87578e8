import aws_cdk as cdk
import pytest
from aws_cdk import aws_kms as kms
from aws_cdk.assertions import Match, Template
from cdk.queues import TaskQueues

from worker.contracts import LONG_POLL_SECONDS, MAX_MESSAGE_BYTES


def queues_template(*, with_key: bool = False, **settings: object) -> Template:
    stack = cdk.Stack(cdk.App())
    TaskQueues(
        stack,
        "Queues",
        visibility_timeout=settings.get("visibility_timeout", cdk.Duration.seconds(90)),  # type: ignore[arg-type]
        max_receive_count=settings.get("max_receive_count", 4),  # type: ignore[arg-type]
        encryption_key=kms.Key(stack, "Key") if with_key else None,
    )
    return Template.from_stack(stack)


def test_request_queue_redrives_to_the_dead_letter_queue() -> None:
    template = queues_template()
    template.has_resource_properties(
        "AWS::SQS::Queue",
        {
            "VisibilityTimeout": 90,
            "RedrivePolicy": {
                "deadLetterTargetArn": Match.any_value(),
                "maxReceiveCount": 4,
            },
        },
    )


def test_every_queue_long_polls_takes_1_mib_and_is_encrypted() -> None:
    template = queues_template()
    template.resource_count_is("AWS::SQS::Queue", 3)
    queues = template.find_resources(
        "AWS::SQS::Queue",
        {
            "Properties": {
                "ReceiveMessageWaitTimeSeconds": LONG_POLL_SECONDS,
                "MaximumMessageSize": MAX_MESSAGE_BYTES,
                "SqsManagedSseEnabled": True,
            }
        },
    )
    assert len(queues) == 3
    assert MAX_MESSAGE_BYTES == 1024 * 1024
    assert LONG_POLL_SECONDS == 20


def test_queues_refuse_unencrypted_transport() -> None:
    template = queues_template()
    template.resource_count_is("AWS::SQS::QueuePolicy", 3)
    template.has_resource_properties(
        "AWS::SQS::QueuePolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Deny",
                                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            }
                        )
                    ]
                )
            }
        },
    )


def test_max_receive_count_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_receive_count"):
        queues_template(max_receive_count=0)


def test_with_a_key_every_queue_is_encrypted_with_it() -> None:
    template = queues_template(with_key=True)
    (key,) = template.find_resources("AWS::KMS::Key")
    queues = template.find_resources(
        "AWS::SQS::Queue",
        {
            "Properties": {
                "KmsMasterKeyId": {"Fn::GetAtt": [key, "Arn"]},
                "SqsManagedSseEnabled": Match.absent(),
            }
        },
    )
    assert len(queues) == 3
