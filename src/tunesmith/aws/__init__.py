"""The AWS tiers: the SageMaker container and the Lambda function behind API Gateway.

    protocol        how the API tier and the model tier talk (SageMaker's invocation contract)
    deployment      the variant the API tier is deployed as, and that variant's limits
    endpoint        ``tunesmith endpoint``: the container serving ``/ping`` and ``/invocations``
    proxy           API Gateway REST proxy events in, proxy responses out
    sagemaker       invoking the endpoint with boto3, botocore errors translated
    lambda_handler  ``handler(event, context)``: validate, invoke, store, answer
    async_jobs      the async variant's jobs: queued, recorded, their status read from S3

Importing this package imports nothing heavy; `lambda_handler`, `async_jobs`, `proxy`,
`protocol`, `deployment` and `sagemaker` never import torch or numpy (the Lambda package
carries neither).
"""

__all__: list[str] = []
