"""The synthesized templates: every resource, POST /generate (and the async variant's job
routes) wired to the function, the model tier per variant, the function's environment, and IAM
scoped to this endpoint and these prefixes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from cdk_synth import SCENARIOS, Synth

SAGEMAKER = ["AWS::SageMaker::Model", "AWS::SageMaker::EndpointConfig", "AWS::SageMaker::Endpoint"]
# scenario -> (the longest track it takes, seconds one request may take, the largest upload)
LIMITS = {
    "serverless": ("20", "27", "3934464"),  # int8 on CPU in 27 s; 4 MB SageMaker requests
    "realtime": ("27", "27", "4628480"),  # the T4 as assumed; the function's 6 MB event
    "async": ("300", "3600", "4628480"),
    "lambda": ("20", "27", "4628480"),
    "options": ("20", "60", "4628480"),  # -c max_duration=20; api_timeout 120, SageMaker's 60
}


def template(synth: Synth) -> Template:
    return Template.from_json(synth.template)


def statements(synth: Synth) -> list[tuple[str, dict[str, Any]]]:
    """(policy logical id, statement) for every IAM policy statement in the template."""
    found = []
    for logical_id, policy in synth.resources("AWS::IAM::Policy").items():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            found.append((logical_id, statement))
    for logical_id, role in synth.resources("AWS::IAM::Role").items():
        for policy in role["Properties"].get("Policies", []):
            found += [(logical_id, s) for s in policy["PolicyDocument"]["Statement"]]
    return found


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def bucket_objects(synth: Synth, prefix: str = "music-output/") -> dict[str, Any]:
    bucket = logical_id(synth, "AWS::S3::Bucket", "StorageTracks")
    return {"Fn::Join": ["", [{"Fn::GetAtt": [bucket, "Arn"]}, f"/{prefix}*"]]}


def logical_id(synth: Synth, kind: str, starts: str) -> str:
    (found,) = [k for k in synth.resources(kind) if k.startswith(starts)]
    return found


def methods(synth: Synth) -> dict[tuple[str, str], dict[str, Any]]:
    """(HTTP method, resource path) -> the method's properties, for every API method."""
    resources = synth.resources("AWS::ApiGateway::Resource")

    def path(ref: Any) -> str:
        if "Ref" not in ref:  # the root resource
            return ""
        props = resources[ref["Ref"]]["Properties"]
        return f"{path(props['ParentId'])}/{props['PathPart']}"

    return {
        (m["Properties"]["HttpMethod"], path(m["Properties"]["ResourceId"])): m["Properties"]
        for m in synth.resources("AWS::ApiGateway::Method").values()
    }


