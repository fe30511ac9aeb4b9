"""The model tier: the engine image, its SageMaker model, endpoint configuration and endpoint.

The image is ``deploy/Dockerfile``'s ``endpoint`` stage (``tunesmith endpoint``), built from
the repository by ``cdk deploy`` and pushed to the bootstrap ECR repository; the checkpoint is
baked in at build time (``-c model=...``). With several models each gets an endpoint of its
own, built from an image holding its checkpoint alone (``TUNESMITH_MODEL``), with its own
scaling. The endpoint configuration follows the variant:

    serverless  ServerlessConfig(MemorySizeInMB, MaxConcurrency): CPU, per-inference billing
    realtime    an instance (ml.g4dn.xlarge by default, a T4 GPU) answering synchronously
    async       an instance plus AsyncInferenceConfig: answers are written to
                s3://<bucket>/<prefix><id>/track.<format>, failures under music-failures/;
                a request with uploads is read from music-inputs/; the container stores
                each track's record, <prefix><id>.json, itself (`tunesmith.aws.protocol`)

The realtime and async variants' instance count follows their load (`tunesmith_deploy.scaling`).

The execution role may pull this image, write this endpoint's logs and (async) put objects
under the track and failure prefixes (the records included) and read those under the input
prefix only.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from tunesmith.aws.deployment import INPUT_PREFIX
from tunesmith_deploy.bucket import FAILURE_PREFIX
from tunesmith_deploy.bundling import REPO_ROOT
from tunesmith_deploy.config import DeployConfig
from tunesmith_deploy.nag import acknowledge, wildcard_finding
from tunesmith_deploy.scaling import EndpointScaling

__all__ = ["VARIANT_NAME", "ModelEndpoint", "engine_image_args"]

VARIANT_NAME = "AllTraffic"  # the endpoint's one production variant


def engine_image_args(config: DeployConfig, checkpoint: str | None = None) -> dict[str, str]:
    """The Dockerfile's build arguments for this deployment: every model (the lambda variant's
    function), or one `checkpoint` (an endpoint's image)."""
    model = checkpoint if checkpoint is not None else ",".join(config.models.values())
    return {"TORCH_INDEX_URL": config.torch_wheels, "MODEL": model}


class ModelEndpoint(Construct):
    """A SageMaker endpoint serving ``tunesmith endpoint`` with `checkpoint` (default: the
    default model) under `name` (default: `sagemaker_endpoint_name`); `endpoint_name` and
    `endpoint_arn` say where it is."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: DeployConfig,
        bucket: s3.IBucket,
        checkpoint: str | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        name = name or config.sagemaker_endpoint_name
        self.checkpoint = checkpoint or next(iter(config.models.values()))
        self.image = ecr_assets.DockerImageAsset(
            self,
            "Image",
            directory=str(REPO_ROOT),
            file="deploy/Dockerfile",
            target="endpoint",
            build_args=engine_image_args(config, self.checkpoint),
            platform=ecr_assets.Platform.LINUX_AMD64,
        )

        self.role = iam.Role(
            self,
            "ExecutionRole",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description=f"SageMaker endpoint {name}: pull its image, write its logs",
        )
        self.image.repository.grant_pull(self.role)
        log_group = stack.format_arn(
            service="logs",
            resource="log-group",
            resource_name=f"/aws/sagemaker/Endpoints/{name}",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogGroup", "logs:DescribeLogStreams"], resources=[log_group]
            )
        )
        log_streams = f"{log_group}:log-stream:*"
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[log_streams],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringEquals": {"cloudwatch:namespace": "/aws/sagemaker/Endpoints"}},
            )
        )
        answers = (
            [bucket.arn_for_objects(f"{prefix}*") for prefix in (config.prefix, FAILURE_PREFIX)]
            if config.variant == "async"
            else []
        )
        inputs = []
        if answers:
            self.role.add_to_policy(
                iam.PolicyStatement(
                    actions=["s3:PutObject", "s3:AbortMultipartUpload"], resources=answers
                )
            )
            inputs = [bucket.arn_for_objects(f"{INPUT_PREFIX}*")]
            self.role.add_to_policy(iam.PolicyStatement(actions=["s3:GetObject"], resources=inputs))
        self._acknowledge_role(log_streams, answers, inputs)

        environment = {
            "TUNESMITH_MAX_DURATION": f"{config.duration_limit:g}",
            "TUNESMITH_MAX_UPLOAD_BYTES": str(config.upload_limit),
            "TUNESMITH_MAX_RESPONSE_BYTES": str(config.payload_limit),
            "TUNESMITH_PRECISION": config.engine_precision,
            "TUNESMITH_DEVICE": "cuda" if config.gpu else "cpu",
        }
        model = sagemaker.CfnModel(
            self,
            "Model",
            execution_role_arn=self.role.role_arn,
            primary_container=sagemaker.CfnModel.ContainerDefinitionProperty(
                image=self.image.image_uri, environment=environment
            ),
        )
        model.node.add_dependency(self.role)  # its policy must exist before CreateModel

        endpoint_config = sagemaker.CfnEndpointConfig(
            self,
            "Config",
            production_variants=[self._variant(config, model.attr_model_name)],
            async_inference_config=self._async_config(config, bucket),
        )
        endpoint = sagemaker.CfnEndpoint(
            self,
            "Endpoint",
            endpoint_config_name=endpoint_config.attr_endpoint_config_name,
            endpoint_name=name,
        )
        self.endpoint_name = endpoint.attr_endpoint_name
        self.endpoint_arn = endpoint.ref  # Ref is the endpoint's ARN
        self.scaling: EndpointScaling | None = None
        if config.scales:
            self.scaling = EndpointScaling(
                self,
                "Scaling",
                config=config,
                endpoint_name=self.endpoint_name,
                variant_name=VARIANT_NAME,
            )

    @staticmethod
    def _variant(
        config: DeployConfig, model_name: str
    ) -> sagemaker.CfnEndpointConfig.ProductionVariantProperty:
        if config.variant == "serverless":
            return sagemaker.CfnEndpointConfig.ProductionVariantProperty(
                variant_name=VARIANT_NAME,
                model_name=model_name,
                serverless_config=sagemaker.CfnEndpointConfig.ServerlessConfigProperty(
                    memory_size_in_mb=config.serverless_memory,
                    max_concurrency=config.serverless_concurrency,
                ),
            )
        return sagemaker.CfnEndpointConfig.ProductionVariantProperty(
            variant_name=VARIANT_NAME,
            model_name=model_name,
            instance_type=config.instance_type,
            initial_instance_count=config.instance_count,
            initial_variant_weight=1,
            container_startup_health_check_timeout_in_seconds=600,
        )

    @staticmethod
    def _async_config(
        config: DeployConfig, bucket: s3.IBucket
    ) -> sagemaker.CfnEndpointConfig.AsyncInferenceConfigProperty | None:
        if config.variant != "async":
            return None
        return sagemaker.CfnEndpointConfig.AsyncInferenceConfigProperty(
            output_config=sagemaker.CfnEndpointConfig.AsyncInferenceOutputConfigProperty(
                s3_output_path=bucket.s3_url_for_object(config.prefix.rstrip("/")),
                s3_failure_path=bucket.s3_url_for_object(FAILURE_PREFIX.rstrip("/")),
            ),
            client_config=sagemaker.CfnEndpointConfig.AsyncInferenceClientConfigProperty(
                max_concurrent_invocations_per_instance=1
            ),
        )

    def _acknowledge_role(self, log_streams: str, answers: list[str], inputs: list[str]) -> None:
        policy = self.role.node.find_child("DefaultPolicy")
        acknowledge(
            policy,
            "IAM5[Resource::*]",
            "ecr:GetAuthorizationToken has no resource-level permissions, and "
            "cloudwatch:PutMetricData is limited by its namespace condition instead.",
        )
        # The ids are rendered from the granted ARNs: a concrete region (cdk synth) or the
        # region token (an environment-agnostic stack) shows in the finding as it is.
        acknowledge(
            policy,
            wildcard_finding(policy, log_streams),
            "SageMaker names the endpoint's log streams after its instances; the grant is "
            "limited to this endpoint's log group.",
        )
        for objects in answers:
            acknowledge(
                policy,
                wildcard_finding(policy, objects),
                "Asynchronous answers (and the container's track records) get a fresh key per "
                "request: put is allowed under this prefix only.",
            )
        for objects in inputs:
            acknowledge(
                policy,
                wildcard_finding(policy, objects),
                "A queued request with uploads is an object with a fresh key under the private "
                "input prefix: get is allowed there only, to read the request.",
            )
