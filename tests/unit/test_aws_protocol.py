"""The invocation protocol's pieces: track metadata, request bodies, payload bounds, content
negotiation, and the deployment's limits as the function explains them."""

from __future__ import annotations

import numpy as np
import pytest

from tunesmith.aws.deployment import REQUEST_LIMITS, Deployment
from tunesmith.aws.endpoint import acceptable_formats, endpoint_port
from tunesmith.aws.protocol import (
    JSON_TYPE,
    MAX_ATTRIBUTES_CHARS,
    TrackInfo,
    audio_size_bound,
    encode_form,
    invocation_body,
)
from tunesmith.aws.sagemaker import parse_s3_uri
from tunesmith.config import load_settings
from tunesmith.engine import encode_audio
from tunesmith.errors import ConfigError, InvalidRequest, PayloadTooLarge, UpstreamError
from tunesmith.schema import InputRecord, parse_generate_request
from tunesmith.uploads import parse_form, parse_generate_form

ALL = ["wav", "flac", "mp3", "ogg", "opus"]


def test_track_info_round_trips_through_the_header() -> None:
    info = TrackInfo(2**63 - 1, 48000, 2, 29.98, "opus", "facebook/musicgen-stereo-small")
    value = info.to_attributes()
    assert value.isascii() and " " not in value
    assert TrackInfo.from_attributes(value) == info


def test_a_long_or_unicode_model_name_is_shortened_to_fit_keeping_its_tail() -> None:
    name = "/models/" + "ü" * 2000 + "/musicgen-stereo"
    value = TrackInfo(1, 32000, 1, 1.0, "wav", name).to_attributes()
    assert len(value) <= MAX_ATTRIBUTES_CHARS and value.isascii()
    parsed = TrackInfo.from_attributes(value)
    assert parsed.model.startswith("...") and parsed.model.endswith("/musicgen-stereo")


def full_info(model: str = "facebook/musicgen-melody") -> TrackInfo:
    engine = {"tunesmith": "0.1.0", "precision": "int8", "device": "cuda:0", "kernels": "torch",
              "step": "cuda-graph", "extend_stride": "18"}  # fmt: skip
    uploads = {
        name: InputRecord(sha256=digit * 64, start=1.5, end=31.5)
        for name, digit in (("input_audio", "a"), ("melody", "b"))
    }
    found = {"tempo_found": 118.62, "stretch": 0.9566, "key_found": "F# minor", "key_shift": -4,
             "key": "D minor", "downbeat": 0.412, "bars": 8, "key_clarity": 0.731}  # fmt: skip
    return TrackInfo(5, 32000, 2, 300.0, "flac", model, engine, 412.25, uploads, found)


def test_the_engine_the_uploads_and_the_analysis_travel_with_the_track() -> None:
    info = full_info()
    value = info.to_attributes()
    assert len(value) <= MAX_ATTRIBUTES_CHARS and value.isascii()
    parsed = TrackInfo.from_attributes(value)
    assert parsed == info
    assert isinstance(parsed.production["bars"], int) and parsed.production["key"] == "D minor"


def test_a_long_model_name_gives_way_before_the_record_fields() -> None:
    info = full_info("/opt/ml/model/" + "x" * 2000)
    parsed = TrackInfo.from_attributes(info.to_attributes())
    assert parsed.inputs == info.inputs and parsed.engine == info.engine
    assert parsed.production == info.production
    assert parsed.model.startswith("...x") and len(info.to_attributes()) <= MAX_ATTRIBUTES_CHARS


def test_fields_that_cannot_fit_are_left_out_whole_the_least_needed_first() -> None:
    engine = {f"note{i}": "y" * 60 for i in range(20)}  # far more than 1024 characters
    info = TrackInfo(5, 32000, 1, 2.0, "wav", "m", engine, 1.0, full_info().inputs)
    parsed = TrackInfo.from_attributes(info.to_attributes())
    assert parsed.inputs == info.inputs  # the uploads' hashes are kept
    assert parsed.generation_seconds is None and len(parsed.engine) < len(engine)
    assert all(parsed.engine[key] == engine[key] for key in parsed.engine)