def is_async(scenario: str) -> bool:
    return SCENARIOS[scenario].get("variant") == "async"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_resource_is_there(synths: dict[str, Synth], scenario: str) -> None:
    synth = synths[scenario]
    t = template(synth)
    t.resource_count_is("AWS::S3::Bucket", 2)  # tracks and their access logs
    t.resource_count_is("AWS::S3::BucketPolicy", 2)
    assert len([k for k in synth.resources("AWS::Lambda::Function") if "Service" in k]) == 1
    t.resource_count_is("AWS::ApiGateway::RestApi", 1)
    t.resource_count_is("AWS::ApiGateway::Method", 4 if is_async(scenario) else 1)
    t.resource_count_is("AWS::ApiGateway::RequestValidator", 1)
    t.resource_count_is("AWS::ApiGateway::Model", 1)
    with_sagemaker = scenario != "lambda"
    for kind in SAGEMAKER:
        t.resource_count_is(kind, 1 if with_sagemaker else 0)
    with_key = SCENARIOS[scenario].get("api_key") != "false"
    t.resource_count_is("AWS::ApiGateway::ApiKey", 1 if with_key else 0)
    t.resource_count_is("AWS::ApiGateway::UsagePlan", 1 if with_key else 0)
    outputs = synth.template["Outputs"]
    assert {"GenerateUrl", "BucketName", "Variant"} <= set(outputs)
    assert ("JobsUrl" in outputs) == is_async(scenario)
    assert ("EndpointName" in outputs) == with_sagemaker and ("ApiKeyId" in outputs) == with_key


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_post_generate_is_wired_to_the_function(synths: dict[str, Synth], scenario: str) -> None:
    synth = synths[scenario]
    function_id = logical_id(synth, "AWS::Lambda::Function", "Service")
    props = methods(synth)[("POST", "/generate")]
    assert props["ApiKeyRequired"] is (SCENARIOS[scenario].get("api_key") != "false")
    integration = props["Integration"]
    assert (integration["Type"], integration["IntegrationHttpMethod"]) == ("AWS_PROXY", "POST")
    assert {"Fn::GetAtt": [function_id, "Arn"]} in integration["Uri"]["Fn::Join"][1]
    timeout = int(SCENARIOS[scenario].get("api_timeout", 29))
    assert integration["TimeoutInMillis"] == timeout * 1000
    validator_id, validator = synth.one("AWS::ApiGateway::RequestValidator")
    assert validator["Properties"]["ValidateRequestBody"] is True
    assert props["RequestValidatorId"] == {"Ref": validator_id}
    model_id, _ = synth.one("AWS::ApiGateway::Model")
    assert props["RequestModels"] == {"application/json": {"Ref": model_id}}
    template(synth).has_resource_properties(
        "AWS::Lambda::Permission",
        {
            "Action": "lambda:InvokeFunction",
            "FunctionName": {"Fn::GetAtt": [function_id, "Arn"]},
            "Principal": "apigateway.amazonaws.com",
        },
    )


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_async_variant_routes_jobs_to_the_function(
    synths: dict[str, Synth], scenario: str
) -> None:
    synth = synths[scenario]
    routes = methods(synth)
    responses = {
        r["Properties"]["ResponseType"]: r["Properties"]["ResponseTemplates"]["application/json"]
        for r in synth.resources("AWS::ApiGateway::GatewayResponse").values()
    }
    no_route = responses["MISSING_AUTHENTICATION_TOKEN"]
    if not is_async(scenario):
        assert set(routes) == {("POST", "/generate")}
        assert "jobs need the async variant" in no_route
        return
    assert set(routes) == {
        ("POST", "/generate"), ("POST", "/jobs"), ("GET", "/jobs/{id}"), ("DELETE", "/jobs/{id}"),
    }  # fmt: skip
    function_id = logical_id(synth, "AWS::Lambda::Function", "Service")
    validator_id, _ = synth.one("AWS::ApiGateway::RequestValidator")
    model_id, _ = synth.one("AWS::ApiGateway::Model")
    for (verb, _), props in routes.items():
        integration = props["Integration"]
        assert (integration["Type"], integration["IntegrationHttpMethod"]) == ("AWS_PROXY", "POST")
        assert {"Fn::GetAtt": [function_id, "Arn"]} in integration["Uri"]["Fn::Join"][1]
        assert props["ApiKeyRequired"] is True and props["RequestValidatorId"] == {
            "Ref": validator_id
        }
        if verb == "POST":  # POST /jobs takes the body /generate takes, validated alike
            assert props["RequestModels"] == {"application/json": {"Ref": model_id}}
        else:
            assert "RequestModels" not in props
            assert props["RequestParameters"] == {"method.request.path.id": True}
    # each route may invoke the function: API Gateway's permission names its method and path
    permitted = [
        json.dumps(p["Properties"]["SourceArn"])
        for p in synth.resources("AWS::Lambda::Permission").values()
        if p["Properties"]["Principal"] == "apigateway.amazonaws.com"
    ]
    for verb, path in routes:  # a path parameter is a wildcard there
        assert any(f"/{verb}{path.replace('{id}', '*')}" in arn for arn in permitted), verb
    assert "POST /jobs, GET and DELETE /jobs/{id}" in no_route and "cannot stream" in no_route
    assert "jobs" in json.dumps(synth.template["Outputs"]["JobsUrl"]["Value"])


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_api_is_throttled_logged_and_answers_errors_as_json(
    synths: dict[str, Synth], scenario: str
) -> None:
    synth = synths[scenario]
    rate = float(SCENARIOS[scenario].get("throttle_rate", 5))
    burst = int(SCENARIOS[scenario].get("throttle_burst", 10))
    _, stage = synth.one("AWS::ApiGateway::Stage")
    (settings,) = stage["Properties"]["MethodSettings"]
    assert (settings["ThrottlingRateLimit"], settings["ThrottlingBurstLimit"]) == (rate, burst)
    assert settings["LoggingLevel"] == "ERROR"
    assert "DestinationArn" in stage["Properties"]["AccessLogSetting"]
    _, api = synth.one("AWS::ApiGateway::RestApi")
    assert api["Properties"]["EndpointConfiguration"]["Types"] == ["REGIONAL"]
    responses = {
        r["Properties"]["ResponseType"]: r["Properties"]
        for r in synth.resources("AWS::ApiGateway::GatewayResponse").values()
    }
    assert responses["BAD_REQUEST_BODY"]["StatusCode"] == "422"
    assert responses["THROTTLED"]["ResponseParameters"] == {
        "gatewayresponse.header.Retry-After": "'1'"
    }
    assert responses["INTEGRATION_TIMEOUT"]["StatusCode"] == "504"
    assert responses["INVALID_API_KEY"]["StatusCode"] == "401"  # as the local API answers
    assert "StatusCode" not in responses["DEFAULT_4XX"]  # other refusals keep their status
    for properties in responses.values():
        assert '"error":' in properties["ResponseTemplates"]["application/json"]
    if SCENARIOS[scenario].get("api_key") != "false":
        _, plan = synth.one("AWS::ApiGateway::UsagePlan")
        throttle = plan["Properties"]["Throttle"]
        assert (throttle["RateLimit"], throttle["BurstLimit"]) == (rate, burst)


