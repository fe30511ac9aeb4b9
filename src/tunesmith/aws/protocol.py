"""How the API tier and the model tier talk: SageMaker's container invocation contract.

The same bytes flow through a real SageMaker endpoint, ``tunesmith endpoint`` run locally and
the tests' stand-in::

    POST /invocations
        Content-Type: application/json           body: a GenerateRequest (the one contract)
        Accept: audio/wav | audio/flac | ... | */*   optional; picks the format if the body has none
    200 OK
        Content-Type: audio/wav | audio/flac | audio/mpeg | audio/ogg | audio/ogg; codecs=opus
                                                 body: the encoded track
      X-Amzn-SageMaker-Custom-Attributes:
        seed=7&sample_rate=32000&channels=1&duration=10.0&format=wav&model=m
    4xx / 5xx
        Content-Type: application/json           body: {"error": ..., "message": ..., ...}

Audio travels as encoded bytes, never as JSON lists of floats: a 30 s mono track is 1.9 MB
of WAV, well inside the 4 MB (serverless) and 6 MB (real-time) payload limits. The metadata
rides in the custom-attributes header, which SageMaker forwards verbatim (at most 1024
visible ASCII characters), URL-encoded as a query string. This module imports no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, get_args
from urllib.parse import parse_qsl, urlencode

from tunesmith.schema import AudioFormat

__all__ = [
    "CUSTOM_ATTRIBUTES_HEADER",
    "MAX_ATTRIBUTES_CHARS",
    "RenderedTrack",
    "TrackInfo",
    "audio_size_bound",
]

CUSTOM_ATTRIBUTES_HEADER: Final = "X-Amzn-SageMaker-Custom-Attributes"
MAX_ATTRIBUTES_CHARS: Final = 1024
_WAV_HEADER_BYTES: Final = 44
_FORMATS: Final = frozenset(get_args(AudioFormat))


@dataclass(frozen=True)
class TrackInfo:
    """What the model tier reports about a track it rendered."""

    seed: int
    sample_rate: int
    channels: int
    duration: float
    format: AudioFormat
    model: str

    def to_attributes(self) -> str:
        """The custom-attributes header value; a model name too long to fit is shortened."""
        head = urlencode(
            {
                "seed": self.seed,
                "sample_rate": self.sample_rate,
                "channels": self.channels,
                "duration": repr(self.duration),
                "format": self.format,
            }
        )
        name = self.model
        for keep in range(len(name), 0, -1):  # keep the tail: the name, not its directory
            shown = name if keep == len(name) else "..." + name[-keep:]
            value = f"{head}&{urlencode({'model': shown})}"
            if len(value) <= MAX_ATTRIBUTES_CHARS:
                return value
        return f"{head}&model=..."

    @classmethod
    def from_attributes(cls, value: str | None) -> TrackInfo:
        """Parse a custom-attributes header value; `ValueError` names what is missing or wrong."""
        if not value:
            raise ValueError("the response carries no track metadata (custom attributes)")
        fields = dict(parse_qsl(value, keep_blank_values=True))
        missing = sorted(
            {"seed", "sample_rate", "channels", "duration", "format", "model"} - set(fields)
        )
        if missing:
            raise ValueError(f"the track metadata lacks {', '.join(missing)}")
        fmt = fields["format"]
        if fmt not in _FORMATS:
            raise ValueError(f"the track metadata names an unknown format {fmt!r}")
        try:
            seed, rate, channels, duration = (
                int(fields["seed"]),
                int(fields["sample_rate"]),
                int(fields["channels"]),
                float(fields["duration"]),
            )
        except ValueError:
            raise ValueError(f"the track metadata is malformed: {value[:200]!r}") from None
        if seed < 0 or rate <= 0 or channels <= 0 or not math.isfinite(duration) or duration <= 0:
            raise ValueError(f"the track metadata is out of range: {value[:200]!r}")
        return cls(seed, rate, channels, duration, fmt, fields["model"])  # type: ignore[arg-type]


@dataclass(frozen=True)
class RenderedTrack:
    """An encoded track as the model tier returns it."""

    audio: bytes
    content_type: str
    info: TrackInfo


def audio_size_bound(fmt: AudioFormat, frames: int, channels: int, sample_rate: int) -> int:
    """The most bytes `frames` x `channels` of `sample_rate` audio can take encoded as `fmt`.

    WAV is exact: a 44-byte header plus 2 bytes per sample. FLAC is usually far smaller, but
    incompressible audio is stored verbatim, so the bound is the PCM size plus frame headers
    (a few bytes per block of at most 1024 frames) and the metadata blocks.

    MP3 has a hard ceiling: 320 kbit/s for MPEG-1 rates (32 kHz and up, 1152-frame packets),
    160 kbit/s below (576-frame packets), whatever the channels; the bound allows that for
    every packet, a few more for the encoder's delay, padding and info frame, and tags.
    Opus's ceiling is 510 kbit/s per stream (mono or coupled stereo is one stream; more
    channels take at most one each), whatever the rate; Ogg pages add at most 29 bytes per
    packet (2.5 ms at the shortest) and a lacing byte per 255.
    Vorbis has no format ceiling, but libsndfile encodes it in VBR at a moderate quality, and
    even its highest quality stays well under 16-bit PCM's rate (several times under at
    libsndfile's); the bound is the PCM size plus 1 % for Ogg pages and the headers.
    Full-scale noise, the hardest input, checks both in the tests.
    """
    if frames < 0 or channels < 1 or sample_rate < 1:
        raise ValueError("frames must be >= 0, channels and sample_rate >= 1")
    pcm = frames * channels * 2
    if fmt == "wav":
        return _WAV_HEADER_BYTES + pcm
    if fmt == "flac":
        return pcm + 32 * math.ceil(frames / 1024) + 8192
    if fmt == "mp3":
        mpeg1 = sample_rate >= 32000
        packet_frames = 1152 if mpeg1 else 576
        packet_bytes = (packet_frames * (320_000 if mpeg1 else 160_000)) // (8 * sample_rate) + 1
        return (math.ceil(frames / packet_frames) + 8) * packet_bytes + 8192
    if fmt == "opus":
        seconds = frames / sample_rate
        streams = 1 if channels <= 2 else channels
        payload = math.ceil(seconds * 510_000 / 8) * streams
        return payload + payload // 255 + math.ceil(seconds * 400) * 29 + 8192
    return pcm + pcm // 100 + 8192
