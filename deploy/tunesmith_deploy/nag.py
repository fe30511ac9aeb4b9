"""cdk-nag findings acknowledged on purpose, each with its reason, next to the resource.

Every acknowledgment is also recorded as construct metadata (`ACKNOWLEDGED`), so the cloud
assembly lists them with their reasons. ``cdk synth -c acknowledge_findings=false`` records
them without acknowledging: synthesis then fails listing every finding, for a review.
"""

from __future__ import annotations

import json
from typing import Any, Final

from aws_cdk import Acknowledgment, Stack, Validations
from constructs import IConstruct

__all__ = ["ACKNOWLEDGED", "acknowledge", "flatten_reference", "wildcard_finding"]

ACKNOWLEDGED: Final = "tunesmith:nag-acknowledged"


def acknowledge(scope: IConstruct, rule: str, reason: str) -> None:
    """Accept one AwsSolutions finding (``IAM5[Resource::...]`` style ids included) on `scope`."""
    finding = f"AwsSolutions-{rule}"
    scope.node.add_metadata(ACKNOWLEDGED, {"id": finding, "reason": reason})
    if str(scope.node.try_get_context("acknowledge_findings")).lower() == "false":
        return
    Validations.of(scope).acknowledge(Acknowledgment(id=finding, reason=reason))


def wildcard_finding(scope: IConstruct, resource: str) -> str:
    """The id of the IAM5 finding cdk-nag reports for `resource` in a policy in `scope`'s stack.

    `resource` is the string the policy statement was given (tokens and all), so the id follows
    whatever the stack's environment makes of it: ``Stack.of(x).format_arn`` gives
    ``<AWS::Region>`` in an environment-agnostic stack and ``eu-west-1`` where ``cdk synth``
    supplies the region; ``bucket.arn_for_objects("p/*")`` gives ``<TracksXXXX.Arn>/p/*``.
    """
    return f"IAM5[Resource::{flatten_reference(Stack.of(scope).resolve(resource))}]"


def flatten_reference(value: Any) -> str:
    """A resolved CloudFormation value as cdk-nag flattens it (its ``flattenCfnReference``)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.replace("${", "<").replace("}", ">")  # Fn::Sub placeholders
    if isinstance(value, dict):
        if "Fn::Join" in value:
            delimiter, items = value["Fn::Join"]
            return str(delimiter).join(flatten_reference(item) for item in items)
        if "Fn::Sub" in value:
            return flatten_reference(value["Fn::Sub"])
        if "Fn::GetAtt" in value:
            resource, attribute = value["Fn::GetAtt"]
            return f"<{flatten_reference(resource)}.{flatten_reference(attribute)}>"
        if "Fn::ImportValue" in value:
            return flatten_reference(value["Fn::ImportValue"])
        if "Ref" in value:
            return f"<{flatten_reference(value['Ref'])}>"
    return json.dumps(value, separators=(",", ":"))