@pytest.mark.parametrize("scenario", ["serverless", "realtime", "async", "options"])
def test_the_model_tier_follows_the_variant(synths: dict[str, Synth], scenario: str) -> None:
    synth = synths[scenario]
    variant = SCENARIOS[scenario].get("variant", "serverless")
    _, config = synth.one("AWS::SageMaker::EndpointConfig")
    (production,) = config["Properties"]["ProductionVariants"]
    _, model = synth.one("AWS::SageMaker::Model")
    container = model["Properties"]["PrimaryContainer"]
    assert "container-assets" in container["Image"]["Fn::Sub"]  # the image built from the repo
    environment = container["Environment"]
    if variant == "serverless":
        assert production["ServerlessConfig"] == {"MemorySizeInMB": 6144, "MaxConcurrency": 2}
        assert "InstanceType" not in production
        assert environment["TUNESMITH_MAX_RESPONSE_BYTES"] == "4000000"  # 4 MB payloads
        assert environment["TUNESMITH_DEVICE"] == "cpu"
    else:
        assert "ServerlessConfig" not in production
        instance = SCENARIOS[scenario].get("instance_type", "ml.g4dn.xlarge")
        assert (production["InstanceType"], production["InitialInstanceCount"]) == (instance, 1)
        gpu = instance.startswith("ml.g")
        assert environment["TUNESMITH_DEVICE"] == ("cuda" if gpu else "cpu")
    limit = {"serverless": 4_000_000, "realtime": 6291456, "async": 1024**3}[variant]
    assert environment["TUNESMITH_MAX_RESPONSE_BYTES"] == str(limit)
    longest, _, upload = LIMITS[scenario]
    assert environment["TUNESMITH_MAX_DURATION"] == longest  # the function's limit too
    assert environment["TUNESMITH_MAX_UPLOAD_BYTES"] == upload
    bucket = logical_id(synth, "AWS::S3::Bucket", "StorageTracks")
    if variant == "async":
        output = config["Properties"]["AsyncInferenceConfig"]["OutputConfig"]
        assert output["S3OutputPath"] == {
            "Fn::Join": ["", ["s3://", {"Ref": bucket}, "/music-output"]]
        }
        assert output["S3FailurePath"] == {
            "Fn::Join": ["", ["s3://", {"Ref": bucket}, "/music-failures"]]
        }
    else:
        assert "AsyncInferenceConfig" not in config["Properties"]
    _, endpoint = synth.one("AWS::SageMaker::Endpoint")
    assert endpoint["Properties"]["EndpointName"] == f"tunesmith-{variant}"


