"""The request contract: every bad input is refused with a message naming its field."""

from __future__ import annotations

import json

import pytest

from tunesmith.errors import InvalidRequest
from tunesmith.schema import MAX_PROMPT_CHARS, GenerateRequest, parse_generate_request


def parse(body: object, max_duration: float = 30) -> GenerateRequest:
    return parse_generate_request(json.dumps(body).encode(), max_duration=max_duration)


def test_seed_request_takes_defaults() -> None:
    request = parse({"prompt": "upbeat electronic dance music with heavy bass", "duration": 30})
    assert request.duration == 30.0
    assert (request.temperature, request.top_k, request.top_p) == (1.0, 250, 0.0)
    assert (request.guidance_scale, request.format, request.seed) == (3.0, "wav", None)
    assert (request.normalization, request.loudness_lufs) == ("peak", -14.0)


def test_all_optional_fields_are_taken() -> None:
    request = parse(
        {
            "prompt": "  calm piano  ",
            "duration": 2.5,
            "seed": 7,
            "temperature": 0.8,
            "top_k": 0,
            "top_p": 0.9,
            "guidance_scale": 1,
            "format": "opus",
            "normalization": "loudness",
            "loudness_lufs": -23,
        }
    )
    assert request.prompt == "calm piano"
    assert (request.seed, request.top_k, request.top_p, request.format) == (7, 0, 0.9, "opus")
    assert (request.normalization, request.loudness_lufs) == ("loudness", -23.0)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"duration": 10}, "prompt"),
        ({"prompt": "", "duration": 10}, "prompt"),
        ({"prompt": "   \n", "duration": 10}, "prompt"),
        ({"prompt": "x" * (MAX_PROMPT_CHARS + 1), "duration": 10}, "prompt"),
        ({"prompt": 123, "duration": 10}, "prompt"),
        ({"prompt": ["a"], "duration": 10}, "prompt"),
        ({"prompt": "a", "duration": 0}, "duration"),
        ({"prompt": "a", "duration": 0.5}, "duration"),
        ({"prompt": "a", "duration": -3}, "duration"),
        ({"prompt": "a", "duration": 31}, "duration"),
        ({"prompt": "a", "duration": "30"}, "duration"),
        ({"prompt": "a", "duration": True}, "duration"),
        ({"prompt": "a", "duration": None}, "duration"),
        ({"prompt": "a", "seed": -1}, "seed"),
        ({"prompt": "a", "seed": 2**63}, "seed"),
        ({"prompt": "a", "seed": 1.5}, "seed"),
        ({"prompt": "a", "temperature": 0}, "temperature"),
        ({"prompt": "a", "top_k": 4096}, "top_k"),
        ({"prompt": "a", "top_k": -1}, "top_k"),
        ({"prompt": "a", "top_p": 1.5}, "top_p"),
        ({"prompt": "a", "guidance_scale": -1}, "guidance_scale"),
        ({"prompt": "a", "format": "aac"}, "format"),
        ({"prompt": "a", "format": "MP3"}, "format"),
        ({"prompt": "a", "normalization": "x"}, "normalization"),
        ({"prompt": "a", "normalization": None}, "normalization"),
        ({"prompt": "a", "loudness_lufs": -71}, "loudness_lufs"),
        ({"prompt": "a", "loudness_lufs": 0}, "loudness_lufs"),
        ({"prompt": "a", "loudness_lufs": "-14"}, "loudness_lufs"),
        ({"prompt": "a", "durration": 10}, "durration"),
    ],
)
def test_bad_field_is_named(body: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse(body)
    assert [f.field for f in caught.value.fields] == [field]
    assert caught.value.status == 422
    assert field in caught.value.message


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_duration_is_refused(literal: str) -> None:
    raw = b'{"prompt": "a", "duration": ' + literal.encode() + b"}"
    with pytest.raises(InvalidRequest) as caught:
        parse_generate_request(raw, max_duration=30)
    assert [f.field for f in caught.value.fields] == ["duration"]


@pytest.mark.parametrize("raw", [b"", b"{", b"[1, 2]", b'"text"', b"\xff\xfe"])
def test_body_must_be_a_json_object(raw: bytes) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_generate_request(raw, max_duration=30)
    assert caught.value.fields[0].field == "body"


def test_server_limit_below_the_contract_limit() -> None:
    assert parse({"prompt": "a", "duration": 12}, max_duration=12).duration == 12
    with pytest.raises(InvalidRequest) as caught:
        parse({"prompt": "a", "duration": 12.5}, max_duration=12)
    assert "at most 12 seconds" in caught.value.message


def test_unknown_and_bad_fields_are_all_reported() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse({"prompt": "", "duration": 5000, "colour": "blue"})
    assert sorted(f.field for f in caught.value.fields) == ["colour", "duration", "prompt"]
    assert caught.value.to_dict()["error"] == "invalid_request"
