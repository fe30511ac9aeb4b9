"""MusicGen's decoder as tunesmith runs it: weights converted once at load (`projections`,
`cross`), the step's layers as TorchScript (`layers`), prompt encoding (`prompt`), sampling
(`sampling`), and the decoder that steps a batch of jobs (`decoder`)."""

from tunesmith.engine.model.decoder import DecodeJob, FastDecoder, release_decoder_weights
from tunesmith.engine.model.projections import Precision, resolve_precision
from tunesmith.engine.model.sampling import SamplingParams

__all__ = [
    "DecodeJob",
    "FastDecoder",
    "Precision",
    "SamplingParams",
    "release_decoder_weights",
    "resolve_precision",
]
