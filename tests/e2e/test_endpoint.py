"""SageMaker's container contract (`tunesmith endpoint`) over real HTTP with the tiny MusicGen."""

from __future__ import annotations

import hashlib
import io
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile

from bad_requests import BAD_BODIES, MALFORMED_BODIES
from endpoint_process import EndpointProcess
from live_server import LiveServer
from model_fixtures import GatedEngine
from tunesmith import __version__
from tunesmith.aws.endpoint import create_endpoint_app
from tunesmith.aws.protocol import CUSTOM_ATTRIBUTES_HEADER, TrackInfo, encode_form
from tunesmith.config import load_settings
from tunesmith.engine import CONTENT_TYPES, MusicGenEngine, kernels

REQUEST = {"prompt": "calm piano melody", "duration": 2}
JSON = {"content-type": "application/json"}
SOUNDFILE_FORMAT = {"wav": "WAV", "flac": "FLAC", "mp3": "MP3", "ogg": "OGG", "opus": "OGG"}


@contextmanager
def container(engine: MusicGenEngine, **settings: Any) -> Iterator[httpx.Client]:
    config = load_settings(model=engine.model_name, **settings)
    with LiveServer(create_endpoint_app(config, engine=engine)) as server:
        yield httpx.Client(base_url=server.base_url, timeout=120)


@pytest.fixture(scope="module")
def client(tiny_engine: MusicGenEngine) -> Iterator[httpx.Client]:
    """One container with default settings for the tests that only send requests."""
    with container(tiny_engine) as running:
        yield running


def invoke(client: httpx.Client, body: Any, **headers: str) -> httpx.Response:
    content = body if isinstance(body, bytes) else None
    return client.post(
        "/invocations",
        content=content,
        json=None if content is not None else body,
        headers={**JSON, **headers},
    )


def test_ping_is_503_until_the_model_is_loaded(tiny_model_dir: Path) -> None:
    engine = GatedEngine(str(tiny_model_dir))
    with container(engine) as client:
        loading = client.get("/ping")
        assert loading.status_code == 503
        assert loading.json()["status"] == "loading" and "retry-after" in loading.headers
        early = invoke(client, REQUEST)
        assert early.status_code == 503 and early.json()["error"] == "model_loading"
        engine.gate.set()
        deadline = time.monotonic() + 60
        while client.get("/ping").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        ready = client.get("/ping").json()
        assert ready["status"] == "ok" and ready["precision"] == "fp32"
        assert ready["kernels"] == kernels.status("cpu").path and ready["step"] == "eager"
        assert invoke(client, REQUEST).status_code == 200


def test_a_model_that_cannot_load_keeps_ping_failing(tmp_path: Path) -> None:
    engine = MusicGenEngine(str(tmp_path / "missing"), device="cpu")
    with container(engine) as client:
        deadline = time.monotonic() + 30
        while (ping := client.get("/ping")).json()["status"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert ping.status_code == 503 and "missing" in ping.json()["message"]


def test_invocation_answers_16_bit_wav_with_metadata_in_the_header(
    client: httpx.Client, tiny_model_dir: Path
) -> None:
    response = invoke(client, {**REQUEST, "seed": 7})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/wav"
    info = TrackInfo.from_attributes(response.headers[CUSTOM_ATTRIBUTES_HEADER])
    assert (info.seed, info.sample_rate, info.channels, info.duration, info.format) == (
        7, 32000, 1, 2.0, "wav",
    )  # fmt: skip
    assert info.model == str(tiny_model_dir)
    # what the API tier's record of the track needs from the engine
    assert info.engine["tunesmith"] == __version__ and info.engine["precision"] == "fp32"
    assert info.engine["kernels"] == kernels.status("cpu").path
    assert info.generation_seconds is not None and info.generation_seconds > 0
    assert info.inputs == {}
    audio = soundfile.info(io.BytesIO(response.content))
    assert (audio.format, audio.subtype, audio.samplerate, audio.frames) == (
        "WAV", "PCM_16", 32000, 64000,
    )  # fmt: skip
    assert len(response.content) == 44 + 64000 * 2
    assert invoke(client, {**REQUEST, "seed": 7}).content == response.content  # same seed


def test_a_random_seed_is_reported(client: httpx.Client) -> None:
    first, second = invoke(client, REQUEST), invoke(client, REQUEST)
    seeds = {
        TrackInfo.from_attributes(r.headers[CUSTOM_ATTRIBUTES_HEADER]).seed for r in (first, second)
    }
    assert len(seeds) == 2


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"]
)
def test_json_content_types_are_accepted(client: httpx.Client, content_type: str) -> None:
    response = invoke(client, REQUEST, **{"content-type": content_type})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/octet-stream", "audio/wav"],
)
def test_other_content_types_are_415_json(client: httpx.Client, content_type: str) -> None:
    response = invoke(client, REQUEST, **{"content-type": content_type})
    assert response.status_code == 415
    error = response.json()
    assert error["error"] == "unsupported_media_type"
    assert error["fields"][0]["field"] == "content-type" and content_type in error["message"]
    assert "multipart/form-data" in error["message"]


