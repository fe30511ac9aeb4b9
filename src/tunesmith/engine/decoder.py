"""tunesmith's own MusicGen decode loop over the transformers modules' weights.

transformers stays the source of the model definition and the checkpoint; this module reads
the loaded weights once into the layout the loop wants (fused q/k/v, fused LM heads, stacked
codebook embeddings, kernels per precision, see `tunesmith.engine.kernels`) and runs the
decoder step by step:

- the prompt is encoded once per request and each layer's cross-attention keys/values are
  computed once; the unconditional (classifier-free guidance) row attends to an all-masked
  prompt, which contributes exactly zero, so it skips cross-attention altogether; a prompt
  shorter than a head's size has its cross-attention weights folded into its keys and values
  (`tunesmith.engine.cross`), which a step then reads instead of the weights;
- the self-attention cache is preallocated per request, sized to the request's steps;
- conditional and unconditional rows of every request in the batch go through each weight
  matrix in one call; attention runs per request on its own cache (requests in a batch have
  different lengths and positions);
- the codebook delay pattern and sampling happen per request (`tunesmith.engine.sampling`);
- the layers, final norm and heads run as one TorchScript module (`_Stack`), so the ~60 small
  ops per layer around the matmuls run without the Python interpreter between them.

`step` takes any set of in-flight `DecodeJob` s, so requests can join and leave between steps.
"""

import itertools
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from tunesmith.engine import attention, cross, matvec
from tunesmith.engine.cross import FoldedCross
from tunesmith.engine.kernels import (
    ACTIVATIONS,
    HALF_DTYPES,
    FbgemmInt8Projection,
    Precision,
    Projection,
    fastest_linear_rows,
    projection,
)
from tunesmith.engine.sampling import SamplingParams, guided_logits, pick_tokens

__all__ = ["DecodeJob", "FastDecoder", "release_decoder_weights"]

log = logging.getLogger(__name__)


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


class _Batch(NamedTuple):
    """The in-flight jobs of one step, as the TorchScript step reads them. Per job j:
    ``caches[j]`` is its ``(layers, 2, rows, H, steps + 1, hd)`` self-attention cache, ``ts[j]``
    its position, ``rows[j]`` its row count and ``cross[j]`` its ``(layers, 2, 1, H, S, hd)``
    prompt keys/values; ``stacked`` (when not None) holds every job's prompt keys/values as one
    ``(layers, 2, J, H, S, hd)`` tensor; ``cond`` indexes each job's conditional row;
    ``folded[j]`` its `FoldedCross` or None (then its row goes through the weights)."""

    caches: list[torch.Tensor]
    ts: list[int]
    rows: list[int]
    cross: list[torch.Tensor]
    stacked: torch.Tensor | None
    cond: torch.Tensor
    folded: list[FoldedCross | None]


