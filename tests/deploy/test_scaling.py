"""Application Auto Scaling in the synthesized templates: the realtime variant tracks invocations
per instance, the async variant its backlog per instance down to none and back up from none on
the first queued request, each within the context's bounds; serverless and lambda have none."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk import App, Stack
from aws_cdk.assertions import Template

from cdk_synth import ACCOUNT, DEFAULT_REGION, SCENARIOS, Synth, app_synth
from tunesmith_deploy.config import DeployConfig
from tunesmith_deploy.scaling import EndpointScaling

TARGET = "AWS::ApplicationAutoScaling::ScalableTarget"
POLICY = "AWS::ApplicationAutoScaling::ScalingPolicy"
ALARM = "AWS::CloudWatch::Alarm"
SERVICE_LINKED_ROLE = (
    "role/aws-service-role/sagemaker.application-autoscaling.amazonaws.com/"
    "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint"
)
# -c values an async deployment may be given, as `cdk deploy -c k=v` gives them
ASYNC_CHOICES = {
    "variant": "async",
    "min_instances": "0",
    "max_instances": "4",
    "instance_count": "2",
    "backlog_target": "5",
    "scale_in_cooldown": "1200",
    "scale_out_cooldown": "60",
}


@pytest.fixture(scope="module")
def async_choices(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """app.py as the CDK CLI starts it, for an async deployment with every scaling choice."""
    outdir = tmp_path_factory.mktemp("cdk-async-choices")
    return Synth(outdir, *app_synth(outdir, ASYNC_CHOICES, DEFAULT_REGION, ACCOUNT))


def endpoint_name(synth: Synth) -> dict[str, Any]:
    """The endpoint's name as the template refers to it (the endpoint must exist first)."""
    (endpoint_id,) = synth.resources("AWS::SageMaker::Endpoint")
    return {"Fn::GetAtt": [endpoint_id, "EndpointName"]}


def scalable_target(synth: Synth) -> tuple[str, dict[str, Any]]:
    logical_id, target = synth.one(TARGET)
    props = target["Properties"]
    assert props["ServiceNamespace"] == "sagemaker"
    assert props["ScalableDimension"] == "sagemaker:variant:DesiredInstanceCount"
    assert props["ResourceId"] == {
        "Fn::Join": ["", ["endpoint/", endpoint_name(synth), "/variant/AllTraffic"]]
    }
    (production,) = synth.one("AWS::SageMaker::EndpointConfig")[1]["Properties"][
        "ProductionVariants"
    ]
    assert production["VariantName"] == "AllTraffic"  # the variant the resource id names
    # Application Auto Scaling's own role for SageMaker, never a role without permissions
    role = json.dumps(props["RoleARN"])
    assert SERVICE_LINKED_ROLE in role and "Fn::GetAtt" not in role
    return logical_id, props


def policies(synth: Synth, target_id: str) -> dict[str, dict[str, Any]]:
    """Policy type -> the properties of the one policy of that type, all on `target_id`."""
    found: dict[str, dict[str, Any]] = {}
    for logical_id, policy in synth.resources(POLICY).items():
        props = policy["Properties"]
        assert props["ScalingTargetId"] == {"Ref": target_id}
        assert props["PolicyType"] not in found, logical_id
        found[props["PolicyType"]] = props | {"LogicalId": logical_id}
    return found


def backlog_alarms(synth: Synth) -> list[dict[str, Any]]:
    return [
        alarm["Properties"]
        for alarm in synth.resources(ALARM).values()
        if alarm["Properties"].get("MetricName") == "HasBacklogWithoutCapacity"
    ]


@pytest.mark.parametrize("scenario", ["serverless", "lambda"])
def test_variants_without_instances_have_no_scaling(
    synths: dict[str, Synth], scenario: str
) -> None:
    synth = synths[scenario]
    assert synth.resources(TARGET) == {} and synth.resources(POLICY) == {}
    assert backlog_alarms(synth) == []


@pytest.mark.parametrize("scenario", ["realtime", "options"])
def test_realtime_tracks_invocations_per_instance_within_the_context_bounds(
    synths: dict[str, Synth], scenario: str
) -> None:
    synth = synths[scenario]
    chosen = SCENARIOS[scenario]
    target_id, target = scalable_target(synth)
    assert (target["MinCapacity"], target["MaxCapacity"]) == (
        int(chosen.get("min_instances", 1)),  # the default 0 is one: a real-time variant
        int(chosen.get("max_instances", 2)),
    )
    found = policies(synth, target_id)
    assert set(found) == {"TargetTrackingScaling"}  # no step policy: it never reaches zero
    tracking = found["TargetTrackingScaling"]["TargetTrackingScalingPolicyConfiguration"]
    assert tracking == {
        "PredefinedMetricSpecification": {
            "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
        },
        "TargetValue": float(chosen.get("invocations_target", 4)),
        "ScaleInCooldown": int(chosen.get("scale_in_cooldown", 600)),
        "ScaleOutCooldown": int(chosen.get("scale_out_cooldown", 300)),
    }
    assert backlog_alarms(synth) == []


