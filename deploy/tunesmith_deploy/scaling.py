"""Application Auto Scaling of the instance variants' endpoint (``realtime``, ``async``).

The variant's instance count is a scalable target, ``endpoint/<name>/variant/<variant>``
(``sagemaker:variant:DesiredInstanceCount``), between `scaling_min` and ``max_instances``:

    realtime  target tracking on SageMakerVariantInvocationsPerInstance (invocations per
              instance per minute, ``invocations_target``); never below one instance
    async     target tracking on ApproximateBacklogSizePerInstance (requests queued or running
              per instance, ``backlog_target``), down to ``min_instances`` (0: none while idle)

Target tracking cannot leave zero: with no instance there is no backlog per instance to track.
So, as AWS documents for asynchronous endpoints, an alarm on HasBacklogWithoutCapacity (1 while
requests wait and no instance runs) drives a step scaling policy that adds one instance; target
tracking takes over from there. The endpoint is created with ``instance_count`` instances
(SageMaker starts a variant with at least one) and an idle async endpoint reaches zero once
target tracking's scale-in alarm has seen an empty queue for about 15 minutes.
"""

from __future__ import annotations

from typing import Final

from aws_cdk import Duration, Stack
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_iam as iam
from constructs import Construct

from tunesmith_deploy.config import DeployConfig

__all__ = ["SCALABLE_DIMENSION", "EndpointScaling"]

SCALABLE_DIMENSION: Final = "sagemaker:variant:DesiredInstanceCount"
_NAMESPACE: Final = "AWS/SageMaker"
_SERVICE_LINKED_ROLE: Final = (
    "sagemaker.application-autoscaling.amazonaws.com/"
    "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint"
)
_INVOCATIONS_PER_INSTANCE: Final = (
    appscaling.PredefinedMetric.SAGEMAKER_VARIANT_INVOCATIONS_PER_INSTANCE
)


class EndpointScaling(Construct):
    """The scalable target of one endpoint variant and the policies that move it."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: DeployConfig,
        endpoint_name: str,
        variant_name: str,
    ) -> None:
        super().__init__(scope, construct_id)
        self.endpoint_name = endpoint_name
        # The L2 target would make a role of its own, with no permission; Application Auto
        # Scaling's service-linked role for SageMaker holds what it needs, and naming it lets
        # Application Auto Scaling create it in an account that has none yet.
        role = iam.Role.from_role_arn(
            self,
            "ServiceLinkedRole",
            Stack.of(self).format_arn(
                service="iam",
                region="",
                resource="role",
                resource_name=f"aws-service-role/{_SERVICE_LINKED_ROLE}",
            ),
            mutable=False,
        )
        # the endpoint's name as an attribute: the target waits for the endpoint
        self.target = appscaling.ScalableTarget(
            self,
            "Target",
            service_namespace=appscaling.ServiceNamespace.SAGEMAKER,
            resource_id=f"endpoint/{endpoint_name}/variant/{variant_name}",
            scalable_dimension=SCALABLE_DIMENSION,
            min_capacity=config.scaling_min,
            max_capacity=config.max_instances,
            role=role,
        )
        scale_in = Duration.seconds(config.scale_in_cooldown)
        scale_out = Duration.seconds(config.scale_out_cooldown)
        if config.variant == "realtime":
            appscaling.TargetTrackingScalingPolicy(
                self,
                "Invocations",
                scaling_target=self.target,
                target_value=config.invocations_target,
                predefined_metric=_INVOCATIONS_PER_INSTANCE,
                scale_in_cooldown=scale_in,
                scale_out_cooldown=scale_out,
            )
            return
        appscaling.TargetTrackingScalingPolicy(
            self,
            "Backlog",
            scaling_target=self.target,
            target_value=config.backlog_target,
            custom_metric=self._metric("ApproximateBacklogSizePerInstance"),
            scale_in_cooldown=scale_in,
            scale_out_cooldown=scale_out,
        )
        if config.scaling_min == 0:
            self._scale_out_from_zero(scale_out)

    def _metric(self, name: str) -> cloudwatch.Metric:
        return cloudwatch.Metric(
            namespace=_NAMESPACE,
            metric_name=name,
            dimensions_map={"EndpointName": self.endpoint_name},
            statistic=cloudwatch.Stats.AVERAGE,
            period=Duration.minutes(1),
        )

    def _scale_out_from_zero(self, cooldown: Duration) -> None:
        step = appscaling.StepScalingAction(
            self,
            "FromZero",
            scaling_target=self.target,
            adjustment_type=appscaling.AdjustmentType.CHANGE_IN_CAPACITY,
            metric_aggregation_type=appscaling.MetricAggregationType.AVERAGE,
            cooldown=cooldown,
        )
        step.add_adjustment(adjustment=1, lower_bound=0)  # at or above the threshold: +1
        alarm = cloudwatch.Alarm(
            self,
            "BacklogWithoutCapacity",
            alarm_description=(
                f"Requests wait at {self.endpoint_name} and no instance runs: start one"
            ),
            metric=self._metric("HasBacklogWithoutCapacity"),
            threshold=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            # one minute is enough: the metric is never 1 by chance, and every minute waited
            # comes before the instance's own start (several minutes for the GPU image)
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.MISSING,
        )
        alarm.add_alarm_action(cloudwatch_actions.ApplicationScalingAction(step))
