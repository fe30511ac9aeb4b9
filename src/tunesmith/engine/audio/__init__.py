"""Audio: EnCodec decoding of the model's codes (`codec`) and encoding samples to files
(`files`)."""

from tunesmith.engine.audio.files import CONTENT_TYPES, PEAK_LIMIT, encode_audio, prepare_samples

__all__ = ["CONTENT_TYPES", "PEAK_LIMIT", "encode_audio", "prepare_samples"]
