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
from tunesmith.errors import InvalidRequest
from tunesmith.schema import MAX_PROMPT_CHARS, MAX_SEED, GenerateRequest, parse_generate_request
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
    {"prompt": "a", "duration": 300, "continuation_start": 0, "continuation_end": 30},
    {"prompt": "a", "continuation_start": 12.5, "continuation_end": None},
    {"prompt": "a", "continuation_end": 0.01},
    {"prompt": "a", "duration": 30, "sections": [{"prompt": "intro", "duration": 10},
                                                 {"prompt": "drop", "duration": 20}]},
    {"prompt": "a", "model": "musicgen-melody"},
]  # fmt: skip
# scenario -> the longest track its model admits (tests/deploy/test_stack.py's LIMITS)
LONGEST = {"serverless": 20, "realtime": 27, "async": 300, "lambda": 20, "options": 20}


def model_schema(synth: Synth) -> dict[str, Any]:
    (model,) = synth.resources("AWS::ApiGateway::Model").values()
    assert model["Properties"]["ContentType"] == "application/json"
    schema: dict[str, Any] = model["Properties"]["Schema"]
    return schema


@pytest.fixture(scope="module")
def validator(synths: dict[str, Synth]) -> Draft4Validator:
    """The async variant's model: it admits the longest tracks, so every other field shows."""
    schema = model_schema(synths["async"])
    assert schema["$schema"] == "http://json-schema.org/draft-04/schema#"
    Draft4Validator.check_schema(schema)
    return Draft4Validator(schema)


@pytest.mark.parametrize("body", GOOD_BODIES)
def test_the_gateway_takes_every_request_the_contract_takes(
    validator: Draft4Validator, body: dict[str, Any]
) -> None:
    parse_generate_request(body, max_duration=300)  # the function takes it...
    assert list(validator.iter_errors(body)) == []  # ...so the gateway must


def test_the_model_has_every_field_of_the_contract(validator: Draft4Validator) -> None:
    assert set(validator.schema["properties"]) == set(GenerateRequest.model_fields)
    assert validator.schema["additionalProperties"] is False


@pytest.mark.parametrize("scenario", LONGEST)
def test_each_variants_model_admits_the_durations_it_can_make(
    synths: dict[str, Synth], scenario: str
) -> None:
    check = Draft4Validator(model_schema(synths[scenario]))
    longest = LONGEST[scenario]
    assert list(check.iter_errors({"prompt": "a", "duration": longest})) == []
    (error,) = check.iter_errors({"prompt": "a", "duration": longest + 0.5})
    assert list(error.path) == ["duration"]


@pytest.mark.parametrize(("body", "field"), BAD_BODIES)
def test_the_gateway_refuses_the_bad_requests_too(
    validator: Draft4Validator, body: dict[str, Any], field: str
) -> None:
    errors = list(validator.iter_errors(body))
    assert errors, body
    named = {str(e.path[0]) if e.path else e.message for e in errors}
    assert any(field in name for name in named), named


def test_sections_are_checked_as_the_contract_checks_them(validator: Draft4Validator) -> None:
    """The contract's nested definitions reach the gateway inlined (it resolves no $ref)."""
    assert "$ref" not in json.dumps(validator.schema)
    for sections in ([{"prompt": "intro", "tempo": 120}], [{"duration": 10}],
                     [{"prompt": "x"}] * 33):  # fmt: skip
        body = {"prompt": "a", "sections": sections}
        with pytest.raises(InvalidRequest):
            parse_generate_request(body, max_duration=300)
        assert list(validator.iter_errors(body)), sections


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
            message = body["message"]
            assert "prompt" in message and "1 to 20 on the serverless variant" in message
            assert "the async variant makes up to 300 s" in message
            assert "multipart/form-data" in message and "input_audio" in message
            assert all(name in message for name in GenerateRequest.model_fields)
