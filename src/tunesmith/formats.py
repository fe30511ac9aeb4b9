"""The audio formats tunesmith writes: one table, read by the encoder, the API, the SageMaker
container, the Lambda tier and the CLI. Imports neither numpy nor soundfile (the Lambda
package stays small)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, get_args

from tunesmith.schema import AudioFormat

__all__ = ["CONTENT_TYPES", "FORMATS", "NAMES", "Format", "encoded_rate"]


@dataclass(frozen=True)
class Format:
    name: AudioFormat
    content_type: str
    container: str  # libsndfile's major format, as soundfile names it
    subtype: str  # and its encoding
    rate: int | None = None  # the rate every file has (None: the model's)


# In preference order where a client accepts several: lossless first, then by how widely it
# plays. Ogg Opus files are audio/ogg (RFC 7845 section 9; audio/opus names the RTP payload,
# RFC 7587), told apart from Vorbis by the codecs parameter (RFC 5334). Opus takes only
# 8/12/16/24/48 kHz; 48 kHz is what decoders play.
FORMATS: Final[dict[AudioFormat, Format]] = {
    f.name: f
    for f in (
        Format("wav", "audio/wav", "WAV", "PCM_16"),
        Format("flac", "audio/flac", "FLAC", "PCM_16"),
        Format("mp3", "audio/mpeg", "MP3", "MPEG_LAYER_III"),
        Format("ogg", "audio/ogg", "OGG", "VORBIS"),
        Format("opus", "audio/ogg; codecs=opus", "OGG", "OPUS", rate=48000),
    )
}
NAMES: Final[tuple[AudioFormat, ...]] = tuple(FORMATS)  # in the table's order
CONTENT_TYPES: Final[dict[str, str]] = {name: f.content_type for name, f in FORMATS.items()}

if set(FORMATS) != set(get_args(AudioFormat)):  # the request schema's Literal lists them too
    raise ImportError("tunesmith.formats and schema.AudioFormat name different formats")


def encoded_rate(fmt: str, sample_rate: int) -> int:
    """The sample rate a `fmt` file of `sample_rate` audio has (Opus: always 48 kHz)."""
    return FORMATS[fmt].rate or sample_rate  # type: ignore[index]