def test_an_older_containers_header_still_parses() -> None:
    old = "seed=1&sample_rate=32000&channels=1&duration=1.0&format=wav&model=m&future=1"
    info = TrackInfo.from_attributes(old)
    assert (info.engine, info.inputs, info.generation_seconds) == ({}, {}, None)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (None, "no track metadata"),
        ("", "no track metadata"),
        ("seed=1&sample_rate=32000&channels=1&duration=1.0&format=wav", "lacks model"),
        ("seed=1&sample_rate=32000&duration=1.0&format=wav&model=m", "lacks channels"),
        ("seed=1&sample_rate=32000&channels=1&duration=1.0&format=aac&model=m", "unknown format"),
        ("seed=x&sample_rate=32000&channels=1&duration=1.0&format=wav&model=m", "malformed"),
        ("seed=1&sample_rate=0&channels=1&duration=1.0&format=wav&model=m", "out of range"),
        ("seed=1&sample_rate=32000&channels=0&duration=1.0&format=wav&model=m", "out of range"),
        ("seed=1&sample_rate=32000&channels=1&duration=nan&format=wav&model=m", "out of range"),
        (
            "seed=1&sample_rate=32000&channels=1&duration=1.0&format=wav&model=m"
            "&input_audio.sha256=ab&input_audio.start=0",
            "malformed",
        ),
        (
            "seed=1&sample_rate=32000&channels=1&duration=1.0&format=wav&model=m"
            "&generation_seconds=soon",
            "malformed",
        ),
    ],
)
def test_bad_metadata_is_refused_naming_the_problem(value: str | None, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        TrackInfo.from_attributes(value)


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("frames", [1, 1000, 32000 * 30])
def test_the_size_bound_is_exact_for_wav_and_holds_for_incompressible_audio(
    channels: int, frames: int
) -> None:
    """Full-scale white noise is the hardest input for every codec; none normalization keeps
    it at its level."""
    noise = np.random.default_rng(0).uniform(-1, 1, (frames, channels)).astype(np.float32)
    wav = encode_audio(noise, 32000, "wav", "none")
    assert len(wav) == audio_size_bound("wav", frames, channels, 32000)
    for fmt in ("flac", "mp3", "ogg", "opus"):
        encoded = encode_audio(noise, 32000, fmt, "none")
        assert len(encoded) <= audio_size_bound(fmt, frames, channels, 32000), fmt


def test_the_mp3_bound_follows_the_formats_bitrate_ceiling() -> None:
    # 320 kbit/s is 40 kB/s at MPEG-1 rates whatever the channels; 160 kbit/s below
    minute = audio_size_bound("mp3", 60 * 32000, 2, 32000)
    assert 60 * 40_000 < minute < 60 * 40_000 * 1.01
    assert audio_size_bound("mp3", 60 * 16000, 1, 16000) < 60 * 20_000 * 1.02


def test_thirty_seconds_of_musicgen_audio_fits_every_sagemaker_payload_limit() -> None:
    mono_30s = audio_size_bound("flac", 30 * 32000, 1, 32000)
    assert mono_30s < 4_000_000  # serverless; real-time allows 6 MiB
    for fmt in ("wav", "mp3", "ogg", "opus"):  # stereo checkpoints too
        assert audio_size_bound(fmt, 30 * 32000, 2, 32000) < 4_000_000, fmt


@pytest.mark.parametrize(
    ("accept", "formats"),
    [
        (None, ALL),
        ("", ALL),
        ("*/*", ALL),
        ("audio/*", ALL),
        ("audio/flac", ["flac"]),
        ("AUDIO/WAV", ["wav"]),
        ("audio/wav;q=0.2, audio/flac;q=0.9", ["flac", "wav"]),
        ("audio/wav;q=0, */*", ["flac", "mp3", "ogg", "opus"]),
        ("audio/wav;q=oops", []),
        ("audio/mpeg", ["mp3"]),
        ("audio/ogg", ["ogg", "opus"]),
        ("audio/ogg; codecs=opus", ["opus"]),
        ("audio/ogg;codecs=opus, audio/ogg;q=0.5", ["opus", "ogg"]),
        ("audio/ogg; codecs=vorbis", []),
        ("audio/opus", []),
        ("application/json, text/*", []),
    ],
)
def test_accept_headers_rank_the_formats(accept: str | None, formats: list[str]) -> None:
    assert acceptable_formats(accept) == formats


def test_the_port_is_the_flag_then_sagemakers_variable_then_8080() -> None:
    assert endpoint_port(9000, {"SAGEMAKER_BIND_TO_PORT": "9100"}) == 9000
    assert endpoint_port(None, {"SAGEMAKER_BIND_TO_PORT": "9100"}) == 9100
    assert endpoint_port(None, {}) == 8080
    for bad in ("http", "0", "70000"):
        with pytest.raises(ConfigError, match="SAGEMAKER_BIND_TO_PORT"):
            endpoint_port(None, {"SAGEMAKER_BIND_TO_PORT": bad})


def test_s3_uris_are_split_and_anything_else_is_an_upstream_error() -> None:
    assert parse_s3_uri("s3://tracks/music-output/a/track.wav") == (
        "tracks",
        "music-output/a/track.wav",
    )
    for bad in ("https://tracks.s3.amazonaws.com/x", "s3://tracks/", "s3:///key"):
        with pytest.raises(UpstreamError):
            parse_s3_uri(bad)


# -- what the function sends the model tier --------------------------------------------------------


def test_a_request_without_uploads_travels_as_json_with_only_what_was_set() -> None:
    request = parse_generate_request({"prompt": "jazz", "duration": 4}, max_duration=30)
    body, content_type = invocation_body(request, {})
    assert content_type == JSON_TYPE
    sent = parse_generate_request(body, max_duration=30)
    assert sent == request and sent.model_fields_set == {"prompt", "duration", "format"}
    assert not sent.continues  # an unset continuation range stays unset


def test_a_request_with_uploads_travels_as_a_form_that_parses_back_to_it() -> None:
    fields = {"prompt": "a\r\n--b", "duration": "12.5", "continuation_start": "1",
              "normalization": "loudness", "loudness_lufs": "-20"}  # fmt: skip
    upload = b"RIFF" + bytes(range(256)) * 64
    request = parse_generate_request(fields, max_duration=30, form=True)
    request = request.model_copy(update={"seed": 77})  # chosen by the function
    body, content_type = invocation_body(request, {"input_audio": upload})
    assert content_type.startswith("multipart/form-data; boundary=tunesmith-")
    parsed, files = parse_generate_form(
        body, content_type, max_duration=30, max_upload_bytes=len(upload)
    )
    assert parsed == request and files == {"input_audio": upload}
    assert parsed.continues and parsed.seed == 77


def test_a_form_boundary_never_occurs_in_its_parts() -> None:
    body, content_type = encode_form({"prompt": "x"}, {"melody": b"--tunesmith-" * 100})
    form = parse_form(body, content_type)
    assert form.fields == {"prompt": "x"} and form.files == {"melody": b"--tunesmith-" * 100}


# -- the deployment's limits -----------------------------------------------------------------------


def test_a_too_long_duration_names_the_variants_limit_and_the_async_variant() -> None:
    deployment = Deployment.from_settings(load_settings(variant="serverless", time_limit="27"))
    deployment.check_duration(6, 6)
    with pytest.raises(InvalidRequest) as refused:
        deployment.check_duration(30, 6)
    (problem,) = refused.value.fields
    assert problem.field == "duration"
    assert problem.message == (
        "must be at most 6 seconds on the serverless variant, which must answer within 27 s; "
        "deploy the async variant (-c variant=async) for tracks up to 300 s"
    )


def test_the_async_variant_and_an_unknown_deployment_say_what_applies() -> None:
    with pytest.raises(InvalidRequest, match=r"async variant; -c max_duration=\.\.\. raises it"):
        Deployment("async", 3600).check_duration(301, 300)
    with pytest.raises(InvalidRequest, match=r"at most 30 seconds on this deployment$"):
        Deployment().check_duration(31, 30)


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"TUNESMITH_VARIANT": "gpu"}, "TUNESMITH_VARIANT"),
        ({"TUNESMITH_TIME_LIMIT": "soon"}, "TUNESMITH_TIME_LIMIT"),
        ({"TUNESMITH_TIME_LIMIT": "0"}, "TUNESMITH_TIME_LIMIT"),
    ],
)
def test_bad_deployment_variables_are_named(
    environ: dict[str, str], named: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=named):
        load_settings()


def test_a_request_too_large_for_serverless_sagemaker_is_413_naming_the_limit() -> None:
    limit = REQUEST_LIMITS["serverless"]
    assert limit is not None
    Deployment("serverless").check_request_size(limit)
    with pytest.raises(PayloadTooLarge) as refused:
        Deployment("serverless").check_request_size(limit + 1)
    assert refused.value.status == 413 and "serverless" in refused.value.message
    assert str(limit) in refused.value.message
    Deployment("async").check_request_size(10 * limit)  # through S3: no such limit
    Deployment().check_request_size(10 * limit)
