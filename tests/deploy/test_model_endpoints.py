"""Several models in one deployment (``-c model=A,B``, `cdk_synth.MODEL_SCENARIOS`): one
endpoint per model, each from an image holding its checkpoint and with its own scaling; the
function given the map and allowed to invoke exactly those endpoints; ``GET /models``; and the
default model's endpoint exactly the single-model deployment's, so adding a model replaces
nothing already deployed."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from cdk_synth import MODEL_SCENARIOS, MODELS, Synth
from tunesmith_deploy.config import DeployConfig

SMALL, MELODY = MODELS.split(",")
# scenario -> its single-model twin, and the endpoint names it must have, by model id
ENDPOINTS = {
    "models": ("serverless", {"musicgen-small": "tunesmith-serverless",
                              "musicgen-melody": "tunesmith-serverless-musicgen-melody"}),
    "models-async": ("async", {"musicgen-small": "tunesmith-async",
                               "musicgen-melody": "tunesmith-async-musicgen-melody"}),
}  # fmt: skip
SAGEMAKER = ["AWS::SageMaker::Model", "AWS::SageMaker::EndpointConfig", "AWS::SageMaker::Endpoint"]


def resource(synth: Synth, value: Any) -> dict[str, Any]:
    """The resource a ``Ref`` or ``Fn::GetAtt`` names."""
    logical_id = value["Ref"] if "Ref" in value else value["Fn::GetAtt"][0]
    found: dict[str, Any] = synth.template["Resources"][logical_id]
    return found


def image_models(synth: Synth) -> dict[str, str]:
    """Each Docker image asset's hash -> the MODEL it is built with (the cloud assembly's)."""
    assets = json.loads((synth.outdir / "Tunesmith.assets.json").read_text())
    return {
        digest: image["source"]["dockerBuildArgs"]["MODEL"]
        for digest, image in assets["dockerImages"].items()
    }


def endpoint_checkpoints(synth: Synth) -> dict[str, str]:
    """Endpoint name -> the checkpoint baked into the image its model runs."""
    built = image_models(synth)
    found = {}
    for endpoint in synth.resources("AWS::SageMaker::Endpoint").values():
        config = resource(synth, endpoint["Properties"]["EndpointConfigName"])
        (variant,) = config["Properties"]["ProductionVariants"]
        model = resource(synth, variant["ModelName"])
        image = model["Properties"]["PrimaryContainer"]["Image"]["Fn::Sub"]
        (digest,) = [d for d in built if image.endswith(f":{d}")]
        found[endpoint["Properties"]["EndpointName"]] = built[digest]
    return found


def function_environment(synth: Synth) -> dict[str, Any]:
    (function,) = [
        r for k, r in synth.resources("AWS::Lambda::Function").items() if k.startswith("Service")
    ]
    variables: dict[str, Any] = function["Properties"]["Environment"]["Variables"]
    return variables


def rendered(synth: Synth, value: Any) -> str:
    """A string, an endpoint's name or a ``Fn::Join`` of those, as CloudFormation renders it."""
    if isinstance(value, str):
        return value
    if "Fn::Join" not in value:
        name: str = resource(synth, value)["Properties"]["EndpointName"]
        return name
    delimiter, parts = value["Fn::Join"]
    return str(delimiter).join(rendered(synth, part) for part in parts)


@pytest.mark.parametrize("scenario", ENDPOINTS)
def test_each_model_gets_an_endpoint_of_its_own_from_its_own_image(
    synths: dict[str, Synth], scenario: str
) -> None:
    synth = synths[scenario]
    _, names = ENDPOINTS[scenario]
    for kind in SAGEMAKER:
        assert len(synth.resources(kind)) == 2, kind
    assert endpoint_checkpoints(synth) == {
        names["musicgen-small"]: SMALL, names["musicgen-melody"]: MELODY,
    }  # fmt: skip
    roles = {
        json.dumps(r["Properties"]["ExecutionRoleArn"])
        for r in synth.resources("AWS::SageMaker::Model").values()
    }
    assert len(roles) == 2  # each endpoint's role may write its own log group only
    for name in names.values():
        assert len(name) <= 63 and re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9])*", name)


def test_each_async_endpoint_scales_on_its_own_queue(synths: dict[str, Synth]) -> None:
    synth = synths["models-async"]
    _, names = ENDPOINTS["models-async"]
    targets = synth.resources("AWS::ApplicationAutoScaling::ScalableTarget").values()
    assert sorted(rendered(synth, t["Properties"]["ResourceId"]) for t in targets) == sorted(
        f"endpoint/{name}/variant/AllTraffic" for name in names.values()
    )
    alarms = [
        a["Properties"] for a in synth.resources("AWS::CloudWatch::Alarm").values()
        if a["Properties"]["MetricName"] == "HasBacklogWithoutCapacity"
    ]  # fmt: skip
    watched = [rendered(synth, a["Dimensions"][0]["Value"]) for a in alarms]
    assert sorted(watched) == sorted(names.values())  # from zero, each on its own
    outputs = {
        json.dumps(c["Properties"]["AsyncInferenceConfig"]["OutputConfig"])
        for c in synth.resources("AWS::SageMaker::EndpointConfig").values()
    }
    assert len(outputs) == 1  # one output path: a job's status is read there, whichever model


