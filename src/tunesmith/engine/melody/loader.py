"""Loading a musicgen-melody checkpoint: transformers' model and a torchaudio-free processor."""

from __future__ import annotations

from typing import Any

import torch

from tunesmith.engine.melody.chroma import MelodyFeatureConfig

__all__ = ["load"]


def load(source: str, device: torch.device | str) -> tuple[Any, Any]:
    """A musicgen-melody checkpoint (hub id or `save_pretrained` directory) -> ``(model,
    processor)``, the model float32 in eval mode on `device`.

    The processor is transformers' `MusicgenMelodyProcessor` built from its parts (the
    tokenizer, and the extractor's configuration as a `MelodyFeatureConfig`), each loaded with
    `from_pretrained`. Errors are transformers' own (`OSError`, `ValueError`)."""
    from transformers import AutoTokenizer, MusicgenMelodyForConditionalGeneration

    # the package-level name is a placeholder that refuses to exist without torchaudio
    from transformers.models.musicgen_melody.processing_musicgen_melody import (
        MusicgenMelodyProcessor,
    )

    model: Any = MusicgenMelodyForConditionalGeneration.from_pretrained(source, dtype=torch.float32)
    processor = MusicgenMelodyProcessor(  # type: ignore[no-untyped-call]
        feature_extractor=MelodyFeatureConfig.from_pretrained(source),
        tokenizer=AutoTokenizer.from_pretrained(source),
    )
    model.to(torch.device(device))
    model.eval()
    return model, processor