def test_a_missing_content_type_is_415(client: httpx.Client) -> None:
    response = client.post("/invocations", content=b'{"prompt": "a"}')
    assert response.status_code == 415 and "application/json" in response.json()["message"]


@pytest.mark.parametrize(
    ("accept", "body_format", "answered"),
    [
        (None, None, "audio/wav"),
        ("*/*", None, "audio/wav"),
        ("audio/*", None, "audio/wav"),
        ("audio/flac", None, "audio/flac"),
        ("audio/wav;q=0.5, audio/flac", None, "audio/flac"),
        ("audio/flac;q=0, audio/*", None, "audio/wav"),
        ("audio/flac", "flac", "audio/flac"),
        ("*/*", "flac", "audio/flac"),
        ("audio/mpeg", None, "audio/mpeg"),
        ("audio/ogg", None, "audio/ogg"),
        ("audio/ogg; codecs=opus", None, "audio/ogg; codecs=opus"),
        ("audio/ogg", "opus", "audio/ogg; codecs=opus"),
        ("*/*", "mp3", "audio/mpeg"),
    ],
)
def test_accept_chooses_among_audio_types(
    client: httpx.Client, accept: str | None, body_format: str | None, answered: str
) -> None:
    body = {**REQUEST, **({"format": body_format} if body_format else {})}
    response = invoke(client, body, **({"accept": accept} if accept else {}))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == answered
    info = TrackInfo.from_attributes(response.headers[CUSTOM_ATTRIBUTES_HEADER])
    assert CONTENT_TYPES[info.format] == answered
    decoded = soundfile.info(io.BytesIO(response.content))
    assert decoded.format == SOUNDFILE_FORMAT[info.format]
    assert (decoded.samplerate, decoded.channels) == (info.sample_rate, info.channels)
    assert decoded.frames == round(2.0 * info.sample_rate)


@pytest.mark.parametrize(
    ("accept", "body_format"),
    [("application/json", None), ("text/html, image/*", None), ("audio/flac", "wav")],
)
def test_unproducible_accept_is_406_json(
    client: httpx.Client, accept: str, body_format: str | None
) -> None:
    body = {**REQUEST, **({"format": body_format} if body_format else {})}
    response = invoke(client, body, accept=accept)
    assert response.status_code == 406
    assert response.json()["error"] == "not_acceptable"
    assert response.json()["fields"][0]["field"] == "accept"


def test_a_track_over_the_payload_limit_is_refused_not_truncated(
    tiny_engine: MusicGenEngine,
) -> None:
    # 2 s of mono 16-bit WAV at 32 kHz is 128,044 bytes: over a 100,000-byte limit
    with container(tiny_engine, max_response_bytes=100_000) as client:
        refused = invoke(client, REQUEST)
        assert refused.status_code == 413
        error = refused.json()
        assert error["error"] == "response_too_large"
        assert error["fields"][0]["field"] == "duration"
        assert "100000" in error["message"] and "1.5 s" in error["message"]
        assert invoke(client, {**REQUEST, "duration": 1.5}).status_code == 200  # 96,044 bytes
        # FLAC is refused on its worst case (incompressible audio), also before generating
        assert invoke(client, {**REQUEST, "format": "flac"}).status_code == 413


