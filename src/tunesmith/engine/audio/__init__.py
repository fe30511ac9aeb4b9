"""Audio: EnCodec decoding of the model's codes (`codec`) and encoding samples to files
(`files`)."""

from tunesmith.engine.audio.files import (
    CEILING,
    CONTENT_TYPES,
    DEFAULT_LOUDNESS_LUFS,
    FORMATS,
    NORMALIZATIONS,
    encode_audio,
    encoded_rate,
    prepare_samples,
    read_audio,
    stream_pcm,
    true_peak,
    wav_header,
)

__all__ = [
    "CEILING",
    "CONTENT_TYPES",
    "DEFAULT_LOUDNESS_LUFS",
    "FORMATS",
    "NORMALIZATIONS",
    "encode_audio",
    "encoded_rate",
    "prepare_samples",
    "read_audio",
    "stream_pcm",
    "true_peak",
    "wav_header",
]
