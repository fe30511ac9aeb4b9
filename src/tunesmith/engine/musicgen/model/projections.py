"""The decoder's projections, one module per precision, as TorchScript-able modules.

A decode step is a handful of activation rows (one or two per request) times ~344M weights,
so it is bound by reading weights. Each projection holds one weight matrix in the layout its
kernel reads fastest:

- ``fp32`` (`DenseProjection`): on the CPU the compiled kernel (`tunesmith.engine.kernels`),
  which reads the weights faster than torch's best, from the transformers module's own tensor
  (no copy). Where it is unavailable (no C compiler), `F.linear` or ``mm(W, x.T)``, whichever
  streams the weight faster on this CPU for the row count (`fastest_linear_rows` measures it
  once at load: which one wins depends on the CPU's vector units).
- ``int8`` (`Int8Projection`): int8 weights per output channel in the compiled kernel's packed
  layout, activations rounded to int16 per row: a quarter of the bytes to read. CPU only. Where
  the compiled kernel is unavailable, `FbgemmInt8Projection`: fbgemm dynamic quantization, the
  kernel `torch.ao.quantization.quantize_dynamic` uses (activations rounded to 8 bits per call).
  fbgemm picks one activation scale for the whole input, which would make a request's result
  depend on the other rows in its batch; so each row is scaled to a max-abs of 1 and two extra
  input columns fixed at +1 and -1 (against zero weights) pin the range.
- ``int4`` (`Int4Projection`): 4-bit weights with a float16 scale per 32 inputs of each output
  (`tunesmith.engine.kernels.int4`), activations rounded to int8 per group of 32: 0.5625 bytes
  a weight, the fastest CPU precision and the least exact. CPU only; where the compiled kernel
  is unavailable, `TorchInt4Projection`: its torch reference, the same sums (slowly).
- ``fp16`` / ``bf16``: half-precision weights with `F.linear` (CUDA).

A projection can begin with the layer norm before it (``norm``: weight and bias, eps 1e-5),
end in the decoder's activation (`tunesmith.engine.kernels.ACTIVATIONS`), and add a residual to
its result: the compiled operator does all three in the one call (no torch operator between),
the others with the torch references (`tunesmith.engine.kernels.reference`).
"""

import logging
import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, Self

import torch
import torch.nn.functional as F

from tunesmith.engine.kernels import int4, matvec
from tunesmith.engine.kernels.reference import finish, layer_norm, matvec_int4

if TYPE_CHECKING:
    from tunesmith.engine.musicgen.model.store import WeightStore

__all__ = [
    "PRECISIONS",
    "DenseProjection",
    "FbgemmInt8Projection",
    "Int4Projection",
    "Int8Projection",
    "Precision",
    "TorchInt4Projection",
    "Projection",
    "fastest_linear_rows",
    "projection",
    "resolve_precision",
]

