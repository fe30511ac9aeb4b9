"""Text-conditioned MusicGen (mono and stereo): cross-attention to T5 states.

loader.py   the checkpoint through transformers' `from_pretrained`
parts.py    the engine's parts at load: decoder, step, EnCodec, compute thread
windows.py  tracks longer than one window, and continuations
model/      the fast decoder: weight conversion, projections, layers, prompts, sampling
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from tunesmith.engine.loader import LoadedModel
    from tunesmith.engine.parts import EngineParts

__all__ = ["assemble", "load"]


# The family's entry points (`tunesmith.engine.registry`); torch loads when they are called,
# not when the package is imported (the torch-free tiers import the engine package).
def load(source: str, device: torch.device) -> tuple[Any, Any]:
    from tunesmith.engine.musicgen.loader import load as load_checkpoint

    return load_checkpoint(source, device)


def assemble(
    model: str,
    loaded: LoadedModel,
    precision: str,
    step: str,
    max_batch: int,
    batch_window: float,
) -> EngineParts:
    from tunesmith.engine.musicgen.parts import assemble as assemble_parts

    return assemble_parts(model, loaded, precision, step, max_batch, batch_window)
