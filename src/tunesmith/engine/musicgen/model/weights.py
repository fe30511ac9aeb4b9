"""The decoder's weights, converted once at load into the layout the step reads.

transformers' modules hold the checkpoint; `DecoderWeights` reads them once, a layer at a time:
q/k/v fused, each projection at the decoder's precision and beginning with the layer norm
before it (`musicgen.model.projections`), the LM heads fused, the codebook embeddings
stacked, cross-attention's keys and values kept for prompt encoding. Quantized weights come
from (and go to) the `WeightStore`; checkpoint pages that have served their turn leave memory.
`FastDecoder` (`tunesmith.engine.musicgen.model.decoder`) steps over them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from tunesmith.engine import kernels
from tunesmith.engine.kernels import ACTIVATIONS
from tunesmith.engine.musicgen.model.layers import Layer
from tunesmith.engine.musicgen.model.projections import (
    HALF_DTYPES,
    FbgemmInt8Projection,
    Precision,
    Projection,
    fastest_linear_rows,
    projection,
)
from tunesmith.engine.process import drop_file_pages, trim_heap

if TYPE_CHECKING:
    from tunesmith.engine.musicgen.model.store import WeightStore

__all__ = ["DecoderWeights", "module_buffers", "release_decoder_weights"]


def _share(fused: torch.Tensor, linears: list[Any]) -> None:
    """Point each Linear's weight at its rows of `fused` (same values, storage shared)."""
    start = 0
    for linear in linears:
        rows = linear.weight.shape[0]
        linear.weight.data = fused[start : start + rows]
        start += rows


def _decoder_linears(model: Any) -> list[torch.nn.Linear]:
    decoder = model.decoder
    modules = [*decoder.model.decoder.layers.modules(), *decoder.lm_heads]
    return [m for m in modules if isinstance(m, torch.nn.Linear)]


def release_decoder_weights(model: Any) -> None:
    """Free the transformers decoder's Linear weights once `FastDecoder` holds converted copies.

    The model's decoder cannot run after this; the text encoder and EnCodec are untouched.
    """
    for module in _decoder_linears(model):
        module.weight = torch.nn.Parameter(torch.empty(0), requires_grad=False)


