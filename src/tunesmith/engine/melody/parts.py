"""Building a musicgen-melody engine at load: the fast decoder without cross-attention, its
conditioning the chroma-and-text prefix (`tunesmith.engine.melody.prefix`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tunesmith.engine.loader import LoadedModel
    from tunesmith.engine.melody.prefix import MelodyConditioner
    from tunesmith.engine.musicgen.model import FastDecoder
    from tunesmith.engine.parts import EngineParts

__all__ = ["assemble"]


def assemble(
    model: str,
    loaded: LoadedModel,
    precision: str,
    step: str,
    max_batch: int,
    batch_window: float,
) -> EngineParts:
    """The decoder at `precision` (int8/int4 on the CPU as for text models), batched with the
    model's other requests and stepped eagerly: a static or CUDA-graph step is a `ConfigError`
    (the static batch holds cross-attention prompts, not an input prefix)."""
    from tunesmith.engine.melody.prefix import MelodyConditioner
    from tunesmith.engine.musicgen.parts import build

    def conditioner(decoder: FastDecoder) -> MelodyConditioner:
        return MelodyConditioner(decoder, loaded)

    return build(model, loaded, precision, step, max_batch, batch_window, conditioner)