@pytest.mark.parametrize("scenario", ENDPOINTS)
def test_the_function_routes_by_model_and_may_invoke_exactly_those_endpoints(
    synths: dict[str, Synth], scenario: str
) -> None:
    synth = synths[scenario]
    _, names = ENDPOINTS[scenario]
    environment = function_environment(synth)
    assert "TUNESMITH_ENDPOINT_NAME" not in environment
    routes = json.loads(rendered(synth, environment["TUNESMITH_ENDPOINTS"]))
    assert list(routes.items()) == list(names.items())  # the default first
    invoked = [
        (statement["Action"], resource)
        for logical_id, policy in synth.resources("AWS::IAM::Policy").items()
        if logical_id.startswith("ServiceFunctionRole")
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if str(statement["Action"]).startswith("sagemaker:")
        for resource in (statement["Resource"] if isinstance(statement["Resource"], list)
                         else [statement["Resource"]])
    ]  # fmt: skip
    action = "sagemaker:InvokeEndpointAsync" if scenario == "models-async" else (
        "sagemaker:InvokeEndpoint"
    )  # fmt: skip
    endpoints = synth.resources("AWS::SageMaker::Endpoint")
    assert sorted(map(json.dumps, invoked)) == sorted(
        json.dumps((action, {"Ref": logical_id})) for logical_id in endpoints
    )
    outputs = synth.template["Outputs"]
    assert json.loads(rendered(synth, outputs["ModelEndpoints"]["Value"])) == routes


@pytest.mark.parametrize("scenario", MODEL_SCENARIOS)
def test_get_models_reaches_the_function(synths: dict[str, Synth], scenario: str) -> None:
    synth = synths[scenario]
    resources = synth.template["Resources"]
    (models,) = [
        k for k, r in synth.resources("AWS::ApiGateway::Resource").items()
        if r["Properties"]["PathPart"] == "models"
    ]  # fmt: skip
    (method,) = [
        m["Properties"] for m in synth.resources("AWS::ApiGateway::Method").values()
        if m["Properties"]["ResourceId"] == {"Ref": models}
    ]  # fmt: skip
    assert (method["HttpMethod"], method["ApiKeyRequired"]) == ("GET", True)
    function_id = next(k for k in resources if k.startswith("ServiceFunction2"))
    assert {"Fn::GetAtt": [function_id, "Arn"]} in method["Integration"]["Uri"]["Fn::Join"][1]
    no_route = [
        r["Properties"]["ResponseTemplates"]["application/json"]
        for r in synth.resources("AWS::ApiGateway::GatewayResponse").values()
        if r["Properties"]["ResponseType"] == "MISSING_AUTHENTICATION_TOKEN"
    ]
    assert "GET /models" in no_route[0]
    assert "models" in json.dumps(synth.template["Outputs"]["ModelsUrl"]["Value"])


@pytest.mark.parametrize("scenario", ENDPOINTS)
def test_the_default_models_endpoint_is_the_single_model_deployments(
    synths: dict[str, Synth], scenario: str
) -> None:
    """Same logical ids, same properties: adding a model updates the stack in place."""
    single = synths[ENDPOINTS[scenario][0]].template["Resources"]
    several = synths[scenario].template["Resources"]
    tier = {k: r for k, r in single.items() if k.startswith("Model")}
    assert {r["Type"] for r in tier.values()} >= set(SAGEMAKER)
    for logical_id, found in tier.items():
        assert several.get(logical_id) == found, logical_id
    single_env = function_environment(synths[ENDPOINTS[scenario][0]])
    assert "TUNESMITH_ENDPOINTS" not in single_env and "TUNESMITH_ENDPOINT_NAME" in single_env
    assert "ModelsUrl" not in synths[ENDPOINTS[scenario][0]].template["Outputs"]


def test_the_lambda_variant_bakes_every_model_into_the_function(
    synths: dict[str, Synth],
) -> None:
    synth = synths["models-lambda"]
    for kind in SAGEMAKER:
        assert synth.resources(kind) == {}
    assert list(image_models(synth).values()) == [MODELS]  # TUNESMITH_MODEL, the default first
    environment = function_environment(synth)
    assert "TUNESMITH_ENDPOINTS" not in environment
    assert "TUNESMITH_ENDPOINT_NAME" not in environment


# -- the choice itself -----------------------------------------------------------------------------


def test_models_may_be_listed_in_cdk_json_or_given_with_spaces() -> None:
    listed = {"model": ["facebook/musicgen-small", "facebook/musicgen-melody"]}
    spaced = {"model": "facebook/musicgen-small, facebook/musicgen-melody"}
    for context in (listed, spaced):
        config = DeployConfig.from_context(context.get)
        assert config.models == {"musicgen-small": SMALL, "musicgen-melody": MELODY}
    assert DeployConfig().models == {"musicgen-small": SMALL}


def test_long_model_ids_get_distinct_endpoint_names_within_sagemakers_limit() -> None:
    long_a, long_b = "org/" + "a" * 70 + "-one", "org/" + "a" * 70 + "-two"
    config = DeployConfig(model=f"{SMALL},{long_a},{long_b}", endpoint_name="x" * 60)
    names = list(config.endpoint_names.values())
    assert names[0] == "x" * 60 and len(set(names)) == 3
    for name in names:
        assert len(name) <= 63 and re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9])*", name), name


@pytest.mark.parametrize(
    "model",
    [
        "a/musicgen-small,b/musicgen-small",  # one id twice
        "facebook/musicgen-small,",  # an empty name
        "facebook/musicgen-small,x/a.b,y/a_b",  # two ids, one endpoint name
    ],
)
def test_a_model_list_that_cannot_be_deployed_is_refused_naming_model(model: str) -> None:
    with pytest.raises(ValueError, match=r"context model="):
        DeployConfig(model=model)
