"""Randomly initialised MusicGen checkpoints, for tests and benchmarks on machines without weights.

`save_random_musicgen` writes a directory with `save_pretrained`, exactly like a downloaded
checkpoint, so it loads through the same `tunesmith.engine.load_model` path as
``facebook/musicgen-small``. Presets: ``small``, ``small-stereo`` and ``medium`` have the
shapes and compute of facebook/musicgen-small, musicgen-stereo-small and musicgen-medium;
``tiny``, ``tiny-stereo`` and ``tiny-medium`` (tiny widths, for tests) keep their
layouts: the stereo codebooks, medium's ratios of layers and heads to small.
`cached_random_musicgen` saves a preset once into the user's cache and reuses it (a random
medium is ~8 GB of fp32).

A fresh EnCodec decodes every code to nearly the same audio, on a DC offset: its codebooks are
all zero (a checkpoint fills them) and its random biases outweigh the rest. `randomise_codec`
makes it decode codes to zero-mean noise, so different codes give different audio and levels
and loudness measured on it mean something.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "PRESETS",
    "cache_dir",
    "cached_checkpoint",
    "cached_path",
    "cached_random_musicgen",
    "encoder_parts",
    "CODEC_RMS",
    "randomise_codec",
    "save_random_musicgen",
]

_CORPUS = [
    "upbeat electronic dance music with heavy bass",
    "calm piano melody for a rainy evening",
    "lofi hip hop beat with vinyl crackle",
    "80s pop track with bassy drums and synth",
    "acoustic guitar folk song with soft vocals",
    "epic orchestral soundtrack with strings and brass",
    "jazz trio with walking bass and brushed drums",
    "ambient drone with evolving pads",
]

CODEC_RMS = 0.1  # random codes decode to -20 dBFS: room for their peaks, ~6x the RMS
# part of a cached checkpoint's name: a change to what the presets save must change it
_RECIPE = "codec-centred"

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "text": {"d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2, "num_heads": 4},
        "audio": {
            "num_filters": 4,
            "hidden_size": 16,
            "codebook_size": 64,
            "codebook_dim": 16,
            "num_lstm_layers": 1,
            "target_bandwidths": [1.2],  # 4 codebooks x 6 bits x 50 frames/s
        },
        "decoder": {
            "vocab_size": 64,
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "ffn_dim": 64,
            # wider than the default 0.02, so logits are peaked and depend on the prompt:
            # tests that compare outputs across prompts and seeds then mean something
            "initializer_factor": 0.3,
        },
    },
    "small": {  # facebook/musicgen-small
        "text": {
            "vocab_size": 32128,
            "d_model": 768,
            "d_kv": 64,
            "d_ff": 3072,
            "num_layers": 12,
            "num_heads": 12,
        },
        "audio": {
            "num_filters": 64,
            "hidden_size": 128,
            "codebook_size": 2048,
            "codebook_dim": 128,
            "num_lstm_layers": 2,
            "target_bandwidths": [2.2],  # 4 codebooks x 11 bits x 50 frames/s
        },
        "decoder": {
            "vocab_size": 2048,
            "hidden_size": 1024,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "ffn_dim": 4096,
        },
    },
}


# musicgen-stereo: 8 interleaved left/right codebooks, each pair delayed together
PRESETS["tiny-stereo"] = {**PRESETS["tiny"], "stereo": True}
PRESETS["small-stereo"] = {**PRESETS["small"], "stereo": True}  # facebook/musicgen-stereo-small
# facebook/musicgen-medium: small's t5-base and EnCodec, a wider and twice as deep decoder
PRESETS["medium"] = {
    **PRESETS["small"],
    "decoder": {
        "vocab_size": 2048,
        "hidden_size": 1536,
        "num_hidden_layers": 48,
        "num_attention_heads": 24,
        "ffn_dim": 6144,
    },
}
# medium's shape at tiny widths: twice tiny's layers, 1.5 times its width and heads (as medium
# to small), so the same 8-wide heads come in another count
PRESETS["tiny-medium"] = {
    **PRESETS["tiny"],
    "decoder": {
        **PRESETS["tiny"]["decoder"],
        "hidden_size": 48,
        "num_hidden_layers": 4,
        "num_attention_heads": 6,
        "ffn_dim": 96,
    },
}


def _tokenizer(vocab_size: int) -> Any:
    """A T5 (Unigram) tokenizer trained on the spot on a few prompts."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import T5Tokenizer

    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "</s>", "<unk>"],
        unk_token="<unk>",
        show_progress=False,  # it draws on stdout, into the benchmark's output
    )
    unigram = Tokenizer(models.Unigram())
    unigram.pre_tokenizer = pre_tokenizers.Metaspace()
    unigram.train_from_iterator(_CORPUS * 4, trainer)
    # the trainer's scores vary in their last digits, and ties in order, from run to run:
    # rounded and sorted, the same checkpoint comes out byte for byte (an image built from
    # it reuses its cached layers)
    pieces = json.loads(unigram.to_str())["model"]["vocab"]
    special = len(trainer.special_tokens)
    rounded = [(piece, round(score, 3)) for piece, score in pieces[special:]]
    vocab = [tuple(p) for p in pieces[:special]] + sorted(rounded, key=lambda p: (-p[1], p[0]))
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def encoder_parts(spec: dict[str, Any]) -> tuple[Any, Any, Any]:
    """A preset's tokenizer, T5 text-encoder config and 32 kHz EnCodec config (shared by the
    MusicGen and musicgen-melody checkpoints)."""
    from transformers import EncodecConfig, T5Config

    tokenizer = _tokenizer(vocab_size=120)
    text = T5Config(**{"vocab_size": max(len(tokenizer), 128), **spec["text"]})
    audio = EncodecConfig(
        sampling_rate=32000, audio_channels=1, upsampling_ratios=[8, 5, 4, 4], **spec["audio"]
    )
    return tokenizer, text, audio


