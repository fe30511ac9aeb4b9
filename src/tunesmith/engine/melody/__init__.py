"""musicgen-melody: conditioned on a melody's chroma and the text, as a prefix of the decoder's
input instead of cross-attention.

chroma.py     the chroma features, without torchaudio
loader.py     the checkpoint and a torchaudio-free processor
prefix.py     the chroma-and-text prefix per window, for the fast decoder (`musicgen.model`)
parts.py      the engine's parts at load: the fast decoder, without cross-attention
generator.py  transformers' own generation: the oracle tests and the benchmark compare with
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
    from tunesmith.engine.melody.loader import load as load_checkpoint

    return load_checkpoint(source, device)


def assemble(
    model: str,
    loaded: LoadedModel,
    precision: str,
    step: str,
    max_batch: int,
    batch_window: float,
) -> EngineParts:
    from tunesmith.engine.melody.parts import assemble as assemble_parts

    return assemble_parts(model, loaded, precision, step, max_batch, batch_window)
