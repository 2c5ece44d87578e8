"""cdk-nag AwsSolutions findings that are accepted, each with its reason, next to the code."""

from aws_cdk import Acknowledgment, CfnResource, Validations
from constructs import Construct


def acknowledge(scope: Construct, reason: str, *rule_ids: str) -> None:
    """Accept findings of ``rule_ids`` on ``scope`` and its children, for ``reason``."""
    Validations.of(scope).acknowledge(
        *(Acknowledgment(id=rule_id, reason=reason) for rule_id in rule_ids)
    )


def skip_checkov(scope: Construct, check_id: str, reason: str) -> None:
    """Skip one checkov check on ``scope``'s CloudFormation resource, for ``reason``
    (in the template's metadata, where checkov reads it)."""
    resource = scope.node.default_child
    assert isinstance(resource, CfnResource), f"{scope.node.path} has no CloudFormation resource"
    resource.add_metadata("checkov", {"skip": [{"id": check_id, "comment": reason}]})
