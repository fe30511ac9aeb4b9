"""How the API tier and the model tier talk: SageMaker's container invocation contract.

The same bytes flow through a real SageMaker endpoint, ``tunesmith endpoint`` run locally and
the tests' stand-in::

    POST /invocations
        Content-Type: application/json           body: a GenerateRequest (the one contract)
        Accept: audio/wav | audio/flac | */*     optional; picks the format if the body has none
    200 OK
        Content-Type: audio/wav | audio/flac     body: the track, 16-bit PCM WAV or FLAC
      X-Amzn-SageMaker-Custom-Attributes: seed=7&sample_rate=32000&duration=10.0&format=wav&model=m
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
    duration: float
    format: AudioFormat
    model: str

    def to_attributes(self) -> str:
        """The custom-attributes header value; a model name too long to fit is shortened."""
        head = urlencode(
            {
                "seed": self.seed,
                "sample_rate": self.sample_rate,
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
        missing = sorted({"seed", "sample_rate", "duration", "format", "model"} - set(fields))
        if missing:
            raise ValueError(f"the track metadata lacks {', '.join(missing)}")
        fmt = fields["format"]
        if fmt not in _FORMATS:
            raise ValueError(f"the track metadata names an unknown format {fmt!r}")
        try:
            seed, rate, duration = (
                int(fields["seed"]),
                int(fields["sample_rate"]),
                float(fields["duration"]),
            )
        except ValueError:
            raise ValueError(f"the track metadata is malformed: {value[:200]!r}") from None
        if seed < 0 or rate <= 0 or not math.isfinite(duration) or duration <= 0:
            raise ValueError(f"the track metadata is out of range: {value[:200]!r}")
        return cls(seed, rate, duration, fmt, fields["model"])  # type: ignore[arg-type]


@dataclass(frozen=True)
class RenderedTrack:
    """An encoded track as the model tier returns it."""

    audio: bytes
    content_type: str
    info: TrackInfo


def audio_size_bound(fmt: AudioFormat, frames: int, channels: int) -> int:
    """The most bytes `frames` x `channels` of 16-bit audio can take when encoded as `fmt`.

    WAV is exact: a 44-byte header plus 2 bytes per sample. FLAC is usually far smaller, but
    incompressible audio is stored verbatim, so the bound is the PCM size plus frame headers
    (a few bytes per block of at most 1024 frames) and the metadata blocks.
    """
    if frames < 0 or channels < 1:
        raise ValueError("frames must be >= 0 and channels >= 1")
    pcm = frames * channels * 2
    if fmt == "wav":
        return _WAV_HEADER_BYTES + pcm
    return pcm + 32 * math.ceil(frames / 1024) + 8192