class _Layer(torch.nn.Module):
    """One decoder layer's step for a batch of jobs (TorchScript-able: see `FastDecoder`).

    ``x`` is ``(R, D)``: each job's rows, its conditional row first (see `_Batch`). The layer
    norms begin the projections after them (qkv, cross_q, fc1: see
    `tunesmith.engine.kernels`); out and fc2 add the residual."""

    cross_norm_weight: torch.Tensor
    cross_norm_bias: torch.Tensor

    def __init__(
        self,
        index: int,
        cross_norm: list[torch.Tensor],
        projections: Sequence[torch.nn.Module],
        heads: int,
        compiled_attention: bool,
    ) -> None:
        super().__init__()
        self.index = index
        self.compiled_attention = compiled_attention  # the kernels of `attention`
        self.heads = heads
        self.hidden = int(cross_norm[0].shape[0])
        self.head_dim = self.hidden // heads
        # cross-attention's layer norm, for the folded path (cross_q holds it too)
        self.register_buffer("cross_norm_weight", cross_norm[0], persistent=False)
        self.register_buffer("cross_norm_bias", cross_norm[1], persistent=False)
        # fc1 ends in the activation (see `tunesmith.engine.kernels.ACTIVATIONS`)
        self.qkv, self.out, self.cross_q, self.cross_out, self.fc1, self.fc2 = projections

    def forward(self, x: torch.Tensor, batch: _Batch) -> torch.Tensor:
        caches, ts, rows, prompts, stacked, cond, folded = batch
        x = self.out(self._self_attention(self.qkv(x), caches, ts, rows), x)
        # the conditional rows attend to the prompt (one job: row 0, a view, no copy); the
        # unconditional rows attend to an all-masked prompt, which adds exactly zero
        single = len(caches) == 1
        conditional = x.narrow(0, 0, 1) if single else x.index_select(0, cond)
        crossed = self._prompt_attention(conditional, prompts, stacked, folded)
        if single:
            x.narrow(0, 0, 1).add_(crossed)
        else:
            x.index_add_(0, cond, crossed)
        out: torch.Tensor = self.fc2(self.fc1(x), x)
        return out

    def _self_attention(
        self, qkv: torch.Tensor, caches: list[torch.Tensor], ts: list[int], rows: list[int]
    ) -> torch.Tensor:
        """Each job's rows write their keys/values at its position, then attend over its own
        cache (jobs differ in length and position): with the compiled kernel, one call for the
        whole batch."""
        if self.compiled_attention:
            out: torch.Tensor = torch.ops.tunesmith.self_attention(qkv, caches, ts, self.index)
            return out
        d, heads, head_dim = self.hidden, self.heads, self.head_dim
        outputs: list[torch.Tensor] = []
        row = 0
        for j in range(len(caches)):
            n, t = rows[j], ts[j]
            cache = caches[j][self.index]
            kv = qkv[row : row + n, d:].view(n, 2, heads, head_dim)
            cache.select(3, t).copy_(kv.transpose(0, 1))  # keys and values in one copy
            outputs.append(self._attend(qkv[row : row + n, :d], cache, t + 1))
            row += n
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)

    def _cross_attention(
        self, q: torch.Tensor, prompts: list[torch.Tensor], stacked: torch.Tensor | None
    ) -> torch.Tensor:
        if stacked is not None:  # one call for the batch: its prompts share a length
            kv = stacked[self.index]
            return self._attend(q, kv, kv.shape[3])
        outputs: list[torch.Tensor] = []
        for j in range(len(prompts)):
            kv = prompts[j][self.index]
            outputs.append(self._attend(q[j : j + 1], kv, kv.shape[3]))
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)

    def _prompt_attention(
        self,
        conditional: torch.Tensor,
        prompts: list[torch.Tensor],
        stacked: torch.Tensor | None,
        folded: list[FoldedCross | None],
    ) -> torch.Tensor:
        """Cross-attention of each job's conditional row (``(J, D)``, before the layer norm):
        a job with folded weights through them, always (its result must not depend on its
        batch), the others through the cross-attention weights (computed for every row when any
        job needs them)."""
        rows: list[torch.Tensor] = []
        which: list[int] = []
        for j in range(len(folded)):
            fold = folded[j]
            if fold is not None:
                rows.append(self._folded_attention(conditional[j : j + 1], fold))
                which.append(j)
        if len(rows) == len(folded):
            return rows[0] if len(rows) == 1 else torch.cat(rows)
        attended = self._cross_attention(self.cross_q(conditional), prompts, stacked)
        crossed: torch.Tensor = self.cross_out(attended)
        if len(rows) > 0:
            crossed[which] = torch.cat(rows)
        return crossed

    def _folded_attention(self, conditional: torch.Tensor, fold: FoldedCross) -> torch.Tensor:
        """One conditional row ``(1, D)`` over its prompt through `cross.fold` 's A and B."""
        a, a_scale, b, b_scale = fold
        out: torch.Tensor = torch.ops.tunesmith.folded_attention(
            conditional,
            a,
            a_scale,
            b,
            b_scale,
            self.index,
            self.heads,
            self.cross_norm_weight,
            self.cross_norm_bias,
        )
        return out

    def _attend(self, q: torch.Tensor, kv: torch.Tensor, length: int) -> torch.Tensor:
        """``q`` ``(n, D)`` over the first `length` positions of ``kv`` ``(2, n, H, T, hd)``
        -> ``(n, D)``: the compiled kernel, or torch's where it is unavailable."""
        n, heads, head_dim = q.shape[0], self.heads, self.head_dim
        if self.compiled_attention:
            query = q.view(n, heads, head_dim)
            out: torch.Tensor = torch.ops.tunesmith.decode_attention(query, kv, length)
        else:
            query = q.view(n, heads, 1, head_dim).to(kv.dtype)
            keys, values = kv[0, :, :, :length], kv[1, :, :, :length]
            out = F.scaled_dot_product_attention(query, keys, values)
        return out.reshape(n, self.hidden).to(q.dtype)


class _Stack(torch.nn.Module):
    """Every layer, then the LM heads (which begin with the final layer norm): embedded rows
    in, logits out."""

    def __init__(self, layers: list[_Layer], heads: torch.nn.Module) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList(layers)
        self.lm_heads = heads

    def forward(self, x: torch.Tensor, batch: _Batch) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, batch)
        logits: torch.Tensor = self.lm_heads(x)
        return logits


