"""Uploads through the HTTP API: continuation and melody forms, their refusals, and the
record beside each track reproducing it byte for byte."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile

from live_server import Api, serve, stored_files
from tunesmith.engine import MusicGenEngine
from tunesmith.engine.audio import CEILING

PROMPT = "calm piano melody for a rainy evening"


def wav(seconds: float, rate: int = 32000, channels: int = 1, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    samples = 0.2 * rng.standard_normal((round(seconds * rate), channels))
    buffer = io.BytesIO()
    soundfile.write(buffer, samples.astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def form(api: Api, fields: dict[str, Any], **files: bytes) -> httpx.Response:
    data = {name: str(value) for name, value in fields.items()}
    uploads = {name: (f"{name}.wav", content, "audio/wav") for name, content in files.items()}
    return api.client.post("/generate", data=data, files=uploads)


@pytest.fixture
def api(tmp_path: Path, tiny_engine: MusicGenEngine) -> Iterator[Api]:
    with serve(tmp_path, tiny_engine, max_upload_bytes=1024 * 1024) as running:
        yield running


def test_continuation_keeps_the_upload_and_continues_it(
    api: Api, tiny_engine: MusicGenEngine
) -> None:
    upload = wav(3.0, rate=44100, channels=2)  # resampled and mixed down for the model
    fields = {"prompt": PROMPT, "duration": 6, "seed": 4, "normalization": "none"}
    response = form(api, fields, input_audio=upload)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["duration"], body["channels"]) == (6.0, 1)
    samples, rate = soundfile.read(io.BytesIO(httpx.get(body["public_url"]).content))
    assert (rate, samples.shape) == (32000, (6 * 32000,))
    # the first 3 s are the upload as the codec reproduces it (normalization none: only
    # samples past -1 dBFS are touched)
    mono, _ = soundfile.read(io.BytesIO(upload), dtype="float32", always_2d=True)
    from tunesmith.engine.audio import read_audio

    prompt, _ = read_audio(upload, 32000, 1)
    assert abs(len(prompt) - 3 * 32000) <= 1 and mono.shape[1] == 2
    codec = tiny_engine.decode_audio(tiny_engine.encode_prompt_audio(prompt), 3.0).samples[:, 0]
    head, reproduced = samples[: 3 * 32000 - 3200], codec[: 3 * 32000 - 3200]
    unclipped = np.abs(reproduced) < CEILING
    assert np.allclose(head[unclipped], reproduced[unclipped], atol=2e-4)  # 16-bit PCM
    record = httpx.get(body["metadata_url"]).json()
    assert record["inputs"]["input_audio"]["end"] == pytest.approx(3.0)
    assert record["request"]["continuation_start"] == 0


def _bad_uploads() -> list[tuple[dict[str, Any], dict[str, bytes], int, str]]:
    base = {"prompt": PROMPT, "duration": 4}
    return [
        (base, {"input_audio": b"definitely not audio"}, 422, "input_audio"),
        (base, {"input_audio": b""}, 422, "input_audio"),
        (base, {"input_audio": wav(20.0)}, 413, "input_audio"),  # 1.28 MB over the 1 MiB cap
        ({**base, "continuation_start": 5}, {"input_audio": wav(2.0)}, 422, "continuation_start"),
        ({**base, "continuation_end": 3}, {"input_audio": wav(2.0)}, 422, "continuation_end"),
        ({**base, "duration": 2}, {"input_audio": wav(2.5)}, 422, "duration"),
        ({**base, "continuation_start": 1}, {}, 422, "continuation_start"),
        (base, {"melody": wav(2.0)}, 422, "melody"),  # the tiny model follows no melody
        ({**base, "duration": "long"}, {"input_audio": wav(1.0)}, 422, "duration"),
        ({**base, "colour": "blue"}, {"input_audio": wav(1.0)}, 422, "colour"),
    ]


@pytest.mark.parametrize(("fields", "files", "status", "field"), _bad_uploads())
def test_each_bad_upload_is_refused_naming_its_field_and_stores_nothing(
    api: Api, fields: dict[str, Any], files: dict[str, bytes], status: int, field: str
) -> None:
    response = form(api, fields, **files) if files else api.generate(fields)
    assert response.status_code == status, response.text
    error = response.json()
    assert [f["field"] for f in error["fields"]] == [field]
    assert stored_files(api.root) == []


def test_malformed_form_is_a_422(api: Api) -> None:
    response = api.client.post(
        "/generate",
        content=b"--xyz\r\nContent-Disposition: form-data\r\n\r\nnope\r\n--xyz--\r\n",
        headers={"Content-Type": "multipart/form-data; boundary=xyz"},
    )
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "body"


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_record_regenerates_the_track_byte_for_byte(api: Api, fmt: str) -> None:
    first = api.generate({"prompt": PROMPT, "duration": 3, "format": fmt})
    assert first.status_code == 200, first.text
    body = first.json()
    record = httpx.get(body["metadata_url"]).json()
    assert record["id"] == body["id"] and record["seed"] == body["seed"]
    assert record["request"]["seed"] == body["seed"]  # the drawn seed, filled in
    assert record["model"] == body["model"] and record["engine"]["precision"] == "fp32"
    regenerated = api.generate(record["request"])
    assert regenerated.status_code == 200, regenerated.text
    again = regenerated.json()
    assert again["id"] != body["id"]
    original = httpx.get(body["public_url"]).content
    assert httpx.get(again["public_url"]).content == original


def test_long_form_track_through_the_api(api: Api) -> None:
    response = api.generate({"prompt": PROMPT, "duration": 40, "seed": 1, "format": "flac"})
    assert response.status_code == 200, response.text
    info = soundfile.info(io.BytesIO(httpx.get(response.json()["public_url"]).content))
    assert (info.frames, info.samplerate) == (40 * 32000, 32000)


@pytest.fixture
def melody_api(tmp_path: Path, tiny_melody_engine: MusicGenEngine) -> Iterator[Api]:
    with serve(tmp_path, tiny_melody_engine) as running:
        yield running


def test_melody_model_follows_an_uploaded_melody(
    melody_api: Api, tiny_melody_engine: MusicGenEngine
) -> None:
    fields = {"prompt": PROMPT, "duration": 2, "seed": 3}
    tunes = [form(melody_api, fields, melody=wav(4.0, seed=s)) for s in (1, 2)]
    assert [t.status_code for t in tunes] == [200, 200], tunes[0].text
    audio = [httpx.get(t.json()["public_url"]).content for t in tunes]
    assert audio[0] != audio[1]  # another melody, another track
    plain = melody_api.generate(fields)
    assert plain.status_code == 200
    health = melody_api.client.get("/healthz").json()
    # the fast decoder's own precision and kernels, as for a text model
    assert (health["precision"], health["kernels"]) == ("fp32", tiny_melody_engine.kernels.path)


def test_a_60_s_melody_track_through_the_api(melody_api: Api) -> None:
    """Past one window: each follows its own stretch of the (repeated) 10 s melody."""
    fields = {"prompt": PROMPT, "duration": 60, "seed": 5, "format": "flac"}
    response = form(melody_api, fields, melody=wav(10.0, seed=4))
    assert response.status_code == 200, response.text
    assert response.json()["duration"] == 60.0
    info = soundfile.info(io.BytesIO(httpx.get(response.json()["public_url"]).content))
    assert (info.frames, info.samplerate) == (60 * 32000, 32000)


def test_melody_model_continues_an_upload_with_or_without_a_melody(melody_api: Api) -> None:
    fields = {"prompt": PROMPT, "duration": 4, "seed": 6, "normalization": "none"}
    upload = wav(1.0, seed=7)
    tracks = [
        form(melody_api, fields, input_audio=upload, melody=wav(3.0, seed=8)),
        form(melody_api, fields, input_audio=upload),
    ]
    assert [t.status_code for t in tracks] == [200, 200], tracks[0].text
    samples = [
        soundfile.read(io.BytesIO(httpx.get(t.json()["public_url"]).content))[0] for t in tracks
    ]
    assert samples[0].shape == samples[1].shape == (4 * 32000,)
    # both begin with the upload as the codec reproduces it, then go their own ways
    assert np.array_equal(samples[0][:7680], samples[1][:7680])  # the first chunk, 12 frames
    assert not np.array_equal(samples[0], samples[1])
