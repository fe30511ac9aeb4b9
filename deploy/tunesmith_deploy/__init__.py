"""tunesmith's AWS deployment as a CDK app: API Gateway -> Lambda -> SageMaker -> S3.

config          DeployConfig: the variant and every other choice, from CDK context
bucket          TrackBucket: the S3 bucket (public track prefix or presigned URLs)
model_endpoint  ModelEndpoint: the engine image, SageMaker model, endpoint config, endpoint
api             GenerateService: the Lambda function and the REST API (POST /generate)
request_model   the API's request model, derived from tunesmith's request contract
bundling        packaging the function's code with pip, without Docker
stack           TunesmithStack: the three together; `build_app` adds the cdk-nag checks
"""

__all__: list[str] = []
