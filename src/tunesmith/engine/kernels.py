"""Matrix-vector kernels for the decode loop, one per precision.

A decode step is a handful of activation rows (one or two per request) times ~344M weights,
so it is bound by reading weights. Each `Projection` holds one weight matrix in the layout its
kernel reads fastest and picks the kernel by the number of rows:

- ``fp32``: `F.linear` for one or two rows; ``mm(W, x.T)`` beyond that, which streams the
  weight once for all rows where `F.linear` re-reads it (measured on the 2-core AVX2 CPU).
- ``int8``: fbgemm dynamic quantization (int8 weights per output channel, activations
  quantized per call), the kernel `torch.ao.quantization.quantize_dynamic` uses: a quarter of
  the bytes to read. CPU only. fbgemm picks one activation scale for the whole input, which
  would make a request's result depend on the other rows in its batch; so each row is scaled
  to a max-abs of 1 and two extra input columns fixed at +1 and -1 (against zero weights) pin
  the range: every row is quantized the same way whatever it is batched with.
- ``fp16`` / ``bf16``: half-precision weights with `F.linear` (CUDA).
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch
import torch.nn.functional as F

__all__ = ["PRECISIONS", "Precision", "Projection", "resolve_precision"]

Precision = Literal["fp32", "int8", "fp16", "bf16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "int8", "fp16", "bf16")
HALF_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_precision(precision: str, device: torch.device) -> Precision:
    """``auto`` is fp32 on the CPU (exact) and fp16 on CUDA; int8 is CPU-only, halves CUDA-only."""
    from tunesmith.errors import ConfigError

    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if precision == "int8" and device.type != "cpu":
        raise ConfigError("TUNESMITH_PRECISION: int8 runs on the CPU; use fp16 or bf16 on CUDA")
    if precision in HALF_DTYPES and device.type != "cuda":
        raise ConfigError(f"TUNESMITH_PRECISION: {precision} needs CUDA; use fp32 or int8 on CPU")
    if precision not in PRECISIONS:
        raise ConfigError(f"TUNESMITH_PRECISION: unknown precision {precision!r}")
    return precision  # type: ignore[return-value]


class Projection:
    """``y = x @ W.T`` (no bias) for a weight ``W`` of shape ``(out, in)``."""

    def __init__(self, weight: torch.Tensor, precision: Precision) -> None:
        self.precision = precision
        self.out_features, self.in_features = weight.shape
        if precision == "int8":
            padded = torch.zeros(self.out_features, self.in_features + _PAD)
            padded[:, : self.in_features] = weight.detach().float()
            self._packed = _pack_int8(padded)
            self._inputs: dict[int, torch.Tensor] = {}  # per row count: [x / scale, +1, -1, 0...]
            self.weight: torch.Tensor | None = None
        elif precision in HALF_DTYPES:
            self.weight = weight.detach().to(HALF_DTYPES[precision]).contiguous()
        else:
            self.weight = weight.detach().contiguous()

    @property
    def nbytes(self) -> int:
        if self.weight is not None:
            return self.weight.numel() * self.weight.element_size()
        return self.out_features * self.in_features  # int8: one byte per weight

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight is None:
            return self._int8(x)
        if x.shape[0] <= 2 or x.device.type != "cpu":
            return F.linear(x, self.weight)
        return torch.mm(self.weight, x.t()).t()

    def _int8(self, x: torch.Tensor) -> torch.Tensor:
        rows = self._inputs.get(x.shape[0])
        if rows is None:  # reused: projections run on the one decode thread
            rows = torch.zeros(x.shape[0], self.in_features + _PAD)
            rows[:, self.in_features] = 1.0
            rows[:, self.in_features + 1] = -1.0
            self._inputs[x.shape[0]] = rows
        scale = x.abs().amax(dim=1, keepdim=True).clamp_(min=1e-12)  # (vector_norm is slower)
        torch.div(x, scale, out=rows[:, : self.in_features])
        out: torch.Tensor = torch.ops.quantized.linear_dynamic(rows, self._packed, True)
        return out.mul_(scale)


_PAD = 16  # the two range-pinning columns, padded to keep rows aligned


def _pack_int8(weight: torch.Tensor) -> object:
    """fbgemm-prepacked int8 weight with one scale per output channel (symmetric)."""
    scales = weight.abs().amax(dim=1).clamp(min=1e-8) / 127.0
    zero_points = torch.zeros(weight.shape[0], dtype=torch.int64)
    with warnings.catch_warnings():  # quantized tensor constructors are deprecated, not gone
        warnings.simplefilter("ignore")
        qweight = torch.quantize_per_channel(
            weight, scales.double(), zero_points, axis=0, dtype=torch.qint8
        )
        return torch.ops.quantized.linear_prepack(qweight, None)
