"""The CDK app: reads the settings from context and builds the stack.

cdk deploy                                  # the defaults below
cdk deploy -c taskfleet:maxWorkers=50 -c taskfleet:spot=false
"""

import os
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from cdk.image import DEBIAN, image_name, one_cpu
from cdk.key import CREATE
from cdk.setup_script import read_setup_script
from cdk.stack import TaskfleetStack

#: Every setting, its context key, and its default.
DEFAULTS: dict[str, Any] = {
    "taskfleet:stackName": "Taskfleet",
    "taskfleet:instanceTypes": "t3.small,t3a.small",
    "taskfleet:maxWorkers": 16,
    # Tasks an instance runs at once: one per vCPU of the default types (2).
    "taskfleet:slotsPerInstance": 2,
    "taskfleet:idleTimeoutSeconds": 300,
    "taskfleet:visibilityTimeoutSeconds": 60,
    "taskfleet:maxReceiveCount": 5,
    # How long a fleet job's state and records are kept (SQS keeps a message 14 days).
    "taskfleet:jobRetentionDays": 7,
    "taskfleet:vpcId": "",  # empty: the account's default VPC
    # The latest official image, installing taskfleet at boot: "debian" (12,
    # the userland the boot's test runs in) or "al2023" (Amazon Linux 2023).
    "taskfleet:image": DEBIAN,
    "taskfleet:amiId": "",  # a baked image instead (image/worker.pkr.hcl)
    # A shell script (a file) each instance runs at boot before its worker starts.
    "taskfleet:setupScript": "",
    "taskfleet:spot": True,
    # empty: SQS-managed and AWS-managed encryption; "create": a key of the
    # stack's own; or an existing key's ARN (docs/security.md: what it costs)
    "taskfleet:kmsKey": "",
}

T = TypeVar("T")


class SettingError(ValueError):
    """A context setting that cannot be used."""


def setting(context: Mapping[str, Any], key: str, parse: Callable[[Any], T]) -> T:
    """One setting from the context, or its default; SettingError names a bad one."""
    value = context.get(key)
    if value is None:
        value = DEFAULTS[key]
    try:
        return parse(value)
    except (TypeError, ValueError) as error:
        raise SettingError(f"context {key}={value!r}: {error}") from error


def positive_int(value: Any) -> int:
    number = int(value)
    if number < 1:
        raise ValueError("must be a whole number >= 1")
    return number


def retention_days(value: Any) -> int:
    days = positive_int(value)
    if days > 14:
        raise ValueError("must be 1 to 14 days (a job's results wait on SQS, which keeps 14)")
    return days


def flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "1", "yes"):
        return True
    if str(value).lower() in ("false", "0", "no"):
        return False
    raise ValueError("must be true or false")


def names(value: Any) -> list[str]:
    items = value if isinstance(value, list) else str(value).split(",")
    parsed = [str(item).strip() for item in items if str(item).strip()]
    if not parsed:
        raise ValueError("needs at least one instance type")
    return parsed


#: A KMS key's ARN (not an alias's: a grant on an alias does not reach its key).
KEY_ARN = re.compile(r"arn:aws[a-z-]*:kms:(?P<region>[a-z0-9-]+):\d{12}:key/[A-Za-z0-9-]+")


def kms_key(value: Any) -> str | None:
    """None, "create", or a key's ARN."""
    text = str(value).strip()
    if text in ("", CREATE) or KEY_ARN.fullmatch(text):
        return text or None
    raise ValueError(
        f'must be empty, "{CREATE}" or a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)'
    )


def build(app: cdk.App, *, account: str | None, region: str | None) -> TaskfleetStack:
    """The stack, configured from the app's context, with cdk-nag's AwsSolutions checks."""
    context = {key: app.node.try_get_context(key) for key in DEFAULTS}

    def get(key: str, parse: Callable[[Any], T]) -> T:
        return setting(context, key, parse)

    key = get("taskfleet:kmsKey", kms_key)
    arn = KEY_ARN.fullmatch(key or "")
    if arn and region and arn["region"] != region:
        raise SettingError(
            f"context taskfleet:kmsKey={key!r}: the key is in {arn['region']}, the stack in"
            f" {region} (SQS and DynamoDB use a key of their own region)"
        )

    stack = TaskfleetStack(
        app,
        get("taskfleet:stackName", str),
        instance_types=get("taskfleet:instanceTypes", lambda value: one_cpu(names(value))),
        max_workers=get("taskfleet:maxWorkers", positive_int),
        slots_per_instance=get("taskfleet:slotsPerInstance", positive_int),
        idle_timeout=cdk.Duration.seconds(get("taskfleet:idleTimeoutSeconds", positive_int)),
        visibility_timeout=cdk.Duration.seconds(
            get("taskfleet:visibilityTimeoutSeconds", positive_int)
        ),
        max_receive_count=get("taskfleet:maxReceiveCount", positive_int),
        job_retention_days=get("taskfleet:jobRetentionDays", retention_days),
        vpc_id=get("taskfleet:vpcId", str) or None,
        image=get("taskfleet:image", image_name),
        ami_id=get("taskfleet:amiId", str) or None,
        setup_script=get("taskfleet:setupScript", read_setup_script),
        spot=get("taskfleet:spot", flag),
        kms_key=key,
        env=cdk.Environment(account=account, region=region),
        description="taskfleet: task queues, claim table and a worker fleet that scales from zero",
    )
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return stack


#: What to do when the CDK CLI found no account to deploy to.
NO_ACCOUNT = (
    "taskfleet stack: no AWS account and region to deploy to: the stack looks its VPC up"
    " (taskfleet:vpcId, or the account's default VPC), which needs them. Give the CDK CLI"
    " credentials (aws configure, or AWS_PROFILE) or set CDK_DEFAULT_ACCOUNT and"
    " CDK_DEFAULT_REGION; with no account at all, `make local-aws-up` deploys to an emulator."
)


def main() -> None:
    # The CDK CLI sets these from the credentials it runs with; the VPC
    # lookup needs them.
    account = os.environ.get("CDK_DEFAULT_ACCOUNT")
    region = os.environ.get("CDK_DEFAULT_REGION")
    if not account or not region:
        raise SystemExit(NO_ACCOUNT)
    app = cdk.App()
    try:
        build(app, account=account, region=region)
    except SettingError as error:
        raise SystemExit(f"taskfleet stack: {error}") from None
    app.synth()


if __name__ == "__main__":
    main()
