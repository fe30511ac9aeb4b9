"""The sampling defaults every tier shares (audiocraft's and transformers' for MusicGen): the
request schema, the engine's parameters and, through ``/healthz``, the studio page read them
here and nowhere else."""

from __future__ import annotations

from typing import Final

__all__ = ["GUIDANCE_SCALE", "SAMPLING", "TEMPERATURE", "TOP_K", "TOP_P"]

TEMPERATURE: Final = 1.0
TOP_K: Final = 250  # 0: off
TOP_P: Final = 0.0  # 0: off
GUIDANCE_SCALE: Final = 3.0  # <= 1: off (no unconditional row)
SAMPLING: Final = {
    "temperature": TEMPERATURE,
    "top_k": TOP_K,
    "top_p": TOP_P,
    "guidance_scale": GUIDANCE_SCALE,
}