@pytest.mark.parametrize("choices", [False, True], ids=["defaults", "choices"])
def test_async_tracks_its_backlog_down_to_none_and_starts_again_on_a_request(
    synths: dict[str, Synth], async_choices: Synth, choices: bool
) -> None:
    synth = async_choices if choices else synths["async"]
    assert synth.returncode == 0, synth.output[-3000:]  # cdk-nag's checks passed as well
    chosen = ASYNC_CHOICES if choices else {}
    target_id, target = scalable_target(synth)
    assert (target["MinCapacity"], target["MaxCapacity"]) == (
        0, int(chosen.get("max_instances", 2)),
    )  # fmt: skip
    # created with its instances (SageMaker starts a variant with one or more), scaled in later
    (production,) = synth.one("AWS::SageMaker::EndpointConfig")[1]["Properties"][
        "ProductionVariants"
    ]
    assert production["InitialInstanceCount"] == int(chosen.get("instance_count", 1)) >= 1
    found = policies(synth, target_id)
    assert set(found) == {"TargetTrackingScaling", "StepScaling"}
    tracking = found["TargetTrackingScaling"]["TargetTrackingScalingPolicyConfiguration"]
    assert tracking == {
        "CustomizedMetricSpecification": {
            "Namespace": "AWS/SageMaker",
            "MetricName": "ApproximateBacklogSizePerInstance",
            "Dimensions": [{"Name": "EndpointName", "Value": endpoint_name(synth)}],
            "Statistic": "Average",
        },
        "TargetValue": float(chosen.get("backlog_target", 2)),
        "ScaleInCooldown": int(chosen.get("scale_in_cooldown", 600)),
        "ScaleOutCooldown": int(chosen.get("scale_out_cooldown", 300)),
    }
    # from none: while requests wait with no instance, the alarm adds one instance
    step = found["StepScaling"]
    assert step["StepScalingPolicyConfiguration"] == {
        "AdjustmentType": "ChangeInCapacity",
        "MetricAggregationType": "Average",
        "StepAdjustments": [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}],
        "Cooldown": int(chosen.get("scale_out_cooldown", 300)),
    }
    (alarm,) = backlog_alarms(synth)
    assert alarm["AlarmActions"] == [{"Ref": step["LogicalId"]}]
    assert (alarm["Namespace"], alarm["Statistic"], alarm["Period"]) == (
        "AWS/SageMaker", "Average", 60,
    )  # fmt: skip
    assert alarm["Dimensions"] == [{"Name": "EndpointName", "Value": endpoint_name(synth)}]
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == (
        "GreaterThanOrEqualToThreshold", 1,
    )  # fmt: skip
    assert alarm["EvaluationPeriods"] == 1  # the first minute with a request waiting


def construct_template(**choices: Any) -> dict[str, Any]:
    """Only the scaling of an endpoint named tunesmith-<variant>, for the given choices."""
    config = DeployConfig(**choices)
    stack = Stack(App(), "Scaling")
    EndpointScaling(
        stack, "Scaling", config=config, endpoint_name=config.sagemaker_endpoint_name,
        variant_name="AllTraffic",
    )  # fmt: skip
    found: dict[str, Any] = Template.from_stack(stack).to_json()
    return found


def test_async_kept_above_zero_needs_no_way_back_from_zero() -> None:
    resources = construct_template(variant="async", min_instances=1)["Resources"].values()
    kinds = sorted(r["Type"] for r in resources)
    assert kinds == [TARGET, POLICY]  # the target tracking alone
    (target,) = [r for r in resources if r["Type"] == TARGET]
    assert target["Properties"]["MinCapacity"] == 1
    assert target["Properties"]["ResourceId"] == "endpoint/tunesmith-async/variant/AllTraffic"


def test_realtime_never_goes_below_one_instance() -> None:
    resources = construct_template(variant="realtime", min_instances=0)["Resources"].values()
    (target,) = [r for r in resources if r["Type"] == TARGET]
    assert (target["Properties"]["MinCapacity"], target["Properties"]["MaxCapacity"]) == (1, 2)
