"""The engine's kernels: the only code that knows C.

Each operator the decoder step calls (`OPERATORS`) has two implementations:

- the compiled one: a torch operator ``tunesmith::<name>`` (``csrc/ops.cpp``) over the C
  kernels (``csrc/*.c``, one header of shared constants, ``csrc/tunesmith.h``), built and bound
  by `tunesmith.engine.kernels.build` (CPU only);
- the torch reference (`tunesmith.engine.kernels.reference`): the fallback where the compiled
  one cannot be had (no compiler, a build error, a CUDA device), and the oracle the compiled
  one is tested against. The model's modules choose between the two once, when they are
  built, from `status`.

`status` says which path runs and, where the compiled one is missing, why and how to fix it.
The operators' schemas are defined here at import, so TorchScript can script the decoder
whether or not the libraries build.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

import torch

from tunesmith.engine.kernels import build

__all__ = [
    "ACTIVATIONS",
    "CHUNK",
    "LAYOUT",
    "MAX_HEAD_DIM",
    "OPERATORS",
    "Q4_GROUP",
    "Q4_TILE",
    "SCALE_BYTES",
    "TILE",
    "KernelStatus",
    "available",
    "status",
]


def _header_constants() -> dict[str, int]:
    """The ``#define TS_NAME <integer>`` constants of ``csrc/tunesmith.h``, by NAME."""
    text = (build.CSRC / "tunesmith.h").read_text()
    return {m[1]: int(m[2]) for m in re.finditer(r"^#define TS_(\w+) (-?\d+)\b", text, re.M)}


_C = _header_constants()
# every constant the kernels share: converted weights stored on disk are keyed by them
LAYOUT: Final = dict(_C)
TILE: Final = _C["TILE"]  # int8 weights: output rows per packed tile
CHUNK: Final = _C["CHUNK"]  # int8 weights: inputs per packed chunk
Q4_GROUP: Final = _C["Q4_GROUP"]  # int4 weights: inputs per scale
Q4_TILE: Final = _C["Q4_TILE"]  # int4 weights: output rows per packed tile
SCALE_BYTES: Final = _C["SCALE_BYTES"]  # an int8 cache row ends in its float32 scale
MAX_HEAD_DIM: Final = _C["MAX_HEAD_DIM"]
# the transformers activation -> its code in the kernels (0: none)
ACTIVATIONS: Final = {
    "gelu": _C["ACTIVATION_GELU"],
    "gelu_new": _C["ACTIVATION_GELU_TANH"],
    "gelu_pytorch_tanh": _C["ACTIVATION_GELU_TANH"],
}

# operator -> its schema (its CPU kernel is csrc/ops.cpp's)
OPERATORS: Final = {
    "matvec": "matvec(Tensor x, Tensor weight, Tensor? scale, int activation=0, Tensor? "
    "norm_weight=None, Tensor? norm_bias=None, Tensor? residual=None) -> Tensor",
    "folded_attention": "folded_attention(Tensor x, Tensor a, Tensor? a_scale, Tensor b, Tensor? "
    "b_scale, int layer, int heads, Tensor norm_weight, Tensor norm_bias) -> Tensor",
    "decode_attention": "decode_attention(Tensor query, Tensor cache, int length) -> Tensor",
    "self_attention": "self_attention(Tensor qkv, Tensor(a!)[] caches, int[] ts, int layer) "
    "-> Tensor",
}
_definitions = torch.library.Library("tunesmith", "DEF")  # type: ignore[no-untyped-call]
for _schema in OPERATORS.values():
    _definitions.define(_schema)  # type: ignore[no-untyped-call]


@dataclass(frozen=True)
class KernelStatus:
    """Which kernels a device runs: ``compiled`` (with the CPU's instruction set) or ``torch``
    (with the reason and the fix, where the compiled ones were wanted)."""

    path: Literal["compiled", "torch"]
    isa: str | None = None
    cause: str | None = None
    fix: str | None = None

    def describe(self) -> str:
        if self.path == "compiled":
            return f"compiled ({self.isa})"
        return "torch" + (f" ({self.cause})" if self.cause else "")


def available() -> bool:
    """Whether the compiled kernels can be used (building them on the first call)."""
    return build.library() is not None


def status(device: torch.device | str = "cpu") -> KernelStatus:
    """The kernels a decoder on `device` runs (building the compiled ones on the first call)."""
    if torch.device(device).type != "cpu":  # the compiled kernels are CPU code
        return KernelStatus("torch")
    failure = build.failure()
    if failure is not None:
        return KernelStatus("torch", cause=failure.cause, fix=failure.fix)
    return KernelStatus("compiled", isa=build.isa())
