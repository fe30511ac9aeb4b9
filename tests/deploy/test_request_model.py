"""API Gateway's request model and error templates, as synthesized.

The gateway validates with JSON Schema draft 4 before the function runs; a real draft-4
validator checks here that the synthesized model takes every good request and refuses the
bad ones the contract refuses, so the gateway can never turn away a request the function
would have served.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from jsonschema import Draft4Validator

from bad_requests import BAD_BODIES
from cdk_synth import Synth
from tunesmith.schema import MAX_PROMPT_CHARS, MAX_SEED, parse_generate_request
from tunesmith_deploy.request_model import _translate

GOOD_BODIES: list[dict[str, Any]] = [
    {"prompt": "upbeat electronic dance music with heavy bass", "duration": 30},
    {"prompt": "a"},
    {"prompt": "x" * MAX_PROMPT_CHARS, "duration": 1},
    {"prompt": "lo-fi", "duration": 12.5, "seed": 0, "format": "flac"},
    {"prompt": "lo-fi", "seed": MAX_SEED},
    {"prompt": "jazz", "seed": None, "temperature": 0.01, "top_k": 0, "top_p": 1},
    {"prompt": "jazz", "guidance_scale": 0, "top_k": 2048, "temperature": 10},
    *({"prompt": "a", "format": fmt} for fmt in ("wav", "mp3", "ogg", "opus")),
    *({"prompt": "a", "normalization": n} for n in ("peak", "rms", "clip", "none")),
    {"prompt": "a", "normalization": "loudness", "loudness_lufs": -70},
    {"prompt": "a", "normalization": "loudness", "loudness_lufs": -1.0},
    {"prompt": "a", "normalization": "loudness", "loudness_lufs": -23.5},
]


@pytest.fixture(scope="module")
def validator(synths: dict[str, Synth]) -> Draft4Validator:
    (model,) = synths["serverless"].resources("AWS::ApiGateway::Model").values()
    assert model["Properties"]["ContentType"] == "application/json"
    schema = model["Properties"]["Schema"]
    assert schema["$schema"] == "http://json-schema.org/draft-04/schema#"
    Draft4Validator.check_schema(schema)
    return Draft4Validator(schema)


@pytest.mark.parametrize("body", GOOD_BODIES)
def test_the_gateway_takes_every_request_the_contract_takes(
    validator: Draft4Validator, body: dict[str, Any]
) -> None:
    parse_generate_request(body, max_duration=30)  # the function takes it...
    assert list(validator.iter_errors(body)) == []  # ...so the gateway must


@pytest.mark.parametrize(("body", "field"), BAD_BODIES)
def test_the_gateway_refuses_the_bad_requests_too(
    validator: Draft4Validator, body: dict[str, Any], field: str
) -> None:
    errors = list(validator.iter_errors(body))
    assert errors, body
    named = {str(e.path[0]) if e.path else e.message for e in errors}
    assert any(field in name for name in named), named


def test_an_untranslated_schema_keyword_stops_synthesis() -> None:
    with pytest.raises(ValueError, match="oneOf"):
        _translate({"type": "object", "oneOf": [{"type": "string"}]})


def test_gateway_error_templates_render_to_tunesmiths_error_json(
    synths: dict[str, Synth],
) -> None:
    """Gateway templates only substitute variables (no VTL); messageString comes quoted."""
    for response in synths["serverless"].resources("AWS::ApiGateway::GatewayResponse").values():
        template = response["Properties"]["ResponseTemplates"]["application/json"]
        assert "$util" not in template and "validationErrorString" not in template
        rendered = template.replace("$context.error.messageString", json.dumps('Say "hi"'))
        body = json.loads(rendered)
        assert set(body) >= {"error", "message"}, template
        if response["Properties"]["ResponseType"] == "BAD_REQUEST_BODY":
            assert body["error"] == "invalid_request" and body["fields"] == []
            assert "prompt" in body["message"] and "1 to 30" in body["message"]