def function(synth: Synth) -> dict[str, Any]:
    """The POST /generate function (not the bucket auto-delete provider, when there is one)."""
    return synth.template["Resources"][logical_id(synth, "AWS::Lambda::Function", "Service")]


def test_the_lambda_variant_runs_the_engine_in_a_container_image(
    synths: dict[str, Synth],
) -> None:
    synth = synths["lambda"]
    function_ = function(synth)
    props = function_["Properties"]
    assert props["PackageType"] == "Image" and "Runtime" not in props
    assert "container-assets" in props["Code"]["ImageUri"]["Fn::Sub"]
    assert (props["MemorySize"], props["Timeout"]) == (10240, 900)
    environment = props["Environment"]["Variables"]
    assert "TUNESMITH_ENDPOINT_NAME" not in environment  # no SageMaker: the engine is in here
    assert environment["TUNESMITH_DEVICE"] == "cpu"
    longest, time_limit, upload = LIMITS["lambda"]
    assert (environment["TUNESMITH_VARIANT"], environment["TUNESMITH_TIME_LIMIT"]) == (
        "lambda", time_limit,
    )  # fmt: skip
    assert environment["TUNESMITH_MAX_DURATION"] == longest
    assert environment["TUNESMITH_MAX_UPLOAD_BYTES"] == upload


EXPECTED_ENV = {
    "serverless": {"TUNESMITH_INVOKE_MODE": "sync", "TUNESMITH_INVOKE_TIMEOUT": "27"},
    "realtime": {"TUNESMITH_INVOKE_MODE": "sync", "TUNESMITH_INVOKE_TIMEOUT": "27"},
    "async": {"TUNESMITH_INVOKE_MODE": "async", "TUNESMITH_INVOKE_TIMEOUT": "3600"},
    "options": {"TUNESMITH_INVOKE_MODE": "sync", "TUNESMITH_INVOKE_TIMEOUT": "65"},
}


