"""cdk-nag findings acknowledged on purpose, each with its reason, next to the resource.

Every acknowledgment is also recorded as construct metadata (`ACKNOWLEDGED`), so the cloud
assembly lists them with their reasons. ``cdk synth -c acknowledge_findings=false`` records
them without acknowledging: synthesis then fails listing every finding, for a review.
"""

from __future__ import annotations

from typing import Final

from aws_cdk import Acknowledgment, Stack, Validations
from constructs import IConstruct

__all__ = ["ACKNOWLEDGED", "acknowledge", "arn_finding"]

ACKNOWLEDGED: Final = "tunesmith:nag-acknowledged"


def acknowledge(scope: IConstruct, rule: str, reason: str) -> None:
    """Accept one AwsSolutions finding (``IAM5[Resource::...]`` style ids included) on `scope`."""
    finding = f"AwsSolutions-{rule}"
    scope.node.add_metadata(ACKNOWLEDGED, {"id": finding, "reason": reason})
    if str(scope.node.try_get_context("acknowledge_findings")).lower() == "false":
        return
    Validations.of(scope).acknowledge(Acknowledgment(id=finding, reason=reason))


def arn_finding(resource: IConstruct, suffix: str, attribute: str = "Arn") -> str:
    """The finding id cdk-nag gives a wildcard resource built on `resource`'s ARN.

    cdk-nag names ``{"Fn::Join": ["", [{"Fn::GetAtt": [id, "Arn"]}, "/music-output/*"]]}`` as
    ``IAM5[Resource::<id.Arn>/music-output/*]``.
    """
    stack = Stack.of(resource)
    child = resource.node.default_child or resource
    logical_id = stack.resolve(stack.get_logical_id(child))  # type: ignore[arg-type]
    return f"IAM5[Resource::<{logical_id}.{attribute}>{suffix}]"
