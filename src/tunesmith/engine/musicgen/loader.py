"""Loading a text MusicGen checkpoint (mono or stereo) with transformers."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["load"]


def load(source: str, device: torch.device) -> tuple[Any, Any]:
    """A MusicGen checkpoint directory -> ``(model, processor)``, the model float32 in eval
    mode on `device`. Errors are transformers' own (`OSError`, `ValueError`)."""
    from transformers import MusicgenForConditionalGeneration, MusicgenProcessor

    model: Any = MusicgenForConditionalGeneration.from_pretrained(source, dtype=torch.float32)
    processor = MusicgenProcessor.from_pretrained(source)
    model.to(device)
    model.eval()
    return model, processor
