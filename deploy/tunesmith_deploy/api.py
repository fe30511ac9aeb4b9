"""The API tier: the Lambda function and the REST API that puts ``POST /generate`` in front of it.

* The function is ``tunesmith.aws.lambda_handler.handler``: a small zip (tunesmith, pydantic,
  boto3; bundled by `LocalPipBundling`) calling the SageMaker endpoint (``TUNESMITH_ENDPOINT_NAME``;
  with several models, each model's, ``TUNESMITH_ENDPOINTS``), or, with ``variant=lambda``, the
  engine image itself (``deploy/Dockerfile``'s ``lambda`` stage, every model in it).
  Its role may write its own logs, invoke these endpoints (and no other), and put (and, after a
  failed put, delete) objects under the track prefix, nothing else. On the async variant
  SageMaker writes the tracks (and the container their records): the function may put and
  delete queued forms
  under ``music-inputs/``, read and write job records under ``music-jobs/``, read the tracks,
  their records and SageMaker's error documents, and list the bucket (without that, S3 answers
  403 for a missing object, and a job not yet done could not be told from a denied read).
* The REST API (Regional) has ``POST /generate``, on the async variant ``POST /jobs``,
  ``GET /jobs/{id}`` and ``DELETE /jobs/{id}`` (`tunesmith.aws.async_jobs`), and with several
  models ``GET /models`` (`tunesmith.aws.routes`): Lambda proxy
  integrations, the POST bodies validated against the request contract first, stage and
  usage-plan throttling, an API key by default, access logs, and gateway errors answered in
  tunesmith's JSON shape (an unknown route names the routes there are).
  ``multipart/form-data`` (uploads) is a binary media type, so it reaches the function
  base64-encoded and intact; the gateway validates it against no model (models are JSON
  Schema, and a content type with no model mapped is not validated): the function does.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import BundlingOptions, Duration, RemovalPolicy, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from tunesmith.aws.deployment import INPUT_PREFIX
from tunesmith.schema import JOB_PREFIX
from tunesmith.uploads import MULTIPART
from tunesmith_deploy.bucket import FAILURE_PREFIX
from tunesmith_deploy.bundling import REPO_ROOT, LocalPipBundling, docker_command
from tunesmith_deploy.config import DeployConfig
from tunesmith_deploy.gateway_responses import contract_message, gateway_errors, routes_message
from tunesmith_deploy.model_endpoint import ModelEndpoint, engine_image_args
from tunesmith_deploy.nag import acknowledge, wildcard_finding
from tunesmith_deploy.request_model import request_schema

__all__ = ["HANDLER", "RUNTIME", "GenerateService"]

HANDLER = "tunesmith.aws.lambda_handler.handler"
RUNTIME = lambda_.Runtime.PYTHON_3_14


class GenerateService(Construct):
    """The function (`function`) and the REST API (`api`, `generate_url`, `jobs_url` on the
    async variant, `api_key`); `endpoints` are the model tier's, by model id, the default
    first (none: ``variant=lambda``)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: DeployConfig,
        bucket: s3.IBucket,
        endpoints: Mapping[str, ModelEndpoint],
    ) -> None:
        super().__init__(scope, construct_id)
        # TUNESMITH_ENDPOINTS' value (a JSON token), where the function routes several models
        self.endpoint_map: str | None = None
        self.function = self._function(config, bucket, endpoints)
        self._api(config)

    # -- the function ------------------------------------------------------------------------

    def _function(
        self, config: DeployConfig, bucket: s3.IBucket, endpoints: Mapping[str, ModelEndpoint]
    ) -> lambda_.Function:
        log_group = logs.LogGroup(
            self,
            "FunctionLogs",
            retention=logs.RetentionDays.THREE_MONTHS,
            removal_policy=RemovalPolicy.DESTROY,
        )
        role = iam.Role(
            self,
            "FunctionRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="POST /generate: invoke the model tier, store tracks, write its logs",
        )
        log_group.grant_write(role)
        for actions, prefix, reason in self._object_grants(config):
            objects = bucket.arn_for_objects(f"{prefix}*")
            role.add_to_policy(iam.PolicyStatement(actions=actions, resources=[objects]))
            policy = role.node.find_child("DefaultPolicy")
            acknowledge(policy, wildcard_finding(policy, objects), reason)
        if config.variant == "async":  # a missing object is then 404, not 403
            role.add_to_policy(
                iam.PolicyStatement(actions=["s3:ListBucket"], resources=[bucket.bucket_arn])
            )
        environment = {
            "TUNESMITH_S3_BUCKET": bucket.bucket_name,
            "TUNESMITH_S3_PREFIX": config.prefix,
            "TUNESMITH_URL_MODE": config.url_mode,
            "TUNESMITH_MAX_DURATION": f"{config.duration_limit:g}",
            "TUNESMITH_MAX_UPLOAD_BYTES": str(config.upload_limit),
            "TUNESMITH_VARIANT": config.variant,
            "TUNESMITH_TIME_LIMIT": str(config.time_limit),
        }
        if endpoints:
            action = "InvokeEndpointAsync" if config.variant == "async" else "InvokeEndpoint"
            role.add_to_policy(
                iam.PolicyStatement(
                    actions=[f"sagemaker:{action}"],
                    resources=[endpoint.endpoint_arn for endpoint in endpoints.values()],
                )
            )
            if len(endpoints) == 1:
                (endpoint,) = endpoints.values()
                environment["TUNESMITH_ENDPOINT_NAME"] = endpoint.endpoint_name
            else:
                self.endpoint_map = Stack.of(self).to_json_string(
                    {model: endpoint.endpoint_name for model, endpoint in endpoints.items()}
                )
                environment["TUNESMITH_ENDPOINTS"] = self.endpoint_map
            environment |= {
                "TUNESMITH_INVOKE_MODE": "async" if config.variant == "async" else "sync",
                "TUNESMITH_INVOKE_TIMEOUT": str(config.invoke_timeout),
            }
        else:
            environment |= {
                "TUNESMITH_DEVICE": "cpu",
                "TUNESMITH_PRECISION": config.engine_precision,
            }

        common = {
            "role": role,
            "log_group": log_group,
            "environment": environment,
            "timeout": Duration.seconds(config.function_timeout),
            "architecture": lambda_.Architecture.X86_64,
            "description": "tunesmith POST /generate",
        }
        if config.variant == "lambda":
            return lambda_.DockerImageFunction(
                self,
                "Function",
                code=lambda_.DockerImageCode.from_image_asset(
                    str(REPO_ROOT),
                    file="deploy/Dockerfile",
                    target="lambda",
                    build_args=engine_image_args(config),
                    platform=ecr_assets.Platform.LINUX_AMD64,
                ),
                memory_size=config.lambda_memory,
                **common,  # type: ignore[arg-type]
            )
        python = RUNTIME.name.removeprefix("python")
        code = lambda_.Code.from_asset(
            str(REPO_ROOT / "src"),
            exclude=["*.egg-info", "**/__pycache__"],
            bundling=BundlingOptions(
                image=RUNTIME.bundling_image,
                command=docker_command(),
                # jsii calls try_bundle(output_dir, options) positionally, unlike its stub
                local=LocalPipBundling(python),  # type: ignore[arg-type]
            ),
        )
        return lambda_.Function(
            self,
            "Function",
            runtime=RUNTIME,
            handler=HANDLER,
            code=code,
            memory_size=512,
            **common,  # type: ignore[arg-type]
        )

    @staticmethod
    def _object_grants(config: DeployConfig) -> list[tuple[list[str], str, str]]:
        """(actions, key prefix, why) for each S3 object grant of the function's role."""
        presigned = config.url_mode == "presigned"  # a presigned GET carries the signer's grant
        if config.variant != "async":
            actions = ["s3:PutObject", "s3:DeleteObject"] + (["s3:GetObject"] if presigned else [])
            return [
                (
                    actions,
                    config.prefix,
                    "Every track gets a fresh random key, so the grant names the track prefix "
                    "and nothing outside it. Delete removes a track whose upload failed; get "
                    "signs presigned URLs.",
                )
            ]
        return [
            (
                ["s3:PutObject", "s3:DeleteObject"],
                INPUT_PREFIX,
                "Each queued form gets a fresh random key under the private input prefix, which "
                "the endpoint reads; delete removes one whose request failed to queue.",
            ),
            (
                ["s3:GetObject", "s3:PutObject"],
                JOB_PREFIX,
                "Each job's record has the job's fresh random id as its key under the private "
                "job prefix: written when it is queued and when it ends, read for its status.",
            ),
            (
                ["s3:GetObject"],
                config.prefix,
                "SageMaker writes each job's track under a fresh random key; get reads whether "
                "it is there and the record beside it (and signs presigned URLs).",
            ),
            (
                ["s3:GetObject"],
                FAILURE_PREFIX,
                "SageMaker writes a failed job's error document under the private failure "
                "prefix, named for the job's random id; get reads it for the job's error.",
            ),
        ]

    # -- the REST API ------------------------------------------------------------------------

    def _api(self, config: DeployConfig) -> None:
        access_logs = logs.LogGroup(
            self,
            "AccessLogs",
            retention=logs.RetentionDays.THREE_MONTHS,
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.api = apigw.RestApi(
            self,
            "Api",
            description="tunesmith: POST /generate turns a prompt into a stored track",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            binary_media_types=[MULTIPART],  # uploads reach the function intact, base64
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=RemovalPolicy.DESTROY,
            deploy_options=apigw.StageOptions(
                stage_name="prod",
                throttling_rate_limit=config.throttle_rate,
                throttling_burst_limit=config.throttle_burst,
                logging_level=apigw.MethodLoggingLevel.ERROR,
                metrics_enabled=True,
                access_log_destination=apigw.LogGroupLogDestination(access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=False,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=False,
                ),
            ),
        )
        contract = contract_message(config.variant, config.duration_limit)
        several = len(config.models) > 1
        routes = routes_message(config.variant, models=several)
        errors = gateway_errors(config.api_timeout, contract, routes)
        for response_type, (status, template) in errors.items():
            name = response_type.response_type  # jsii gives a new object per access: compare names
            self.api.add_gateway_response(
                f"{name.title().replace('_', '')}Response",
                type=response_type,
                status_code=status,
                templates={"application/json": template},
                response_headers={"Retry-After": "'1'"} if name == "THROTTLED" else None,
            )
        model = self.api.add_model(
            "GenerateRequest",
            content_type="application/json",
            model_name="GenerateRequest",
            schema=request_schema(config.duration_limit),
        )
        validator = self.api.add_request_validator(
            "BodyValidator", validate_request_body=True, validate_request_parameters=True
        )
        integration = apigw.LambdaIntegration(
            self.function, proxy=True, timeout=Duration.seconds(config.api_timeout)
        )
        methods = []
        posts = [self.api.root.add_resource("generate")]
        if config.variant == "async":
            posts.append(self.api.root.add_resource("jobs"))
        for resource in posts:
            methods.append(
                resource.add_method(
                    "POST",
                    integration,
                    api_key_required=config.api_key,
                    request_validator=validator,
                    # JSON only: a form has no model mapped, so the gateway passes it unvalidated
                    request_models={"application/json": model},
                )
            )
        self.generate_url = self.api.url_for_path("/generate")
        self.jobs_url: str | None = None
        if config.variant == "async":
            job = posts[1].add_resource("{id}")
            for verb in ("GET", "DELETE"):
                methods.append(
                    job.add_method(
                        verb,
                        integration,
                        api_key_required=config.api_key,
                        request_validator=validator,
                        request_parameters={"method.request.path.id": True},
                    )
                )
            self.jobs_url = self.api.url_for_path("/jobs")
        self.models_url: str | None = None
        if several:  # the function lists the models it routes (its TUNESMITH_ENDPOINTS)
            methods.append(
                self.api.root.add_resource("models").add_method(
                    "GET",
                    integration,
                    api_key_required=config.api_key,
                    request_validator=validator,
                )
            )
            self.models_url = self.api.url_for_path("/models")
        self.api_key: apigw.IApiKey | None = None
        if config.api_key:
            self.api_key = self.api.add_api_key("ApiKey", description="tunesmith POST /generate")
            plan = self.api.add_usage_plan(
                "UsagePlan",
                throttle=apigw.ThrottleSettings(
                    rate_limit=config.throttle_rate, burst_limit=config.throttle_burst
                ),
                api_stages=[
                    apigw.UsagePlanPerApiStage(api=self.api, stage=self.api.deployment_stage)
                ],
            )
            plan.add_api_key(self.api_key)
        stage = self.api.deployment_stage
        acknowledge(
            stage,
            "APIG3",
            "No WAF web ACL by default (it costs per month and per request); the stage is "
            "throttled and the method needs an API key. Attach a web ACL for public launches.",
        )
        for method in methods:
            for rule in ("APIG4", "COG4"):
                acknowledge(
                    method,
                    rule,
                    "Callers are identified by API key and usage plan (the seed's design), not "
                    "by per-user sign-in; add a Cognito or IAM authorizer in front for user "
                    "accounts.",
                )
        acknowledge(
            self.api.node.find_child("CloudWatchRole"),
            "IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
            "AmazonAPIGatewayPushToCloudWatchLogs]",
            "The AWS-managed role policy API Gateway requires for writing stage logs.",
        )
