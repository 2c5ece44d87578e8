"""cdk-nag AwsSolutions findings that are accepted, each with its reason, next to the code."""

from aws_cdk import Acknowledgment, Validations
from constructs import Construct


def acknowledge(scope: Construct, reason: str, *rule_ids: str) -> None:
    """Accept findings of ``rule_ids`` on ``scope`` and its children, for ``reason``."""
    Validations.of(scope).acknowledge(
        *(Acknowledgment(id=rule_id, reason=reason) for rule_id in rule_ids)
    )