@pytest.mark.parametrize("scenario", EXPECTED_ENV)
def test_the_function_is_the_handler_configured_for_this_deployment(
    synths: dict[str, Synth], scenario: str
) -> None:
    synth = synths[scenario]
    props = function(synth)["Properties"]
    assert props["Handler"] == "tunesmith.aws.lambda_handler.handler"
    assert props["Runtime"].startswith("python3.")
    endpoint = logical_id(synth, "AWS::SageMaker::Endpoint", "ModelEndpoint")
    bucket = logical_id(synth, "AWS::S3::Bucket", "StorageTracks")
    presigned = SCENARIOS[scenario].get("url_mode") == "presigned"
    longest, time_limit, upload = LIMITS[scenario]
    assert props["Environment"]["Variables"] == {
        "TUNESMITH_S3_BUCKET": {"Ref": bucket},
        "TUNESMITH_S3_PREFIX": "music-output/",
        "TUNESMITH_URL_MODE": "presigned" if presigned else "public",
        "TUNESMITH_MAX_DURATION": longest,
        "TUNESMITH_MAX_UPLOAD_BYTES": upload,
        "TUNESMITH_VARIANT": SCENARIOS[scenario].get("variant", "serverless"),
        "TUNESMITH_TIME_LIMIT": time_limit,
        "TUNESMITH_ENDPOINT_NAME": {"Fn::GetAtt": [endpoint, "EndpointName"]},
        **EXPECTED_ENV[scenario],
    }
    # the function outlives its wait for the endpoint (to store the track or answer 504)
    assert props["Timeout"] > int(EXPECTED_ENV[scenario]["TUNESMITH_INVOKE_TIMEOUT"]) or (
        scenario == "async" and props["Timeout"] == 30
    )


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_no_s3_or_sagemaker_permission_has_a_wildcard_resource(
    synths: dict[str, Synth], scenario: str
) -> None:
    for policy, statement in statements(synths[scenario]):
        actions = as_list(statement["Action"])
        if any(a.split(":")[0] in ("s3", "sagemaker") for a in actions):
            assert statement["Effect"] == "Allow", (policy, statement)
            assert "*" not in as_list(statement["Resource"]), (policy, statement)
            assert not any(a.endswith("*") for a in actions), (policy, statement)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_function_may_invoke_this_endpoint_and_write_this_prefix_only(
    synths: dict[str, Synth], scenario: str
) -> None:
    synth = synths[scenario]
    variant = SCENARIOS[scenario].get("variant", "serverless")
    presigned = SCENARIOS[scenario].get("url_mode") == "presigned"
    granted: dict[str, list[Any]] = {}
    for policy, statement in statements(synth):
        if policy.startswith("ServiceFunctionRole"):
            for action in as_list(statement["Action"]):
                granted.setdefault(action, []).extend(as_list(statement["Resource"]))
    tracks = bucket_objects(synth)
    expected: dict[str, list[Any]] = {}
    if variant != "async":
        expected |= {"s3:PutObject": [tracks], "s3:DeleteObject": [tracks]}
        if presigned:
            expected["s3:GetObject"] = [tracks]
    else:  # SageMaker writes the track; forms are queued, jobs recorded, outcomes read
        inputs = bucket_objects(synth, "music-inputs/")
        jobs = bucket_objects(synth, "music-jobs/")
        failures = bucket_objects(synth, "music-failures/")
        bucket = logical_id(synth, "AWS::S3::Bucket", "StorageTracks")
        expected |= {
            "s3:PutObject": [inputs, jobs],
            "s3:DeleteObject": [inputs],
            "s3:GetObject": [jobs, tracks, failures],
            "s3:ListBucket": [{"Fn::GetAtt": [bucket, "Arn"]}],  # a missing object is 404
        }
    if variant != "lambda":
        endpoint = logical_id(synth, "AWS::SageMaker::Endpoint", "ModelEndpoint")
        action = "InvokeEndpointAsync" if variant == "async" else "InvokeEndpoint"
        expected[f"sagemaker:{action}"] = [{"Ref": endpoint}]  # Ref is the endpoint's ARN
    logs = {a: r for a, r in granted.items() if a.startswith("logs:")}
    assert set(logs) == {"logs:CreateLogStream", "logs:PutLogEvents"}
    found = {a: sorted(map(str, r)) for a, r in granted.items() if not a.startswith("logs:")}
    assert found == {a: sorted(map(str, r)) for a, r in expected.items()}


def test_the_async_endpoint_may_write_only_the_track_and_failure_prefixes(
    synths: dict[str, Synth],
) -> None:
    synth = synths["async"]
    s3_grants = [
        s for p, s in statements(synth)
        if p.startswith("ModelExecutionRole") and "s3:PutObject" in as_list(s["Action"])
    ]  # fmt: skip
    (grant,) = s3_grants
    expected = [bucket_objects(synth), bucket_objects(synth, "music-failures/")]
    assert sorted(map(str, grant["Resource"])) == sorted(map(str, expected))
    reads = [
        s for p, s in statements(synth)
        if p.startswith("ModelExecutionRole") and "s3:GetObject" in as_list(s["Action"])
    ]  # fmt: skip
    assert [(r["Action"], r["Resource"]) for r in reads] == [
        ("s3:GetObject", bucket_objects(synth, "music-inputs/"))
    ]  # the queued forms only
    for scenario in ("serverless", "realtime"):
        for policy, statement in statements(synths[scenario]):
            if policy.startswith("ModelExecutionRole"):
                assert not any(a.startswith("s3:") for a in as_list(statement["Action"]))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_forms_reach_the_function_intact_and_async_inputs_expire(
    synths: dict[str, Synth], scenario: str
) -> None:
    synth = synths[scenario]
    _, api = synth.one("AWS::ApiGateway::RestApi")
    assert api["Properties"]["BinaryMediaTypes"] == ["multipart/form-data"]
    # JSON Schema for JSON only: a content type with no model mapped is not validated
    for (verb, _), props in methods(synth).items():
        if verb == "POST":
            assert set(props["RequestModels"]) == {"application/json"}
    bucket = synth.template["Resources"][logical_id(synth, "AWS::S3::Bucket", "StorageTracks")]
    rules = {r["Id"]: r for r in bucket["Properties"]["LifecycleConfiguration"]["Rules"]}
    if SCENARIOS[scenario].get("variant") == "async":
        assert rules["ExpireInputs"] == {
            "Id": "ExpireInputs", "Prefix": "music-inputs/", "ExpirationInDays": 1,
            "Status": "Enabled",
        }  # fmt: skip
    else:
        assert "ExpireInputs" not in rules


