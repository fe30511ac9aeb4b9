"""Every value the request schema accepts renders finite audio of the asked length, or is a 422
naming the field: extremes by hand, then hypothesis over the schema's ranges and any text."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from live_server import serve
from tunesmith.engine import MusicGenEngine
from tunesmith.errors import InvalidRequest
from tunesmith.render import render
from tunesmith.schema import MAX_PROMPT_CHARS, parse_generate_request

MAX_DURATION = 2.0  # the server limit these requests are checked against; keeps them quick
SAMPLE_RATE = 32000

EXTREMES: list[dict[str, Any]] = [
    {"temperature": 5e-324},  # the smallest positive double
    {"temperature": 1e-300},
    {"temperature": 1e-45, "top_k": 0},  # float32's smallest subnormal
    {"temperature": 1e-38, "top_k": 0, "top_p": 0.5},
    {"temperature": 1e-300, "top_k": 0, "top_p": 1e-12},
    {"temperature": 10.0},
    {"temperature": 10.0, "top_k": 0, "top_p": 1.0, "guidance_scale": 20.0},
    {"temperature": 10.0, "top_k": 2048, "top_p": 1e-12},
    {"top_k": 0, "top_p": 0.0},
    {"top_k": 1},
    {"top_k": 2048, "top_p": 1.0},
    {"top_k": 0, "top_p": 1.0},
    {"guidance_scale": 0.0},
    {"guidance_scale": 1.0},
    {"guidance_scale": 20.0, "temperature": 1e-300},
    {"duration": 1.0, "normalization": "loudness", "loudness_lufs": -1.0},
    {"duration": MAX_DURATION, "normalization": "loudness", "loudness_lufs": -70.0},
    {"normalization": "rms", "format": "opus"},
    {"normalization": "none", "format": "mp3"},
    {"normalization": "clip", "format": "ogg"},
    {"normalization": "peak", "format": "flac"},
]

PROMPTS = [
    "e\u0301\u0302\u0303\u0304" * 400,  # stacked combining marks
    "\u202eموسيقى هادئة\u202c with a \u05e9\u05dc\u05d5\u05dd",  # RTL text and overrides
    "\U0001f3b9\U0001f941\U0001f3b8 \U0001f468\u200d\U0001f469\u200d\U0001f467",  # emoji, ZWJ
    "\U0001f3b5" * MAX_PROMPT_CHARS,  # 2000 four-byte characters
    "\u200b\u200c\u200djazz\ufeff\u2060",  # zero-width characters
    "\x01\x07\x1b[31mred\x7f\x9f",  # control characters
    "\U0010fffd\ufffe\uffff",  # private use and noncharacters
    "x",
]

# what the schema must refuse, naming the prompt: 422s, never a 500
BAD_PROMPTS = ["\ud800 jazz", "jazz \udfff", " \t\n\u3000", "a\x00b", "a" * (MAX_PROMPT_CHARS + 1)]


def expected_frames(duration: float) -> int:
    return round(duration * SAMPLE_RATE)


def check_renders(engine: MusicGenEngine, body: dict[str, Any]) -> bool:
    """`body` renders finite audio of its duration (samples and file), or is refused naming
    the prompt (the only field drawn from outside its range); whether it rendered."""
    body = {"prompt": "calm piano", "duration": 1.0, "seed": 7, **body}
    try:
        request = parse_generate_request(body, max_duration=MAX_DURATION)
    except InvalidRequest as exc:
        assert [f.field for f in exc.fields] == ["prompt"], (body, exc.fields)
        return False
    chunks: list[np.ndarray] = []
    rendered = render(engine, request, on_audio=chunks.append)
    samples = np.concatenate(chunks)
    assert samples.shape == (expected_frames(request.duration), 1), body
    assert np.isfinite(samples).all(), body
    decoded, rate = soundfile.read(io.BytesIO(rendered.data), dtype="float32", always_2d=True)
    assert rate == rendered.record.sample_rate
    assert np.isfinite(decoded).all(), body
    assert decoded.shape[0] == math.ceil(samples.shape[0] * rate / SAMPLE_RATE), body  # Opus: 48k
    if request.format in ("wav", "flac"):
        assert np.max(np.abs(decoded)) <= 10 ** (-1 / 20), body  # the -1 dBTP ceiling
    assert math.isclose(rendered.record.duration, request.duration, abs_tol=1 / SAMPLE_RATE)
    return True


@pytest.mark.parametrize("body", EXTREMES, ids=lambda b: ",".join(f"{k}={v}" for k, v in b.items()))
def test_extreme_parameters_render_finite_audio(
    tiny_engine: MusicGenEngine, body: dict[str, Any]
) -> None:
    check_renders(tiny_engine, body)


@pytest.mark.parametrize("prompt", PROMPTS, ids=range(len(PROMPTS)))
def test_odd_unicode_prompts_render(tiny_engine: MusicGenEngine, prompt: str) -> None:
    check_renders(tiny_engine, {"prompt": prompt})


@pytest.mark.parametrize("prompt", BAD_PROMPTS, ids=range(len(BAD_PROMPTS)))
def test_unusable_prompts_are_refused_by_name(prompt: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_generate_request({"prompt": prompt}, max_duration=MAX_DURATION)
    assert [f.field for f in caught.value.fields] == ["prompt"]


def edges(low: float, high: float, *special: float, exclude_low: bool = False) -> Any:
    """Floats in the range, with its ends and the given values drawn often."""
    ends = [v for v in (low, high, *special) if not (exclude_low and v == low)]
    within = st.floats(low, high, exclude_min=exclude_low, allow_nan=False)
    return st.one_of(st.sampled_from(ends), within)


# any code point, lone surrogates included: those must be refused, not crash the tokenizer
ANY_TEXT = st.text(st.characters(exclude_categories=()), min_size=1, max_size=MAX_PROMPT_CHARS)

REQUESTS = st.fixed_dictionaries(
    {
        "prompt": st.one_of(st.sampled_from(PROMPTS + BAD_PROMPTS), ANY_TEXT),
        "duration": edges(1.0, MAX_DURATION),
        "seed": st.integers(0, 2**63 - 1),
        "temperature": edges(0.0, 10.0, 5e-324, 1e-300, 1e-45, 1e-38, exclude_low=True),
        "top_k": st.one_of(st.sampled_from([0, 1, 2048]), st.integers(0, 2048)),
        "top_p": edges(0.0, 1.0, 1e-12, 1 - 1e-12),
        "guidance_scale": edges(0.0, 20.0, 1.0),
        "normalization": st.sampled_from(["peak", "loudness", "rms", "clip", "none"]),
        "loudness_lufs": edges(-70.0, -1.0),
        "format": st.sampled_from(["wav", "flac", "mp3", "ogg", "opus"]),
    }
)


# no explain phase (re-running a failing example its way costs minutes here), and no example
# database: nothing is written into the checkout
@settings(
    max_examples=100,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow],
)
@given(body=REQUESTS)
def test_any_accepted_request_renders_finite_audio(
    tiny_engine: MusicGenEngine, body: dict[str, Any]
) -> None:
    event("rendered" if check_renders(tiny_engine, body) else "refused")


@pytest.fixture(scope="module")
def int8_engine(tiny_model_dir: Path) -> Iterator[MusicGenEngine]:
    engine = MusicGenEngine(str(tiny_model_dir), device="cpu", precision="int8")
    engine.setup()
    try:
        yield engine
    finally:
        engine.close()


@pytest.mark.parametrize(
    "body",
    [
        {"temperature": 5e-324, "guidance_scale": 20.0},
        {"temperature": 1e-38, "top_k": 0, "top_p": 1e-12},
        {"temperature": 10.0, "top_k": 0, "top_p": 1.0, "guidance_scale": 0.0},
        {"prompt": "\U0001f3b5" * MAX_PROMPT_CHARS, "top_k": 1},
    ],
    ids=range(4),
)
def test_int8_extremes_render_finite_audio(
    int8_engine: MusicGenEngine, body: dict[str, Any]
) -> None:
    assert int8_engine.precision == "int8"
    check_renders(int8_engine, body)


def form(fields: dict[str, bytes]) -> tuple[bytes, str]:
    """A multipart/form-data body of raw field bytes, and its content type."""
    boundary = "numerics-boundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        + value
        + b"\r\n"
        for name, value in fields.items()
    ]
    return b"".join(
        parts
    ) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


HTTP_PROMPTS: list[
    tuple[str | bytes, bool]
] = [  # (JSON text of the prompt, or raw form bytes; whether it renders)
    ('"\\ud800 jazz"', False),  # a lone surrogate, escaped: valid JSON, not valid text
    ('"jazz \\udfff"', False),
    ('"\\ud83c\\udfb5 jazz"', True),  # an escaped surrogate pair: one emoji
    (json.dumps("\U0001f3b5" * MAX_PROMPT_CHARS), True),
    (b"\xed\xa0\x80 jazz", False),  # a surrogate as UTF-8 bytes (CESU-8): not UTF-8
    (b"\xff\xfe jazz", False),
    (("e\u0301" * 1000).encode(), True),
    ("\u202e\u05e9\u05dc\u05d5\u05dd \U0001f468\u200d\U0001f469\u200d\U0001f467".encode(), True),
]


def test_odd_prompts_over_http_render_or_are_refused_by_name(
    tmp_path: Path, tiny_engine: MusicGenEngine
) -> None:
    with serve(tmp_path, tiny_engine, max_duration=MAX_DURATION) as api:
        for prompt, renders in HTTP_PROMPTS:
            if isinstance(prompt, str):
                content = f'{{"prompt": {prompt}, "duration": 1, "seed": 3}}'.encode()
                kind = "application/json"
            else:
                content, kind = form({"prompt": prompt, "duration": b"1", "seed": b"3"})
            response = api.client.post("/generate", content=content, headers={"content-type": kind})
            if renders:
                assert response.status_code == 200, (prompt, response.text)
                audio = api.client.get(response.json()["public_url"]).content
                samples, rate = soundfile.read(io.BytesIO(audio), dtype="float32")
                assert rate == SAMPLE_RATE and samples.shape[0] == SAMPLE_RATE
                assert np.isfinite(samples).all()
            else:
                assert response.status_code == 422, (prompt, response.text)
                assert [f["field"] for f in response.json()["fields"]] == ["prompt"]