def _script(module: torch.nn.Module) -> Any:
    """TorchScript `module`: the step runs without Python between its ~60 ops per layer.

    Measured on the 2-core AVX2 CPU: the glue around the matmuls of one FFN block costs
    ~400 us eagerly and ~130 us scripted; `torch.compile` took 34 s to compile the same block
    and ran it slower. Where scripting is unavailable the same module runs eagerly."""
    try:
        return torch.jit.script(module)
    except Exception as exc:  # pragma: no cover - a torch without TorchScript
        log.warning("TorchScript unavailable (%s); the decoder runs eagerly", exc)
        return module


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

    def __init__(self, model: Any, precision: Precision, device: torch.device) -> None:
        decoder = model.decoder.model.decoder
        config = model.decoder.config
        self.model = model
        self.device = device
        self.precision = precision
        self.dtype = HALF_DTYPES.get(precision, torch.float32)
        # Late in a long track the self-attention cache is read as many bytes per step as the
        # int8 weights: int8 (already approximate) keeps it in int8 rows with a scale each
        # where the compiled kernel reads them (68 bytes a 64-value row against 256 in
        # float32), else in bfloat16 where something reads that fast (a CPU with AVX-512 BF16;
        # on plain AVX2 torch's bfloat16 attention is 2x slower than its float32)
        compiled_attention = device.type == "cpu" and attention.available()
        self.cache_dtype = self.dtype
        if precision == "int8" and compiled_attention:
            self.cache_dtype = torch.int8
        elif precision == "int8" and _fast_bfloat16():
            self.cache_dtype = torch.bfloat16
        self.num_codebooks = int(config.num_codebooks)
        self.vocab_size = int(config.vocab_size)
        self.pad_token_id = int(config.pad_token_id)
        self.hidden = int(config.hidden_size)
        self.heads = int(config.num_attention_heads)
        self.head_dim = self.hidden // self.heads
        self.audio_channels = int(getattr(config, "audio_channels", 1))
        if config.activation_function not in ACTIVATIONS:
            raise ValueError(f"unsupported activation {config.activation_function!r}")
        activation = ACTIVATIONS[config.activation_function]
        stereo = self.audio_channels == 2
        self.delays = [k // 2 if stereo else k for k in range(self.num_codebooks)]
        self.embed_scale = math.sqrt(self.hidden) if config.scale_embedding else 1.0

        def cast(t: torch.Tensor) -> torch.Tensor:
            return t.detach().to(device=device, dtype=self.dtype)

        def norm(module: Any) -> list[torch.Tensor]:
            return [cast(module.weight), cast(module.bias)]

        self.embeddings = torch.stack([cast(e.weight) for e in decoder.embed_tokens])  # (K,V+1,D)
        self.positions = cast(decoder.embed_positions.weights)
        compiled = device.type == "cpu" and matvec.available()  # the projections' kernel
        linear_rows = 0  # fp32 without the compiled kernel: timed on a few of the model's weights
        if precision == "fp32" and not compiled:
            sample = [layer.fc1.weight.to(device) for layer in decoder.layers[:4]]
            sample += [layer.fc2.weight.to(device) for layer in decoder.layers[:4]]
            linear_rows = fastest_linear_rows(sample)
        self.cross_kv: list[tuple[torch.Tensor, torch.Tensor]] = []  # used once per request
        self.cross_qo: list[tuple[Projection, Projection]] = []  # the layers' q/out projections
        self.layers: list[_Layer] = []
        for index, layer in enumerate(decoder.layers):
            sa, ca = layer.self_attn, layer.encoder_attn
            qkv = torch.cat([sa.q_proj.weight, sa.k_proj.weight, sa.v_proj.weight]).to(device)
            if precision == "fp32":  # the modules keep views of the fused copy: no duplicate
                _share(qkv, [sa.q_proj, sa.k_proj, sa.v_proj])
            weights = [qkv, sa.out_proj.weight, ca.q_proj.weight, ca.out_proj.weight]
            weights += [layer.fc1.weight, layer.fc2.weight]
            weights = [w.to(device) for w in weights]
            # each layer norm begins the projection after it (none before out and fc2)
            cross_norm = norm(layer.encoder_attn_layer_norm)
            norms = [norm(layer.self_attn_layer_norm), None, cross_norm, None]
            norms += [norm(layer.final_layer_norm), None]
            activations = [0, 0, 0, 0, activation, 0]
            projections = [
                projection(w, precision, linear_rows, compiled, act, n)
                for w, act, n in zip(weights, activations, norms, strict=True)
            ]
            self.layers.append(
                _Layer(index, cross_norm, projections, self.heads, compiled_attention)
            )
            self.cross_kv.append((cast(ca.k_proj.weight), cast(ca.v_proj.weight)))
            self.cross_qo.append((projections[2], projections[3]))
        heads = torch.cat([head.weight for head in model.decoder.lm_heads]).to(device)
        if precision == "fp32":
            _share(heads, list(model.decoder.lm_heads))
        final_norm = norm(decoder.layer_norm)
        self.lm_heads = projection(heads, precision, linear_rows, compiled, 0, final_norm)
        self._stack = _script(_Stack(self.layers, self.lm_heads))
        # where the projections are compiled kernels, short prompts fold cross-attention's
        # weights into their keys and values (`tunesmith.engine.cross`); the float weights
        # are read back from the projections per request (no second copy is kept)
        self.fold_cross = compiled and precision in ("fp32", "int8")
        self._codebook_index = torch.arange(self.num_codebooks, device=device)
        self._cond_index: dict[tuple[int, ...], torch.Tensor] = {}
        # the prompt keys/values of the current batch stacked, when all its prompts have the
        # same length: one cross-attention call per layer instead of one per job
        self._stacked: tuple[tuple[int, ...], torch.Tensor | None] = ((), None)
        self._serials = itertools.count(1)

    @property
    def weight_bytes(self) -> int:
        """Bytes of decoder weights a step reads (projections and heads)."""
        modules = [*self.layers, self.lm_heads]
        parts = [m for module in modules for m in module.modules() if isinstance(m, Projection)]
        return sum(part.nbytes for part in parts)

    def _cross_weights(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Each layer's cross-attention ``q_proj`` and ``out_proj`` weights in float32, one
        layer at a time (int8: 8 MB of float weights alive at once, not 200 MB)."""
        for q, out in self.cross_qo:
            if isinstance(q, FbgemmInt8Projection) or isinstance(out, FbgemmInt8Projection):
                raise TypeError("fbgemm's int8 projections are not folded")
            yield q.dense(), out.dense()

    def step_bytes(self, jobs: list[DecodeJob]) -> int:
        """Bytes of weights and folded prompts (`tunesmith.engine.cross`) a step over `jobs`
        reads, their caches aside: the cross-attention weights only where a job is unfolded."""
        folded = [job.folded for job in jobs if job.folded is not None]
        total = self.weight_bytes + sum(t.nbytes for f in folded for t in f if t is not None)
        if len(folded) == len(jobs):
            total -= sum(q.nbytes + out.nbytes for q, out in self.cross_qo)
        return total

    # -- per request ---------------------------------------------------------------------------

    def steps_for(self, frames: int) -> int:
        return frames + max(self.delays)

    @torch.inference_mode()
    def start(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        frames: int,
        sampling: SamplingParams,
        seed: int,
    ) -> DecodeJob:
        """Encode the prompt, compute cross-attention keys/values, allocate the cache."""
        model = self.model
        input_ids = input_ids.to(self.device)
        attention_mask = attention_mask.to(self.device)
        encoded = model.text_encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
        if getattr(model, "enc_to_dec_proj", None) is not None and (
            model.text_encoder.config.hidden_size != model.decoder.config.hidden_size
        ):
            encoded = model.enc_to_dec_proj(encoded)
        keep_prompt = attention_mask[0].bool()
        encoded = encoded[0, keep_prompt].to(self.dtype)  # (S, D) without padding
        shape = (1, -1, self.heads, self.head_dim)
        prompt_kv = torch.stack(
            [
                torch.stack([F.linear(encoded, w).view(shape).transpose(1, 2) for w in pair])
                for pair in self.cross_kv
            ]
        )  # (layers, 2, 1, H, S, hd)
        folded = None
        if self.fold_cross and encoded.shape[0] < self.head_dim:
            int8 = self.precision == "int8"
            folded = cross.fold(prompt_kv, self._cross_weights(), int8, self.dtype)
        steps = self.steps_for(frames)
        rows = 2 if sampling.guided else 1
        row = self.head_dim + (attention.SCALE_BYTES if self.cache_dtype == torch.int8 else 0)
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
        generator = torch.Generator(device=self.device)
        generator.manual_seed(seed)
        return DecodeJob(
            sampling,
            steps,
            tokens,
            keep,
            cache,
            prompt_kv,
            generator,
            folded=folded,
            serial=next(self._serials),
        )

    def codes(self, job: DecodeJob) -> torch.Tensor:
        """The finished job's audio codes, ``(K, frames)``, with the delay pattern undone."""
        frames = job.steps - max(self.delays)
        return torch.stack(
            [job.tokens[k, d + 1 : d + 1 + frames] for k, d in enumerate(self.delays)]
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
        batch = _Batch(
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


def _fast_bfloat16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX-512 BF16 or AMX)."""
    cpu = getattr(torch._C, "_cpu", None)
    check = getattr(cpu, "_is_avx512_bf16_supported", None)
    return bool(check()) if check is not None else False
