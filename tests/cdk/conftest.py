"""Shared pieces for the stack's tests: a synthesized app, once per session."""

import os
from pathlib import Path

# jsii prints a banner about the Node.js version on every start; the version is
# what this machine has, and the banner is noise in test output.
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")

import aws_cdk as cdk  # imported after the environment it reads
import pytest
from aws_cdk.assertions import Template
from cdk.app import build

ACCOUNT = "123456789012"
REGION = "us-east-1"

#: A default VPC as the CDK CLI's lookup would return it, so synthesis needs
#: no AWS account (and no placeholder VPC ids reach the template).
VPC_CONTEXT = {
    f"vpc-provider:account={ACCOUNT}:filter.isDefault=true:region={REGION}"
    ":returnAsymmetricSubnets=true": {
        "vpcId": "vpc-0a1b2c3d4e5f60718",
        "vpcCidrBlock": "172.31.0.0/16",
        "ownerAccountId": ACCOUNT,
        "availabilityZones": [],
        "subnetGroups": [
            {
                "name": "Public",
                "type": "Public",
                "subnets": [
                    {
                        "subnetId": f"subnet-0a1b2c3d4e5f6071{n}",
                        "cidr": f"172.31.{n * 16}.0/20",
                        "availabilityZone": f"{REGION}{zone}",
                        "routeTableId": "rtb-0a1b2c3d4e5f60718",
                    }
                    for n, zone in ((0, "a"), (1, "b"))
                ],
            }
        ],
    }
}


def make_app(tmp_path: Path, **context: object) -> cdk.App:
    return cdk.App(outdir=str(tmp_path), context={**VPC_CONTEXT, **context})


def synthesize(outdir: Path, **context: object) -> tuple[Template, Path]:
    """The whole app, synthesized (cdk-nag included): its template and the file."""
    app = make_app(outdir, **context)
    stack = build(app, account=ACCOUNT, region=REGION)
    app.synth()
    return Template.from_stack(stack), outdir / f"{stack.artifact_id}.template.json"


@pytest.fixture(scope="session")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> tuple[Template, Path]:
    """The whole app with its default settings, synthesized once."""
    return synthesize(tmp_path_factory.mktemp("cdk.out"))


@pytest.fixture(scope="session")
def synthesized_with_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Template, Path]:
    """The whole app with a customer-managed KMS key of its own, synthesized once."""
    return synthesize(tmp_path_factory.mktemp("cdk.out"), **{"taskfleet:kmsKey": "create"})