Precision = Literal["fp32", "int8", "int4", "fp16", "bf16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "int8", "int4", "fp16", "bf16")
HALF_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
log = logging.getLogger(__name__)

ALWAYS_LINEAR = 1 << 30  # `linear_rows` for devices where `F.linear` is the kernel (CUDA)


def _register_norm(module: torch.nn.Module, norm: list[torch.Tensor] | None) -> None:
    module.register_buffer("norm_weight", None if norm is None else norm[0], persistent=False)
    module.register_buffer("norm_bias", None if norm is None else norm[1], persistent=False)


def resolve_precision(precision: str, device: torch.device) -> Precision:
    """``auto`` is fp32 on the CPU (exact) and fp16 on CUDA; int8 and int4 are CPU-only, halves
    CUDA-only."""
    from tunesmith.errors import ConfigError

    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if precision in ("int8", "int4") and device.type != "cpu":
        raise ConfigError(
            f"TUNESMITH_PRECISION: {precision} runs on the CPU; use fp16 or bf16 on CUDA"
        )
    if precision in HALF_DTYPES and device.type != "cuda":
        raise ConfigError(
            f"TUNESMITH_PRECISION: {precision} needs CUDA; use fp32, int8 or int4 on CPU"
        )
    if precision not in PRECISIONS:
        raise ConfigError(f"TUNESMITH_PRECISION: unknown precision {precision!r}")
    return precision  # type: ignore[return-value]


class DenseProjection(torch.nn.Module):
    """``y = x @ W.T`` (no bias) for a float weight ``W`` of shape ``(out, in)``."""

    weight: torch.Tensor
    norm_weight: torch.Tensor | None
    norm_bias: torch.Tensor | None
    compiled: bool  # the compiled kernel (CPU float32), whatever the row count
    linear_rows: int  # otherwise inputs of up to this many rows use `F.linear`, larger ``mm``

    def __init__(
        self,
        weight: torch.Tensor,
        linear_rows: int,
        compiled: bool = False,
        activation: int = 0,
        norm: list[torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.register_buffer("weight", weight.detach().contiguous(), persistent=False)
        _register_norm(self, norm)
        self.linear_rows = linear_rows
        self.compiled = compiled
        self.activation = activation

    @property
    def nbytes(self) -> int:
        return int(self.weight.numel() * self.weight.element_size())

    def dense(self) -> torch.Tensor:
        """The float32 weight ``(out, in)`` this projection multiplies by."""
        return self.weight.float()

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if self.compiled:
            out: torch.Tensor = torch.ops.tunesmith.matvec(
                x, self.weight, None, self.activation, self.norm_weight, self.norm_bias, residual
            )
            return out
        x = layer_norm(x, self.norm_weight, self.norm_bias)
        if x.shape[0] <= self.linear_rows:
            return finish(F.linear(x, self.weight), self.activation, residual)
        return finish(torch.mm(self.weight, x.t()).t(), self.activation, residual)


class _PackedProjection(torch.nn.Module):
    """A projection over a weight packed for a compiled kernel: the parts `pack` makes
    (``weight`` and ``scale``) as buffers, which the weight store can hand over as they are."""

    weight: torch.Tensor
    scale: torch.Tensor
    norm_weight: torch.Tensor | None
    norm_bias: torch.Tensor | None

    def __init__(
        self,
        parts: dict[str, torch.Tensor],
        in_features: int,
        activation: int = 0,
        norm: list[torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.register_buffer("weight", parts["weight"], persistent=False)
        self.register_buffer("scale", parts["scale"], persistent=False)
        _register_norm(self, norm)
        self.in_features = in_features
        self.activation = activation

    # the layout's two directions: weight -> (packed, scale); (packed, scale, in) -> weight
    _pack: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    _unpack: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]

    @classmethod
    def pack(cls, weight: torch.Tensor) -> dict[str, torch.Tensor]:
        """`weight` ``(out, in)`` as this projection keeps it."""
        packed, scale = cls._pack(weight)
        return {"weight": packed, "scale": scale}

    def dense(self) -> torch.Tensor:
        """The float32 weight ``(out, in)`` this projection multiplies by (its rounded values
        times their scales)."""
        return type(self)._unpack(self.weight, self.scale, self.in_features)

    @classmethod
    def quantize(
        cls, weight: torch.Tensor, activation: int = 0, norm: list[torch.Tensor] | None = None
    ) -> Self:
        return cls(cls.pack(weight), int(weight.shape[1]), activation, norm)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        out: torch.Tensor = torch.ops.tunesmith.matvec(
            x, self.weight, self.scale, self.activation, self.norm_weight, self.norm_bias, residual
        )
        return out


class Int8Projection(_PackedProjection):
    """``y ≈ x @ W.T`` with ``W`` quantized to int8 per output channel (compiled kernel, CPU)."""

    _pack = staticmethod(matvec.pack_int8)
    _unpack = staticmethod(matvec.unpack_int8)

    @property
    def nbytes(self) -> int:
        return int(self.scale.shape[0]) * self.in_features  # one byte per weight


class Int4Projection(_PackedProjection):
    """``y ≈ x @ W.T`` with ``W`` rounded to 4 bits per group of inputs (compiled kernel, CPU)."""

    _pack = staticmethod(int4.pack_int4)
    _unpack = staticmethod(int4.unpack_int4)

    @property
    def nbytes(self) -> int:  # the packed values (padding included) and their float16 scales
        return int(self.weight.numel()) + 2 * int(self.scale.numel())


class TorchInt4Projection(Int4Projection):
    """`Int4Projection` through the kernel's torch reference, where the compiled kernel is
    unavailable: the same sums, far slower. (A class of its own: inlined beside the kernel's
    call, its ops would cost the scripted step seconds of optimizing at its first calls.)"""

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        x = layer_norm(x, self.norm_weight, self.norm_bias)
        return finish(matvec_int4(x, self.weight, self.scale), self.activation, residual)


class FbgemmInt8Projection(torch.nn.Module):
    """``y ≈ x @ W.T`` with ``W`` quantized to int8 per output channel (fbgemm, CPU): where the
    compiled kernel is unavailable."""

    pins: torch.Tensor
    norm_weight: torch.Tensor | None
    norm_bias: torch.Tensor | None

    def __init__(
        self, weight: torch.Tensor, activation: int = 0, norm: list[torch.Tensor] | None = None
    ) -> None:
        super().__init__()
        _register_norm(self, norm)
        out_features, in_features = weight.shape
        padded = torch.zeros(out_features, in_features + _PAD)
        padded[:, :in_features] = weight.detach().float()
        self.packed = _pack_int8(padded)
        pins = torch.zeros(1, _PAD)
        pins[0, :2] = torch.tensor([1.0, -1.0])
        self.register_buffer("pins", pins, persistent=False)
        self.weight_count = out_features * in_features
        self.activation = activation

    @property
    def nbytes(self) -> int:
        return int(self.weight_count)  # one byte per weight

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        x = layer_norm(x, self.norm_weight, self.norm_bias)
        scale = x.abs().amax(dim=1, keepdim=True).clamp_(min=1e-12)
        rows = torch.cat([x / scale, self.pins.expand(x.shape[0], -1)], dim=1)
        out: torch.Tensor = torch.ops.quantized.linear_dynamic(rows, self.packed, True)
        return finish(out.mul_(scale), self.activation, residual)


Projection = DenseProjection | Int8Projection | Int4Projection | FbgemmInt8Projection


def projection(
    weight: torch.Tensor | Callable[[], torch.Tensor],
    precision: Precision,
    linear_rows: int,
    compiled: bool,
    activation: int = 0,
    norm: list[torch.Tensor] | None = None,
    *,
    in_features: int | None = None,
    store: "WeightStore | None" = None,
    name: str = "",
) -> Projection:
    """The projection module for `weight` at `precision` (its dtype converted as needed),
    beginning with the layer norm `norm` (its weight and bias, in the activations' dtype) if
    given and ending in `activation` (an `ACTIVATIONS` code, 0 for none); `compiled`: the
    compiled kernels are available (CPU).

    `weight` may be a function that makes it (with `in_features` given): a quantized weight
    found in `store` under `name` is taken from there, and the function is never called."""
    load = weight if callable(weight) else lambda: weight
    size = in_features if callable(weight) else int(weight.shape[1])
    if precision == "int8" and not compiled:
        return FbgemmInt8Projection(load(), activation, norm)
    if precision in ("int8", "int4"):
        if size is None:
            raise ValueError("a weight given as a function needs its in_features")
        kind: type[Int8Projection | Int4Projection] = Int8Projection
        if precision == "int4":
            kind = Int4Projection if compiled else TorchInt4Projection
        parts = (store.get(name, lambda: kind.pack(load())) if store else None) or kind.pack(load())
        return kind(parts, size, activation, norm)
    if precision in HALF_DTYPES:
        half = load().to(HALF_DTYPES[precision])
        return DenseProjection(half, ALWAYS_LINEAR, False, activation, norm)
    return DenseProjection(load(), linear_rows, compiled, activation, norm)


def fastest_linear_rows(weights: list[torch.Tensor], rows: int = 2) -> int:
    """Measure, on `weights` (a few of the model's own, cold), whether `F.linear` or ``mm``
    streams them faster for `rows` activation rows: returns `rows` if `F.linear` wins, else 0.

    The best kernel depends on the CPU's vector units, not on anything a setting could know."""
    if not weights or weights[0].device.type != "cpu":
        return ALWAYS_LINEAR
    inputs = {w.shape[1]: torch.randn(rows, w.shape[1], dtype=w.dtype) for w in weights}
    kernels = {"linear": DenseProjection(weights[0], rows), "mm": DenseProjection(weights[0], 0)}
    best = dict.fromkeys(kernels, float("inf"))
    with torch.inference_mode():
        for _ in range(4):  # interleaved, best of each: a noisy neighbour hits both alike
            for name, kernel in kernels.items():
                start = time.perf_counter()
                for w in weights:
                    kernel.weight = w
                    kernel(inputs[w.shape[1]])
                best[name] = min(best[name], time.perf_counter() - start)
    log.info(
        "fp32 kernel for %d rows: F.linear %.1f ms, mm %.1f ms",
        rows,
        *(1000 * best[name] for name in kernels),
    )
    return rows if best["linear"] < best["mm"] else 0


_PAD = 16  # the two range-pinning columns, padded to keep rows aligned


def _pack_int8(weight: torch.Tensor) -> torch.ScriptObject:
    """fbgemm-prepacked int8 weight with one scale per output channel (symmetric)."""
    scales = weight.abs().amax(dim=1).clamp(min=1e-8) / 127.0
    zero_points = torch.zeros(weight.shape[0], dtype=torch.int64)
    with warnings.catch_warnings():  # quantized tensor constructors are deprecated, not gone
        warnings.simplefilter("ignore")
        qweight = torch.quantize_per_channel(
            weight, scales.double(), zero_points, axis=0, dtype=torch.qint8
        )
        packed: torch.ScriptObject = torch.ops.quantized.linear_prepack(qweight, None)
        return packed