class DecoderWeights:
    """A loaded `MusicgenForConditionalGeneration` 's decoder weights at `precision`."""

    def __init__(
        self,
        model: Any,
        precision: Precision,
        device: torch.device,
        store: WeightStore | None = None,
    ) -> None:
        decoder = model.decoder.model.decoder
        self.model = model
        self.device = device
        self.precision = precision
        self.dtype = HALF_DTYPES.get(precision, torch.float32)
        self.kernels = kernels.status(device)
        compiled = self.kernels.path == "compiled"
        # converted weights come from (and go to) `store` where they are quantized; float
        # weights are the checkpoint's own
        self._store = store if self._quantized else None
        self.cache_dtype = self._cache_dtype(compiled)
        self._read_config(model.decoder.config)
        self._embed(decoder)
        # musicgen-melody's decoder conditions on a prefix of its input instead
        self.cross_attention = hasattr(decoder.layers[0], "encoder_attn")
        linear_rows = self._linear_rows(decoder, compiled)
        self._convert_layers(decoder, linear_rows, compiled)
        self._convert_heads(model, linear_rows, compiled)
        if self._store is not None:
            self._store.save()
        self._text_weights = [p.detach() for p in model.text_encoder.parameters()]
        # where the projections are compiled kernels, short prompts fold cross-attention's
        # weights into their keys and values (`tunesmith.engine.musicgen.model.cross`); the float
        # weights are read back from the projections per request (no second copy is kept)
        folds = compiled and precision in ("fp32", "int8", "int4")
        self.fold_cross = self.cross_attention and folds

    def _cache_dtype(self, compiled: bool) -> torch.dtype:
        """The self-attention cache's dtype. Late in a long track the cache is read as many
        bytes per step as the int8 weights: int8 and int4 (already approximate) keep it in int8
        rows with a scale each where the compiled kernel reads them (68 bytes a 64-value row
        against 256 in float32), else in bfloat16 where something reads that fast (a CPU with
        AVX-512 BF16; on plain AVX2 torch's bfloat16 attention is slower than its float32)."""
        if self.precision in ("int8", "int4") and compiled:
            return torch.int8
        if self.precision in ("int8", "int4") and _fast_bfloat16():
            return torch.bfloat16
        return self.dtype

    def _read_config(self, config: Any) -> None:
        """The decoder's shape, its activation and the codebooks' delay pattern."""
        self.num_codebooks = int(config.num_codebooks)
        self.vocab_size = int(config.vocab_size)
        self.pad_token_id = int(config.pad_token_id)
        self.hidden = int(config.hidden_size)
        self.heads = int(config.num_attention_heads)
        self.head_dim = self.hidden // self.heads
        self.audio_channels = int(getattr(config, "audio_channels", 1))
        if config.activation_function not in ACTIVATIONS:
            raise ValueError(f"unsupported activation {config.activation_function!r}")
        self.activation = ACTIVATIONS[config.activation_function]
        stereo = self.audio_channels == 2  # stereo interleaves two codebooks per delay
        self.delays = [k // 2 if stereo else k for k in range(self.num_codebooks)]
        self.max_delay = max(self.delays)
        self.embed_scale = math.sqrt(self.hidden) if config.scale_embedding else 1.0

    def _cast(self, t: torch.Tensor) -> torch.Tensor:
        return t.detach().to(device=self.device, dtype=self.dtype)

    def _norm(self, module: Any) -> list[torch.Tensor]:
        return [self._cast(module.weight), self._cast(module.bias)]

    def _embed(self, decoder: Any) -> None:
        """The codebook embeddings stacked ``(K, V + 1, D)``, and the position table."""

        def stack() -> dict[str, torch.Tensor]:
            return {"": torch.stack([self._cast(e.weight) for e in decoder.embed_tokens])}

        self.embeddings = (self._store.get("embeddings", stack) if self._store else stack())[""]
        self.positions = self._cast(decoder.embed_positions.weights)

    def _project(
        self,
        name: str,
        weights: list[torch.Tensor],
        linear_rows: int,
        compiled: bool,
        activation: int = 0,
        norm: list[torch.Tensor] | None = None,
        precision: Precision | None = None,
    ) -> Projection:
        """The projection of `weights` (the checkpoint's, stacked by output rows), converted
        (or found in the store under `name`) at `precision` (default: the decoder's)."""

        def load() -> torch.Tensor:
            stacked = weights[0] if len(weights) == 1 else torch.cat(weights)
            return stacked.to(self.device)

        return projection(
            load,
            precision or self.precision,
            linear_rows,
            compiled,
            activation,
            norm,
            in_features=int(weights[0].shape[1]),
            store=self._store,
            name=name,
        )

    @property
    def _side_precision(self) -> Precision:
        """The LM heads' and the cross-attention keys' and values' precision: int4's stay
        int8, where rounding costs the most (the heads, 2 % of a step's bytes) or nothing at all
        per step (the keys and values, computed once per request)."""
        return "int8" if self.precision == "int4" else self.precision

    @property
    def _quantized(self) -> bool:
        """Whether the decoder runs on converted weights (int8, int4), not the checkpoint's."""
        return self.precision not in ("fp32", *HALF_DTYPES)

    def drop_text_pages(self) -> None:
        """After a prompt is encoded: a quantized decoder's process is sized for its weights,
        not the text encoder's float32 ones (more than the decoder's), read back next time."""
        self._drop_pages(self._text_weights)

    def _drop_pages(self, weights: list[torch.Tensor], converted: bool = False) -> None:
        """Checkpoint `weights` that have served their turn leave memory (quantized precisions;
        fp32 runs on them): loading converts one layer at a time and never holds the whole
        float decoder, and a mapped page is read back if it is touched again. `converted`:
        loading just converted them, and the heap gives back the conversion's temporaries."""
        if self._quantized:
            drop_file_pages(weights)
            if converted:
                trim_heap()

    def _linear_rows(self, decoder: Any, compiled: bool) -> int:
        """fp32 without the compiled kernel: `F.linear` or ``mm``, timed on a few weights."""
        if self.precision != "fp32" or compiled:
            return 0
        sample = [layer.fc1.weight.to(self.device) for layer in decoder.layers[:4]]
        sample += [layer.fc2.weight.to(self.device) for layer in decoder.layers[:4]]
        return fastest_linear_rows(sample)

    def _convert_layers(self, decoder: Any, linear_rows: int, compiled: bool) -> None:
        """Each layer's projections at this precision (q/k/v fused), each beginning with the
        layer norm before it; the cross-attention k/v projections kept for prompt encoding
        (musicgen-melody's layers have no cross-attention). One layer's weights are read at a
        time."""
        self.cross_kv: list[tuple[Callable[[torch.Tensor], torch.Tensor], ...]] = []
        self.cross_qo: list[tuple[Projection, Projection]] = []  # the layers' q/out projections
        self.layers: list[Layer] = []
        for index, layer in enumerate(decoder.layers):
            sa, ca = layer.self_attn, getattr(layer, "encoder_attn", None)
            qkv = [sa.q_proj.weight, sa.k_proj.weight, sa.v_proj.weight]
            if self.precision == "fp32":  # the modules keep views of the fused copy: no duplicate
                fused = torch.cat(qkv).to(self.device)
                _share(fused, [sa.q_proj, sa.k_proj, sa.v_proj])
                qkv = [fused]
            # each layer norm begins the projection after it (none before out and fc2)
            parts: list[tuple[str, list[torch.Tensor], int, list[torch.Tensor] | None]] = [
                ("qkv", qkv, 0, self._norm(layer.self_attn_layer_norm)),
                ("out", [sa.out_proj.weight], 0, None),
            ]
            cross_norm = None
            if ca is not None:
                cross_norm = self._norm(layer.encoder_attn_layer_norm)
                parts += [
                    ("cross_q", [ca.q_proj.weight], 0, cross_norm),
                    ("cross_out", [ca.out_proj.weight], 0, None),
                ]
            parts += [
                ("fc1", [layer.fc1.weight], self.activation, self._norm(layer.final_layer_norm)),
                ("fc2", [layer.fc2.weight], 0, None),
            ]
            projections = [
                self._project(f"layers.{index}.{name}", w, linear_rows, compiled, act, n)
                for name, w, act, n in parts
            ]
            self.layers.append(
                Layer(index, self.hidden, cross_norm, projections, self.heads, compiled)
            )
            read = [w for _, ws, _, _ in parts for w in ws]
            if ca is not None:
                self.cross_kv.append(self._cross_kv(index, ca, linear_rows, compiled))
                self.cross_qo.append((projections[2], projections[3]))
                read += [ca.k_proj.weight, ca.v_proj.weight]
            self._drop_pages(read, converted=True)

    def _cross_kv(
        self, index: int, attention: Any, linear_rows: int, compiled: bool
    ) -> tuple[Callable[[torch.Tensor], torch.Tensor], ...]:
        """A layer's cross-attention key and value projections, used once per request: the
        checkpoint's float weights, or converted where the decoder is quantized (a quarter of
        the memory, kept for as long as the decoder)."""
        pair = [attention.k_proj.weight, attention.v_proj.weight]
        side = self._side_precision
        if not self._quantized:
            return tuple(partial(F.linear, weight=self._cast(w)) for w in pair)
        return tuple(
            self._project(
                f"layers.{index}.cross_{part}", [w], linear_rows, compiled, precision=side
            )
            for part, w in zip("kv", pair, strict=True)
        )

    def _convert_heads(self, model: Any, linear_rows: int, compiled: bool) -> None:
        """The codebooks' LM heads fused into one projection, beginning with the final norm."""
        heads = [head.weight for head in model.decoder.lm_heads]
        if self.precision == "fp32":
            fused = torch.cat(heads).to(self.device)
            _share(fused, list(model.decoder.lm_heads))
            heads = [fused]
        final_norm = self._norm(model.decoder.model.decoder.layer_norm)
        side = self._side_precision
        self.lm_heads = self._project("lm_heads", heads, linear_rows, compiled, 0, final_norm, side)
        self._drop_pages(heads, converted=True)

    @property
    def store_path(self) -> Path | None:
        """The file the converted weights are kept in (None: not kept)."""
        return None if self._store is None else self._store.path

    @property
    def weight_bytes(self) -> int:
        """Bytes of decoder weights a step reads (projections and heads)."""
        modules = [*self.layers, self.lm_heads]
        parts = [m for module in modules for m in module.modules() if isinstance(m, Projection)]
        return sum(part.nbytes for part in parts)

    def _cross_weights(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Each layer's cross-attention ``q_proj`` and ``out_proj`` weights in float32, one
        layer at a time (int8: one layer's float weights alive at once, not every layer's)."""
        for q, out in self.cross_qo:
            if isinstance(q, FbgemmInt8Projection) or isinstance(out, FbgemmInt8Projection):
                raise TypeError("fbgemm's int8 projections are not folded")
            yield q.dense(), out.dense()


def module_buffers(modules: list[tuple[Any, ...]]) -> list[torch.Tensor]:
    """The buffers of the modules in `modules`' tuples (functions have none)."""
    found: list[torch.Tensor] = []
    for group in modules:
        for module in group:
            if isinstance(module, torch.nn.Module):
                found += list(module.buffers())
    return found


def _fast_bfloat16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX-512 BF16 or AMX)."""
    cpu = getattr(torch._C, "_cpu", None)
    check = getattr(cpu, "_is_avx512_bf16_supported", None)
    return bool(check()) if check is not None else False
