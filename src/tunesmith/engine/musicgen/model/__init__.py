"""MusicGen's decoder as tunesmith runs it: weights converted once at load (`weights`,
`projections`, `cross`), the step's layers as TorchScript (`layers`), prompt encoding
(`prompt`), sampling (`sampling`), the decoder that steps a batch of jobs (`decoder`), and the
prefill that runs a known prompt many positions at a time (`prefill`)."""

from tunesmith.engine.musicgen.model.decoder import (
    Conditioning,
    DecodeJob,
    FastDecoder,
    release_decoder_weights,
)
from tunesmith.engine.musicgen.model.projections import Precision, resolve_precision
from tunesmith.engine.musicgen.model.sampling import SamplingParams

__all__ = [
    "Conditioning",
    "DecodeJob",
    "FastDecoder",
    "Precision",
    "SamplingParams",
    "release_decoder_weights",
    "resolve_precision",
]
