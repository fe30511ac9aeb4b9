"""tunesmith's own MusicGen decode loop over the transformers modules' weights.

transformers stays the source of the model definition and the checkpoint; this module reads
the loaded weights once into the layout the loop wants (fused q/k/v, fused LM heads, stacked
codebook embeddings, projections per precision, see `tunesmith.engine.model.projections`)
and runs the decoder step by step:

- the prompt is encoded once per request and each layer's cross-attention keys/values are
  computed once; the unconditional (classifier-free guidance) row attends to an all-masked
  prompt, which contributes exactly zero, so it skips cross-attention altogether; a prompt
  shorter than a head's size has its cross-attention weights folded into its keys and values
  (`tunesmith.engine.model.cross`), which a step then reads instead of the weights;
- the self-attention cache is preallocated per request, sized to the request's steps;
- conditional and unconditional rows of every request in the batch go through each weight
  matrix in one call; attention runs per request on its own cache (requests in a batch have
  different lengths and positions);
- the codebook delay pattern and sampling happen per request (`tunesmith.engine.model.sampling`);
- the layers, final norm and heads run as one TorchScript module (`layers.Stack`), so the ~60
  small ops per layer around the matmuls run without the Python interpreter between them.

`step` takes any set of in-flight `DecodeJob` s, so requests can join and leave between steps.
A job can start from known codes (the previous window of a long track, or audio to continue):
`prefill` runs them many positions at a time (`tunesmith.engine.model.prefill`), and the steps
after them keep the prompt's codes where the delay pattern still reaches into it.
"""

import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from tunesmith.engine import kernels
from tunesmith.engine.kernels import ACTIVATIONS, SCALE_BYTES
from tunesmith.engine.model import cross
from tunesmith.engine.model.cross import FoldedCross
from tunesmith.engine.model.layers import Batch, Layer, Stack, script
from tunesmith.engine.model.prefill import prefill
from tunesmith.engine.model.projections import (
    HALF_DTYPES,
    FbgemmInt8Projection,
    Precision,
    Projection,
    fastest_linear_rows,
    projection,
)
from tunesmith.engine.model.prompt import encode_prompt, prompt_keys_values
from tunesmith.engine.model.sampling import SamplingParams, guided_logits, pick_tokens
from tunesmith.engine.process import drop_file_pages, trim_heap

if TYPE_CHECKING:
    from tunesmith.engine.model.store import WeightStore

__all__ = ["Conditioning", "DecodeJob", "FastDecoder", "release_decoder_weights"]


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


@dataclass(frozen=True)
class Conditioning:
    """A prompt's text conditioning, computed once per request and shared by its windows:
    each layer's cross-attention keys/values ``(layers, 2, 1, H, S, hd)``, and their folded
    form where short prompts fold (`tunesmith.engine.model.cross`)."""

    cross: torch.Tensor
    folded: FoldedCross | None = None


@dataclass
class DecodeJob:
    """One request's decoding state. ``tokens[k, p]`` is codebook k at position p (0 = BOS)."""

    sampling: SamplingParams
    steps: int
    tokens: torch.Tensor  # (K, steps + 1) long
    keep: torch.Tensor  # (K, steps + 1) bool: True where the delay pattern lets a code through
    cache: torch.Tensor  # (layers, 2, rows, H, steps + 1, hd)
    cross: torch.Tensor  # (layers, 2, 1, H, S, hd) prompt keys and values
    generator: torch.Generator
    folded: FoldedCross | None = field(default=None, repr=False)  # see `cross.fold`
    serial: int = 0  # unique per decoder: identifies the job in per-batch caches
    t: int = 0  # tokens[:, :t+1] are known; the next step predicts position t + 1
    prefix: int = 0  # frames of known prompt codes: `prefill` runs positions below it
    known: torch.Tensor | None = field(default=None, repr=False)  # (K, steps + 1) prompt codes
    # parity checks and benchmarks: record each step's guided scores, or force the codes
    scores: list[torch.Tensor] | None = field(default=None, repr=False)
    teacher: torch.Tensor | None = field(default=None, repr=False)  # (K, steps + 1) codes

    @property
    def rows(self) -> int:
        return int(self.cache.shape[2])

    @property
    def done(self) -> bool:
        return self.t >= self.steps


