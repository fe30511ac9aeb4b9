"""The invocation protocol's pieces: track metadata, payload bounds, content negotiation."""

from __future__ import annotations

import numpy as np
import pytest

from tunesmith.aws.endpoint import acceptable_formats, endpoint_port
from tunesmith.aws.protocol import MAX_ATTRIBUTES_CHARS, TrackInfo, audio_size_bound
from tunesmith.aws.sagemaker import parse_s3_uri
from tunesmith.engine import encode_audio
from tunesmith.errors import ConfigError, UpstreamError

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
