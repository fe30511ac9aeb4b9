"""The stack: bucket, one model endpoint per model (unless ``variant=lambda``), function and
API."""

from __future__ import annotations

import os
from typing import Any

from aws_cdk import App, CfnOutput, Environment, Stack, Validations
from cdk_nag import AwsSolutionsChecks
from constructs import Construct

from tunesmith_deploy.api import GenerateService
from tunesmith_deploy.bucket import TrackBucket
from tunesmith_deploy.config import DeployConfig
from tunesmith_deploy.model_endpoint import ModelEndpoint

__all__ = ["DEFAULT_STACK_NAME", "TunesmithStack", "build_app"]

DEFAULT_STACK_NAME = "Tunesmith"


class TunesmithStack(Stack):
    """Everything one deployment needs; its outputs say how to call it."""

    def __init__(
        self, scope: Construct, construct_id: str, *, config: DeployConfig, **kwargs: Any
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        self.storage = TrackBucket(self, "Storage", config=config)
        # {model id: endpoint}, the default first; it keeps the id "Model" (and so its logical
        # ids), so adding models to a deployment leaves its endpoint in place
        self.endpoints: dict[str, ModelEndpoint] = {}
        if config.uses_sagemaker:
            names = config.endpoint_names
            for index, (model, checkpoint) in enumerate(config.models.items()):
                self.endpoints[model] = ModelEndpoint(
                    self,
                    "Model" if index == 0 else f"Model-{model}",
                    config=config,
                    bucket=self.storage.bucket,
                    checkpoint=checkpoint,
                    name=names[model],
                )
        self.model = next(iter(self.endpoints.values()), None)  # the default model's
        self.service = GenerateService(
            self, "Service", config=config, bucket=self.storage.bucket, endpoints=self.endpoints
        )
        CfnOutput(self, "Variant", value=config.variant)
        CfnOutput(self, "GenerateUrl", value=self.service.generate_url,
                  description="POST a JSON body or a form with uploads here (README)")  # fmt: skip
        if self.service.jobs_url is not None:
            CfnOutput(self, "JobsUrl", value=self.service.jobs_url,
                      description="POST a job here; GET <JobsUrl>/<id> reports it")  # fmt: skip
        CfnOutput(self, "BucketName", value=self.storage.bucket.bucket_name)
        if self.model is not None:
            CfnOutput(self, "EndpointName", value=self.model.endpoint_name)
        if self.service.models_url is not None:
            CfnOutput(self, "ModelsUrl", value=self.service.models_url,
                      description="GET the models a request may name (field model)")  # fmt: skip
        if self.service.endpoint_map is not None:
            CfnOutput(self, "ModelEndpoints", value=self.service.endpoint_map,
                      description="Each model's SageMaker endpoint")  # fmt: skip
        if self.service.api_key is not None:
            CfnOutput(
                self,
                "ApiKeyId",
                value=self.service.api_key.key_id,
                description="aws apigateway get-api-key --include-value --api-key <id>",
            )


def build_app(app: App) -> TunesmithStack:
    """Add the stack `app`'s context describes, and the cdk-nag AwsSolutions checks."""
    config = DeployConfig.from_context(app.node.try_get_context)
    name = app.node.try_get_context("stack_name") or DEFAULT_STACK_NAME
    stack = TunesmithStack(
        app,
        str(name),
        config=config,
        description=f"tunesmith text-to-music ({config.variant})",
        env=Environment(
            account=os.environ.get("CDK_DEFAULT_ACCOUNT"),
            region=os.environ.get("CDK_DEFAULT_REGION"),
        ),
    )
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return stack