@pytest.mark.parametrize(("body", "field"), BAD_BODIES)
def test_bad_input_is_422_naming_the_field(
    client: httpx.Client, body: dict[str, Any], field: str
) -> None:
    response = invoke(client, body)
    assert response.status_code == 422
    assert [f["field"] for f in response.json()["fields"]] == [field]


@pytest.mark.parametrize("raw", MALFORMED_BODIES)
def test_malformed_bodies_are_422(client: httpx.Client, raw: bytes) -> None:
    response = invoke(client, raw)
    assert response.status_code == 422 and response.json()["error"] == "invalid_request"


def test_overload_is_503_with_retry_after(tiny_engine: MusicGenEngine) -> None:
    with container(tiny_engine, max_queue=1) as client:
        long_one = threading.Thread(target=invoke, args=(client, {"prompt": "x", "duration": 30}))
        long_one.start()
        deadline = time.monotonic() + 30
        while client.get("/ping").json()["in_flight"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        refused = invoke(client, REQUEST)
        long_one.join()
        assert refused.status_code == 503 and refused.json()["error"] == "overloaded"
        assert int(refused.headers["retry-after"]) > 0


def test_the_container_command_takes_the_serve_argument_and_sagemakers_port(
    tiny_model_dir: Path,
) -> None:
    endpoint = EndpointProcess(tiny_model_dir, argv=("endpoint", "serve"))
    with endpoint:
        assert httpx.get(f"{endpoint.url}/ping").json()["status"] == "ok"
        response = httpx.post(f"{endpoint.url}/invocations", json=REQUEST, timeout=120)
        assert response.status_code == 200 and response.headers["content-type"] == "audio/wav"
    assert endpoint.returncode == 130  # Ctrl-C / docker stop: a graceful shutdown
    assert "Finished server process" in endpoint.output
    assert f"127.0.0.1:{endpoint.port}" in endpoint.output
    assert "Traceback" not in endpoint.output


def test_a_model_directory_like_opt_ml_model_is_used(tiny_model_dir: Path) -> None:
    from tunesmith.aws.endpoint import endpoint_settings

    assert endpoint_settings({}, model_dir=tiny_model_dir).model == str(tiny_model_dir)
    flagged = endpoint_settings({"model": "other/model"}, model_dir=tiny_model_dir)
    assert flagged.model == "other/model"  # an explicit --model wins


def test_an_unloadable_model_stops_the_container_with_a_message(tmp_path: Path) -> None:
    endpoint = EndpointProcess(tmp_path / "no-model", startup_timeout=60)
    with pytest.raises(RuntimeError, match="exited at start"):
        endpoint.__enter__()
    assert endpoint.returncode == 2
    assert "no-model" in endpoint.output and "Traceback" not in endpoint.output


# -- forms with uploads ----------------------------------------------------------------------------


def wav(seconds: float, rate: int = 32000, channels: int = 1) -> bytes:
    noise = np.random.default_rng(3).uniform(-0.5, 0.5, (round(seconds * rate), channels))
    out = io.BytesIO()
    soundfile.write(out, noise, rate, format="WAV", subtype="PCM_16")
    return out.getvalue()


def invoke_form(
    client: httpx.Client, fields: dict[str, str], files: dict[str, bytes]
) -> httpx.Response:
    """POST a form: httpx's own encoding with files, ours without (httpx would urlencode it)."""
    if not files:
        body, content_type = encode_form(fields, {})
        return client.post("/invocations", content=body, headers={"content-type": content_type})
    uploads = {name: (f"{name}.wav", data, "audio/wav") for name, data in files.items()}
    return client.post("/invocations", data=fields, files=uploads)


def test_a_continuation_upload_gives_a_track_of_the_requested_length(
    client: httpx.Client,
) -> None:
    upload = wav(1.5, rate=44100, channels=2)  # resampled and mixed down to the model's
    fields = {"prompt": "calm piano melody", "duration": "2", "seed": "11",
              "continuation_start": "0.5"}  # fmt: skip
    response = invoke_form(client, fields, {"input_audio": upload})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/wav"
    audio = soundfile.info(io.BytesIO(response.content))
    assert (audio.samplerate, audio.channels, audio.frames) == (32000, 1, 64000)
    info = TrackInfo.from_attributes(response.headers[CUSTOM_ATTRIBUTES_HEADER])
    assert (info.seed, info.duration) == (11, 2.0)
    (used,) = info.inputs.values()
    assert info.inputs.keys() == {"input_audio"}
    assert used.sha256 == hashlib.sha256(upload).hexdigest()
    assert (used.start, used.end) == (0.5, 1.5)
    again = invoke_form(client, fields, {"input_audio": upload})
    assert again.content == response.content  # the same upload and seed: the same track


def test_a_form_without_uploads_is_served_like_json(client: httpx.Client) -> None:
    response = invoke_form(client, {"prompt": "calm piano melody", "duration": "1.5"}, {})
    assert response.status_code == 200, response.text
    assert soundfile.info(io.BytesIO(response.content)).frames == 48000


@pytest.mark.parametrize(
    ("fields", "files", "status", "field"),
    [
        ({"duration": "2"}, {"input_audio": b"not audio at all"}, 422, "input_audio"),
        ({"duration": "2"}, {"input_audio": b""}, 422, "input_audio"),
        (
            {"duration": "2", "continuation_end": "5"},
            {"input_audio": wav(1)},
            422,
            "continuation_end",
        ),
        (
            {"duration": "2", "continuation_start": "3"},
            {"input_audio": wav(1)},
            422,
            "continuation_start",
        ),
        ({"duration": "1"}, {"input_audio": wav(1)}, 422, "duration"),  # nothing to add
        ({"duration": "2", "continuation_start": "1"}, {}, 422, "continuation_start"),
        ({"duration": "2"}, {"melody": wav(1)}, 422, "melody"),  # not a melody model
        ({"duration": "two"}, {"input_audio": wav(1)}, 422, "duration"),
        ({"duration": "2", "lyrics": "la"}, {"input_audio": wav(1)}, 422, "lyrics"),
    ],
)
def test_a_bad_upload_or_field_is_refused_naming_it(
    client: httpx.Client, fields: dict[str, str], files: dict[str, bytes], status: int,
    field: str,
) -> None:  # fmt: skip
    response = invoke_form(client, {"prompt": "calm piano melody", **fields}, files)
    assert response.status_code == status, response.text
    assert [f["field"] for f in response.json()["fields"]] == [field]
    assert field in response.json()["message"]


def test_a_continuation_range_without_an_upload_is_refused_in_json_too(
    client: httpx.Client,
) -> None:
    response = invoke(client, {**REQUEST, "continuation_start": 1})
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "continuation_start"


def test_uploads_and_form_bodies_over_their_limits_are_413(tiny_engine: MusicGenEngine) -> None:
    # a form may carry the body limit plus one upload limit per file field, no more
    with container(tiny_engine, max_upload_bytes=20_000, max_body_bytes=4096) as client:
        fields = {"prompt": "calm piano melody", "duration": "2"}
        big = invoke_form(client, fields, {"input_audio": b"x" * 20_001})
        assert big.status_code == 413 and big.json()["fields"][0]["field"] == "input_audio"
        body = b"x" * (4096 + 2 * 20_000 + 1)
        huge = client.post(
            "/invocations", content=body,
            headers={"content-type": "multipart/form-data; boundary=b"},
        )  # fmt: skip
        assert huge.status_code == 413 and huge.json()["fields"][0]["field"] == "body"
        fits = invoke_form(client, fields, {"input_audio": wav(0.3)})  # 19,244 bytes
        assert fits.status_code == 200, fits.text