def test_public_mode_opens_the_track_prefix_only(synths: dict[str, Synth]) -> None:
    synth = synths["serverless"]
    bucket_id = logical_id(synth, "AWS::S3::Bucket", "StorageTracks")
    bucket = synth.template["Resources"][bucket_id]
    assert bucket["Properties"]["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": False,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": False,
    }
    assert bucket["DeletionPolicy"] == "Retain"  # tracks outlive `cdk destroy` by default
    policy = next(
        p for p in synth.resources("AWS::S3::BucketPolicy").values()
        if p["Properties"]["Bucket"] == {"Ref": bucket_id}
    )  # fmt: skip
    document = policy["Properties"]["PolicyDocument"]["Statement"]
    public = [s for s in document if s.get("Principal") == {"AWS": "*"} and s["Effect"] == "Allow"]
    assert public == [
        {
            "Action": "s3:GetObject",
            "Effect": "Allow",
            "Principal": {"AWS": "*"},
            "Resource": bucket_objects(synth),
            "Sid": "PublicReadOfTracks",
        }
    ]
    tls = [s for s in document if s["Effect"] == "Deny"]
    assert {"Bool": {"aws:SecureTransport": "false"}} in [s["Condition"] for s in tls]
    assert "LifecycleConfiguration" in bucket["Properties"]
    assert bucket["Properties"]["LoggingConfiguration"]["LogFilePrefix"] == "tracks/"


def test_presigned_mode_blocks_all_public_access_and_options_apply(
    synths: dict[str, Synth],
) -> None:
    synth = synths["options"]
    bucket_id = logical_id(synth, "AWS::S3::Bucket", "StorageTracks")
    bucket = synth.template["Resources"][bucket_id]
    assert set(bucket["Properties"]["PublicAccessBlockConfiguration"].values()) == {True}
    for policy in synth.resources("AWS::S3::BucketPolicy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            assert not (statement["Effect"] == "Allow" and statement["Principal"] == {"AWS": "*"})
    rules = {r["Id"]: r for r in bucket["Properties"]["LifecycleConfiguration"]["Rules"]}
    assert rules["ExpireTracks"]["ExpirationInDays"] == 30
    assert rules["ExpireTracks"]["Prefix"] == "music-output/"
    assert bucket["DeletionPolicy"] == "Delete"  # retain_bucket=false, emptied on destroy
    Template.from_json(synth.template).resource_count_is("Custom::S3AutoDeleteObjects", 2)
    model = synth.resources("AWS::ApiGateway::Model")
    (schema,) = [m["Properties"]["Schema"] for m in model.values()]
    assert schema["properties"]["duration"]["maximum"] == 20


def test_the_stack_can_be_inspected_with_cdk_assertions(synths: dict[str, Synth]) -> None:
    t = template(synths["serverless"])
    t.has_resource_properties(
        "AWS::ApiGateway::Method",
        {"HttpMethod": "POST", "AuthorizationType": "NONE", "ApiKeyRequired": True},
    )
    t.has_resource_properties(
        "AWS::SageMaker::EndpointConfig",
        {"ProductionVariants": [Match.object_like({"VariantName": "AllTraffic"})]},
    )