class FastDecoder:
    """The decoder of a loaded `MusicgenForConditionalGeneration`, ready to step in batches."""

    def __init__(
        self,
        model: Any,
        precision: Precision,
        device: torch.device,
        store: "WeightStore | None" = None,
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
        linear_rows = self._linear_rows(decoder, compiled)
        self._convert_layers(decoder, linear_rows, compiled)
        self._convert_heads(model, linear_rows, compiled)
        if self._store is not None:
            self._store.save()
        self._text_weights = [p.detach() for p in model.text_encoder.parameters()]
        self._stack = script(Stack(self.layers, self.lm_heads))
        # where the projections are compiled kernels, short prompts fold cross-attention's
        # weights into their keys and values (`tunesmith.engine.model.cross`); the float
        # weights are read back from the projections per request (no second copy is kept)
        self.fold_cross = compiled and precision in ("fp32", "int8", "int4")
        self._codebook_index = torch.arange(self.num_codebooks, device=device)
        self._cond_index: dict[tuple[int, ...], torch.Tensor] = {}
        # the prompt keys/values of the current batch stacked, when all its prompts have the
        # same length: one cross-attention call per layer instead of one per job
        self._stacked: tuple[tuple[int, ...], torch.Tensor | None] = ((), None)
        self._serials = itertools.count(1)

    # -- conversion, once at load ----------------------------------------------------------------

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
        layer norm before it; the cross-attention k/v projections kept for prompt encoding.
        One layer's weights are read at a time."""
        self.cross_kv: list[tuple[Callable[[torch.Tensor], torch.Tensor], ...]] = []
        self.cross_qo: list[tuple[Projection, Projection]] = []  # the layers' q/out projections
        self.layers: list[Layer] = []
        for index, layer in enumerate(decoder.layers):
            sa, ca = layer.self_attn, layer.encoder_attn
            qkv = [sa.q_proj.weight, sa.k_proj.weight, sa.v_proj.weight]
            if self.precision == "fp32":  # the modules keep views of the fused copy: no duplicate
                fused = torch.cat(qkv).to(self.device)
                _share(fused, [sa.q_proj, sa.k_proj, sa.v_proj])
                qkv = [fused]
            weights = [qkv, [sa.out_proj.weight], [ca.q_proj.weight], [ca.out_proj.weight]]
            weights += [[layer.fc1.weight], [layer.fc2.weight]]
            # each layer norm begins the projection after it (none before out and fc2)
            cross_norm = self._norm(layer.encoder_attn_layer_norm)
            norms = [self._norm(layer.self_attn_layer_norm), None, cross_norm, None]
            norms += [self._norm(layer.final_layer_norm), None]
            activations = [0, 0, 0, 0, self.activation, 0]
            names = [f"layers.{index}.{n}" for n in ("qkv", "out", "cross_q", "cross_out")]
            names += [f"layers.{index}.fc1", f"layers.{index}.fc2"]
            projections = [
                self._project(name, w, linear_rows, compiled, act, n)
                for name, w, act, n in zip(names, weights, activations, norms, strict=True)
            ]
            self.layers.append(Layer(index, cross_norm, projections, self.heads, compiled))
            self.cross_kv.append(self._cross_kv(index, ca, linear_rows, compiled))
            self.cross_qo.append((projections[2], projections[3]))
            pair = [ca.k_proj.weight, ca.v_proj.weight]
            self._drop_pages([w for ws in weights for w in ws] + pair, converted=True)

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

    def step_bytes(self, jobs: list[DecodeJob]) -> int:
        """Bytes of weights and folded prompts (`tunesmith.engine.model.cross`) a step over `jobs`
        reads, their caches aside: the cross-attention weights only where a job is unfolded."""
        folded = [job.folded for job in jobs if job.folded is not None]
        total = self.weight_bytes + sum(t.nbytes for f in folded for t in f if t is not None)
        if len(folded) == len(jobs):
            total -= sum(q.nbytes + out.nbytes for q, out in self.cross_qo)
        return total

    # -- per request ---------------------------------------------------------------------------

    def steps_for(self, frames: int) -> int:
        return frames + self.max_delay

    @torch.inference_mode()
    def condition(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Conditioning:
        """Encode the prompt and compute each layer's cross-attention keys/values."""
        ids, mask = input_ids.to(self.device), attention_mask.to(self.device)
        encoded = encode_prompt(self.model, ids, mask, self.dtype)
        # a quantized decoder's process is sized for its weights, not the text encoder's
        # float32 ones (more than the decoder's): they are read back for the next prompt
        self._drop_pages(self._text_weights)
        prompt_kv = prompt_keys_values(encoded, self.cross_kv, self.heads)
        self._drop_pages(_buffers(self.cross_kv))  # used again by the next prompt only
        folded = None
        if self.fold_cross and encoded.shape[0] < self.head_dim:
            int8 = self.precision in ("int8", "int4")  # A and B are small: int8 serves int4 too
            folded = cross.fold(prompt_kv, self._cross_weights(), int8, self.dtype)
            # a folded job's steps read A and B instead of these (a job with a long prompt
            # reads them back on its first step)
            self._drop_pages(_buffers(self.cross_qo))
        return Conditioning(prompt_kv, folded)

    def start(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        frames: int,
        sampling: SamplingParams,
        seed: int,
    ) -> DecodeJob:
        """A job for `frames` new frames of a prompt, its generator seeded with `seed`."""
        generator = torch.Generator(device=self.device)
        generator.manual_seed(seed)
        return self.open(self.condition(input_ids, attention_mask), frames, sampling, generator)

    @torch.inference_mode()
    def open(
        self,
        conditioning: Conditioning,
        frames: int,
        sampling: SamplingParams,
        generator: torch.Generator,
        prompt: torch.Tensor | None = None,
    ) -> DecodeJob:
        """A job of `frames` frames in all, the first of them the known codes `prompt`
        ``(K, F)`` (none: every frame is new); `generator` carries on from any earlier window.
        Allocates the cache; `prefill` then runs the prompt before the first step."""
        steps = self.steps_for(frames)
        rows = 2 if sampling.guided else 1
        row = self.head_dim + (SCALE_BYTES if self.cache_dtype == torch.int8 else 0)
        cache = torch.zeros(
            (len(self.layers), 2, rows, self.heads, steps + 1, row),
            dtype=self.cache_dtype,
            device=self.device,
        )
        positions = torch.arange(steps + 1, device=self.device)
        delays = torch.tensor(self.delays, device=self.device)[:, None]
        keep = (positions[None, :] > delays) & (positions[None, :] <= delays + frames)
        tokens = torch.full(
            (self.num_codebooks, steps + 1), self.pad_token_id, dtype=torch.long, device=self.device
        )
        job = DecodeJob(
            sampling,
            steps,
            tokens,
            keep,
            cache,
            conditioning.cross,
            generator,
            folded=conditioning.folded,
            serial=next(self._serials),
        )
        if prompt is not None and prompt.shape[1] > 0:
            known = prompt.shape[1]
            if known >= frames:
                raise ValueError(f"a prompt of {known} frames leaves none of {frames} to generate")
            # codebook k's frame f sits at position f + 1 + delay k (the delay pattern)
            job.known = (positions[None, :] > delays) & (positions[None, :] <= delays + known)
            for k, d in enumerate(self.delays):
                tokens[k, d + 1 : d + 1 + known] = prompt[k].to(self.device)
            job.prefix = known
        return job

    def prefill(self, job: DecodeJob, limit: int) -> None:
        """Run up to `limit` positions of the job's known prompt (see `open`)."""
        prefill(self, job, limit)

    def final_frames(self, job: DecodeJob) -> int:
        """Frames whose every codebook is decoded: frame f is complete once the step at
        position ``f + 1 + max_delay`` has run (the delay pattern)."""
        return max(0, min(job.steps - self.max_delay, job.t - self.max_delay))

    def codes(self, job: DecodeJob, start: int = 0, end: int | None = None) -> torch.Tensor:
        """Frames ``start:end`` of the job's audio codes (default: all of a finished job's),
        ``(K, frames)``, with the delay pattern undone (a prompt's codes included)."""
        end = job.steps - self.max_delay if end is None else end
        return torch.stack(
            [job.tokens[k, d + 1 + start : d + 1 + end] for k, d in enumerate(self.delays)]
        )

    # -- the step ------------------------------------------------------------------------------

    @torch.inference_mode()
    def step(self, jobs: list[DecodeJob]) -> None:
        """Advance every job by one position (the caller drops jobs that are `done`)."""
        inputs = []
        positions = []
        for job in jobs:
            current = job.tokens[:, job.t]
            inputs.append(current.expand(job.rows, -1))
            positions.append(self.positions[job.t].expand(job.rows, -1))
        tokens = torch.cat(inputs)  # (R, K)
        x = self.embeddings[self._codebook_index, tokens].sum(dim=1)  # (R, D)
        if self.embed_scale != 1.0:
            x = x * self.embed_scale
        x = x + torch.cat(positions)
        rows = [job.rows for job in jobs]
        batch = Batch(
            [job.cache for job in jobs],
            [job.t for job in jobs],
            rows,
            [job.cross for job in jobs],
            self._stacked_cross(jobs),
            self._conditional_rows(tuple(rows)),
            [job.folded for job in jobs],
        )
        logits = self._stack(x, batch)
        logits = logits.float().view(x.shape[0], self.num_codebooks, self.vocab_size)
        row = 0
        for job in jobs:
            scores = guided_logits(logits[row : row + job.rows], job.sampling)
            row += job.rows
            if job.scores is not None:
                job.scores.append(scores)
            position = job.t + 1
            if job.teacher is not None:
                picked = job.teacher[:, position]
            else:
                picked = pick_tokens(scores, job.sampling, job.generator)
            if job.known is not None and position <= job.prefix + self.max_delay:
                # the delayed codebooks still read the prompt's frames here
                picked = torch.where(job.known[:, position], job.tokens[:, position], picked)
            keep = job.keep[:, position]
            job.tokens[:, position] = torch.where(keep, picked, self.pad_token_id)
            job.t = position

    def _conditional_rows(self, rows: tuple[int, ...]) -> torch.Tensor:
        """Index of each job's conditional (first) row, cached per batch layout."""
        index = self._cond_index.get(rows)
        if index is None:
            firsts = [sum(rows[:i]) for i in range(len(rows))]
            index = self._cond_index[rows] = torch.tensor(firsts, device=self.device)
        return index

    def _stacked_cross(self, jobs: list[DecodeJob]) -> torch.Tensor | None:
        """The batch's prompt keys/values as one ``(layers, 2, J, H, S, hd)`` tensor when the
        batch has several jobs whose prompts share a length (rebuilt only when it changes)."""
        key = tuple(job.serial for job in jobs)  # not id(): a freed job's id gets reused
        if self._stacked[0] != key:
            lengths = {job.cross.shape[4] for job in jobs}
            stacked = None
            if len(jobs) > 1 and len(lengths) == 1:
                stacked = torch.cat([job.cross for job in jobs], dim=2)
            self._stacked = (key, stacked)
        return self._stacked[1]


def _buffers(modules: list[tuple[Any, ...]]) -> list[torch.Tensor]:
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
