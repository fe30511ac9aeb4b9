"""Randomly initialised musicgen-melody checkpoints, for tests and benchmarks without weights.

`save_random_musicgen_melody` writes a directory with `save_pretrained` holding what
``facebook/musicgen-melody`` holds (config, generation config, weights, tokenizer, and the
feature extractor's configuration in the processor's file), so it loads through the same
`from_pretrained` calls. Presets: ``tiny`` (the shapes of `random_model`'s tiny MusicGen, for
tests) and ``small`` (musicgen-melody's own architecture, 1.5B parameters: a 48-layer decoder
of width 1536, a t5-base text encoder, the 32 kHz EnCodec; the chroma as the real one).

Like `random_model`, EnCodec is made to decode codes to zero-mean noise (`randomise_codec`)
and the files come out byte-identical run to run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunesmith.testing.random_model import PRESETS as MUSICGEN_PRESETS
from tunesmith.testing.random_model import (
    cached_checkpoint,
    cached_path,
    encoder_parts,
    randomise_codec,
)

__all__ = ["PRESETS", "cached_random_melody", "save_random_musicgen_melody"]

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": MUSICGEN_PRESETS["tiny"],
    "small": {  # facebook/musicgen-melody
        "text": MUSICGEN_PRESETS["small"]["text"],  # t5-base, as musicgen-small
        "audio": MUSICGEN_PRESETS["small"]["audio"],  # encodec_32khz, as musicgen-small
        "decoder": {
            "vocab_size": 2048,
            "hidden_size": 1536,
            "num_hidden_layers": 48,
            "num_attention_heads": 24,
            "ffn_dim": 6144,
        },
    },
}


def save_random_musicgen_melody(path: Path, preset: str = "tiny", seed: int = 0) -> Path:
    """Build a random musicgen-melody of the given preset and `save_pretrained` it."""
    import torch
    from transformers import (
        MusicgenMelodyConfig,
        MusicgenMelodyDecoderConfig,
        MusicgenMelodyForConditionalGeneration,
    )
    from transformers.models.musicgen_melody.processing_musicgen_melody import (
        MusicgenMelodyProcessor,
    )

    from tunesmith.engine.melody.chroma import MelodyFeatureConfig

    spec = PRESETS[preset]
    tokenizer, text, audio = encoder_parts(spec)
    codebooks = spec["audio"]["codebook_size"]
    decoder = MusicgenMelodyDecoderConfig(
        num_codebooks=4,
        audio_channels=1,
        pad_token_id=codebooks,
        bos_token_id=codebooks,
        max_position_embeddings=2048,
        **spec["decoder"],
    )
    config = MusicgenMelodyConfig(
        text_encoder=text.to_dict(),
        audio_encoder=audio.to_dict(),
        decoder=decoder.to_dict(),
        num_chroma=12,
        chroma_length=235,  # 30 s of chroma frames: 1 + 30 * 32000 // 4096
    )
    torch.manual_seed(seed)
    model: Any = MusicgenMelodyForConditionalGeneration(config)
    randomise_codec(model, seed)
    gen = model.generation_config
    gen.do_sample, gen.guidance_scale, gen.max_length = True, 3.0, 1500
    # the real processor, around the extractor's configuration: it writes the files the
    # torchaudio-backed extractor would
    processor = MusicgenMelodyProcessor(  # type: ignore[no-untyped-call]
        feature_extractor=MelodyFeatureConfig(), tokenizer=tokenizer
    )
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def cached_random_melody(
    preset: str, directory: Path | None = None, seed: int = 0
) -> tuple[Path, bool]:
    """A random musicgen-melody `preset` under `directory` (default the bench cache), saved
    on first use as `random_model.cached_checkpoint` saves: ``(path, saved_now)``."""
    path = cached_path(preset, directory, seed, kind="musicgen-melody", spec=PRESETS[preset])
    return cached_checkpoint(path, lambda at: save_random_musicgen_melody(at, preset, seed))


def main(argv: list[str] | None = None) -> int:
    """``python -m tunesmith.testing.random_melody DIR [--preset tiny|small]``."""
    import argparse

    parser = argparse.ArgumentParser(description="Save a randomly initialised musicgen-melody")
    parser.add_argument("output", type=Path, help="directory to save it in")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = save_random_musicgen_melody(args.output, args.preset, args.seed)
    print(f"saved a random {args.preset} musicgen-melody to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
