"""EnCodec decoding in chunks against transformers' one-pass decode, on a real (tiny) model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tunesmith.engine.audio.codec import AudioDecoder
from tunesmith.engine.loader import load_model


def _one_pass(model_dir: Path, codes: torch.Tensor) -> torch.Tensor:
    """transformers' own decode of ``(K, frames)`` codes, on a freshly loaded model."""
    audio_encoder = load_model(str(model_dir), device="cpu").model.audio_encoder
    with torch.inference_mode():
        audio: torch.Tensor = audio_encoder.decode(codes[None, None], audio_scales=[None])[0]
    return audio[0]


def _codes(frames: int, codebook_size: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, codebook_size, (4, frames), generator=generator)


@pytest.mark.parametrize(("frames", "chunk"), [(37, 5), (37, 50), (1, 5), (6, 3)])
def test_chunked_decode_is_the_one_pass_decode(
    tiny_model_dir: Path, frames: int, chunk: int
) -> None:
    loaded = load_model(str(tiny_model_dir), device="cpu")
    decoder = AudioDecoder(loaded.model.audio_encoder, chunk_frames=chunk)
    assert decoder.context is not None  # MusicGen's causal EnCodec runs in chunks
    codes = _codes(frames, loaded.model.config.audio_encoder.codebook_size, seed=frames)
    ours = decoder.decode(codes)
    expected = _one_pass(tiny_model_dir, codes)
    assert ours.shape == expected.shape == (1, frames * decoder.hop)
    # float rounding only: the convolutions sum in another order for another length
    scale = float(expected.abs().max())
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5 * max(scale, 1e-3))


def test_chunks_need_their_context(tiny_model_dir: Path) -> None:
    """Without the frames before a chunk its first samples come out wrong: the context the
    decoder works out from its layers is what keeps chunk edges exact."""
    loaded = load_model(str(tiny_model_dir), device="cpu")
    decoder = AudioDecoder(loaded.model.audio_encoder, chunk_frames=4)
    codes = _codes(24, loaded.model.config.audio_encoder.codebook_size, seed=1)
    expected = _one_pass(tiny_model_dir, codes)
    assert decoder.context is not None
    decoder.context = 0
    edges = decoder.decode(codes) - expected
    scale = float(expected.abs().max())
    assert float(edges.abs().max()) > 1e-2 * scale


def test_a_decoder_it_cannot_bound_is_decoded_in_one_pass(tiny_model_dir: Path) -> None:
    loaded = load_model(str(tiny_model_dir), device="cpu")
    audio_encoder = loaded.model.audio_encoder
    for module in audio_encoder.decoder.modules():
        if hasattr(module, "causal"):
            module.causal = False  # what a non-causal EnCodec (e.g. 24 kHz) looks like
    decoder = AudioDecoder(audio_encoder, chunk_frames=4)
    assert decoder.context is None
    codes = _codes(12, loaded.model.config.audio_encoder.codebook_size, seed=2)
    with torch.inference_mode():
        expected = audio_encoder.decode(codes[None, None], audio_scales=[None])[0][0]
    assert torch.equal(decoder.decode(codes), expected)