def randomise_codec(model: Any, seed: int = 0) -> None:
    """Make a fresh EnCodec decode codes to noise-like audio centred on zero, at `CODEC_RMS`.

    Its codebooks are filled (a fresh one's are all zero: every code would decode alike). Its
    decoder's random biases are zeroed: they add a fixed pattern and a DC offset, the same
    whatever the codes, that drown what the codes say. The output convolution is then scaled
    and its bias set so that random codes (drawn from `seed`) decode to `CODEC_RMS`, mean 0."""
    import torch
    from torch.nn.utils import parametrize

    codec = model.audio_encoder
    with torch.no_grad():
        for layer in codec.quantizer.layers:
            torch.nn.init.normal_(layer.codebook.embed)
        for module in codec.decoder.modules():
            if isinstance(module, torch.nn.Conv1d | torch.nn.ConvTranspose1d | torch.nn.LSTM):
                for name, parameter in module.named_parameters(recurse=False):
                    if name.startswith("bias"):
                        parameter.zero_()
        quantizers = codec.quantizer.get_num_quantizers_for_bandwidth(
            codec.config.target_bandwidths[-1]
        )
        probe = torch.randint(
            codec.config.codebook_size,
            (1, 8, quantizers, 100),
            generator=torch.Generator().manual_seed(seed),
        )
        audio = codec.decode(probe, [None]).audio_values
        mean, rms = audio.mean(), (audio - audio.mean()).pow(2).mean().sqrt()
        gain = CODEC_RMS / rms
        out = codec.decoder.layers[-1].conv
        if parametrize.is_parametrized(out, "weight"):  # weight norm: scale its magnitude
            out.parametrizations.weight.original0.mul_(gain)
        else:
            out.weight.mul_(gain)
        out.bias.copy_(-mean * gain)


def save_random_musicgen(path: Path, preset: str = "tiny", seed: int = 0) -> Path:
    """Build a random MusicGen of the given preset and `save_pretrained` it (with processor)."""
    import torch
    from transformers import (
        EncodecFeatureExtractor,
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenForConditionalGeneration,
        MusicgenProcessor,
    )

    spec = PRESETS[preset]
    tokenizer, text, audio = encoder_parts(spec)
    codebooks = spec["audio"]["codebook_size"]
    stereo = bool(spec.get("stereo", False))
    decoder = MusicgenDecoderConfig(
        num_codebooks=8 if stereo else 4,
        audio_channels=2 if stereo else 1,
        pad_token_id=codebooks,
        bos_token_id=codebooks,
        max_position_embeddings=2048,
        **spec["decoder"],
    )
    config = MusicgenConfig(
        text_encoder=text.to_dict(), audio_encoder=audio.to_dict(), decoder=decoder.to_dict()
    )
    torch.manual_seed(seed)
    model: Any = MusicgenForConditionalGeneration(config)
    randomise_codec(model, seed)
    gen = model.generation_config
    gen.do_sample, gen.guidance_scale, gen.max_length = True, 3.0, 1500
    processor: Any = MusicgenProcessor(  # type: ignore[no-untyped-call]
        feature_extractor=EncodecFeatureExtractor(feature_size=1, sampling_rate=32000),
        tokenizer=tokenizer,
    )
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def cache_dir() -> Path:
    """Where random checkpoints are kept: beside the compiled kernels, under ``bench/``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tunesmith" / "bench"


def cached_path(
    preset: str, directory: Path | None = None, seed: int = 0, *, kind: str = "musicgen",
    spec: dict[str, Any] | None = None,
) -> Path:  # fmt: skip
    """Where `cached_checkpoint` keeps a `kind` checkpoint of `preset` (its `spec`, default
    this module's preset): the name holds a digest of the spec, the seed and the transformers
    version, so a changed preset is saved anew, never reused."""
    import transformers

    spec = PRESETS[preset] if spec is None else spec
    key = json.dumps([spec, seed, transformers.__version__, _RECIPE], sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return (directory or cache_dir()) / f"{kind}-{preset}-random-{digest}"


def cached_checkpoint(path: Path, save: Callable[[Path], Path]) -> tuple[Path, bool]:
    """The checkpoint at `path`, saved there by `save` on first use: ``(path, saved_now)``."""
    if (path / "config.json").is_file():
        return path, False
    # saved beside it and renamed when complete: an interrupted save is never reused
    partial = path.with_name(path.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    save(partial)
    shutil.rmtree(path, ignore_errors=True)  # a directory left without its config
    partial.rename(path)
    return path, True


def cached_random_musicgen(
    preset: str, directory: Path | None = None, seed: int = 0
) -> tuple[Path, bool]:
    """A random `preset` checkpoint under `directory` (default `cache_dir`), saved on first use.

    Returns ``(path, saved_now)``.
    """
    path = cached_path(preset, directory, seed)
    return cached_checkpoint(path, lambda at: save_random_musicgen(at, preset, seed))


def main(argv: list[str] | None = None) -> int:
    """``python -m tunesmith.testing.random_model DIR [--preset NAME]``."""
    import argparse

    parser = argparse.ArgumentParser(description="Save a randomly initialised MusicGen checkpoint")
    parser.add_argument("output", type=Path, help="directory to save it in")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = save_random_musicgen(args.output, args.preset, args.seed)
    print(f"saved a random {args.preset} MusicGen to {path}; use TUNESMITH_MODEL={path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
