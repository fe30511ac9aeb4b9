"""tunesmith's own MusicGen decode loop over the transformers modules' weights.

transformers stays the source of the model definition and the checkpoint; this module reads
the loaded weights once into the layout the loop wants (fused q/k/v, fused LM heads, stacked
codebook embeddings, kernels per precision, see `tunesmith.engine.kernels`) and runs the
decoder step by step:

- the prompt is encoded once per request and each layer's cross-attention keys/values are
  computed once; the unconditional (classifier-free guidance) row attends to an all-masked
  prompt, which contributes exactly zero, so it skips cross-attention altogether;
- the self-attention cache is preallocated per request, sized to the request's steps;
- conditional and unconditional rows of every request in the batch go through each weight
  matrix in one call; attention runs per request on its own cache (requests in a batch have
  different lengths and positions);
- the codebook delay pattern and sampling happen per request (`tunesmith.engine.sampling`).

`step` takes any set of in-flight `DecodeJob` s, so requests can join and leave between steps.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from tunesmith.engine.kernels import HALF_DTYPES, Precision, Projection
from tunesmith.engine.sampling import SamplingParams, guided_logits, pick_tokens

__all__ = ["DecodeJob", "FastDecoder", "release_decoder_weights"]


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


@dataclass
class _Layer:
    ln1: tuple[torch.Tensor, torch.Tensor]
    ln2: tuple[torch.Tensor, torch.Tensor]
    ln3: tuple[torch.Tensor, torch.Tensor]
    qkv: Projection
    out: Projection
    cross_q: Projection
    cross_out: Projection
    cross_k: torch.Tensor  # (D, D) weights, used once per request
    cross_v: torch.Tensor
    fc1: Projection
    fc2: Projection


@dataclass
class DecodeJob:
    """One request's decoding state. ``tokens[k, p]`` is codebook k at position p (0 = BOS)."""

    sampling: SamplingParams
    steps: int
    tokens: torch.Tensor  # (K, steps + 1) long
    keep: torch.Tensor  # (K, steps + 1) bool: True where the delay pattern lets a code through
    cache: torch.Tensor  # (layers, 2, rows, H, steps + 1, hd)
    cross: list[tuple[torch.Tensor, torch.Tensor]]  # per layer (1, H, S, hd) keys and values
    generator: torch.Generator
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
        # int8 weights: int8 (already approximate) keeps it in bfloat16 to halve that.
        self.cache_dtype = torch.bfloat16 if precision == "int8" else self.dtype
        self.num_codebooks = int(config.num_codebooks)
        self.vocab_size = int(config.vocab_size)
        self.pad_token_id = int(config.pad_token_id)
        self.hidden = int(config.hidden_size)
        self.heads = int(config.num_attention_heads)
        self.head_dim = self.hidden // self.heads
        self.audio_channels = int(getattr(config, "audio_channels", 1))
        if config.activation_function not in ("gelu", "gelu_new", "gelu_pytorch_tanh"):
            raise ValueError(f"unsupported activation {config.activation_function!r}")
        self._gelu_approx = "none" if config.activation_function == "gelu" else "tanh"
        stereo = self.audio_channels == 2
        self.delays = [k // 2 if stereo else k for k in range(self.num_codebooks)]
        self.embed_scale = math.sqrt(self.hidden) if config.scale_embedding else 1.0

        def cast(t: torch.Tensor) -> torch.Tensor:
            return t.detach().to(device=device, dtype=self.dtype)

        def ln(module: Any) -> tuple[torch.Tensor, torch.Tensor]:
            return cast(module.weight), cast(module.bias)

        self.embeddings = torch.stack([cast(e.weight) for e in decoder.embed_tokens])  # (K,V+1,D)
        self.positions = cast(decoder.embed_positions.weights)
        self.final_ln = ln(decoder.layer_norm)
        self.layers = []
        for layer in decoder.layers:
            sa, ca = layer.self_attn, layer.encoder_attn
            qkv = torch.cat([sa.q_proj.weight, sa.k_proj.weight, sa.v_proj.weight]).to(device)
            if precision == "fp32":  # the modules keep views of the fused copy: no duplicate
                _share(qkv, [sa.q_proj, sa.k_proj, sa.v_proj])
            self.layers.append(
                _Layer(
                    ln1=ln(layer.self_attn_layer_norm),
                    ln2=ln(layer.encoder_attn_layer_norm),
                    ln3=ln(layer.final_layer_norm),
                    qkv=Projection(qkv, precision),
                    out=Projection(sa.out_proj.weight.to(device), precision),
                    cross_q=Projection(ca.q_proj.weight.to(device), precision),
                    cross_out=Projection(ca.out_proj.weight.to(device), precision),
                    cross_k=cast(ca.k_proj.weight),
                    cross_v=cast(ca.v_proj.weight),
                    fc1=Projection(layer.fc1.weight.to(device), precision),
                    fc2=Projection(layer.fc2.weight.to(device), precision),
                )
            )
        self._codebook_index = torch.arange(self.num_codebooks, device=device)
        self._cond_index: dict[tuple[int, ...], torch.Tensor] = {}
        # cross-attention keys/values of the current batch stacked per layer, when all its
        # prompts have the same length: one attention call per layer instead of one per job
        self._stacked: tuple[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] | None
        self._stacked = None
        self._serials = itertools.count(1)
        heads = torch.cat([head.weight for head in model.decoder.lm_heads]).to(device)
        if precision == "fp32":
            _share(heads, list(model.decoder.lm_heads))
        self.lm_heads = Projection(heads, precision)

    @property
    def weight_bytes(self) -> int:
        """Bytes of decoder weights a step reads (projections and heads)."""
        per_layer = [
            p.nbytes
            for layer in self.layers
            for p in (layer.qkv, layer.out, layer.cross_q, layer.cross_out, layer.fc1, layer.fc2)
        ]
        return sum(per_layer) + self.lm_heads.nbytes

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
        cross = [
            (
                F.linear(encoded, layer.cross_k).view(shape).transpose(1, 2).contiguous(),
                F.linear(encoded, layer.cross_v).view(shape).transpose(1, 2).contiguous(),
            )
            for layer in self.layers
        ]
        steps = self.steps_for(frames)
        rows = 2 if sampling.guided else 1
        cache = torch.zeros(
            (len(self.layers), 2, rows, self.heads, steps + 1, self.head_dim),
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
            sampling, steps, tokens, keep, cache, cross, generator, serial=next(self._serials)
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
        cond_index = self._conditional_rows(tuple(job.rows for job in jobs))
        eps = 1e-5
        dim = (self.hidden,)
        for index, layer in enumerate(self.layers):
            h = F.layer_norm(x, dim, *layer.ln1, eps)
            attended = self._self_attention(index, jobs, layer.qkv(h))
            x = x + layer.out(attended)
            # the conditional rows attend to the prompt (one job: row 0, a view, no copy)
            conditional = x[:1] if len(jobs) == 1 else x.index_select(0, cond_index)
            hc = F.layer_norm(conditional, dim, *layer.ln2, eps)
            crossed = layer.cross_out(self._cross_attention(index, jobs, layer.cross_q(hc)))
            if len(jobs) == 1:
                x[:1] += crossed
            else:
                x.index_add_(0, cond_index, crossed)
            h = F.layer_norm(x, dim, *layer.ln3, eps)
            x = x + layer.fc2(F.gelu(layer.fc1(h), approximate=self._gelu_approx))
        x = F.layer_norm(x, dim, *self.final_ln, eps)
        logits = self.lm_heads(x).float().view(x.shape[0], self.num_codebooks, self.vocab_size)
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

    def _self_attention(self, index: int, jobs: list[DecodeJob], qkv: torch.Tensor) -> torch.Tensor:
        """Attention of each job's rows over its own cache; ``qkv`` is ``(R, 3D)``."""
        outputs = []
        row = 0
        d = self.hidden
        for job in jobs:
            rows = job.rows
            shape = (rows, self.heads, 1, self.head_dim)
            cache = job.cache[index]
            kv = qkv[row : row + rows, d:].view(rows, 2, self.heads, self.head_dim)
            cache[:, :, :, job.t] = kv.transpose(0, 1)  # keys and values in one copy
            length = job.t + 1
            query = qkv[row : row + rows, :d].view(shape).to(cache.dtype)
            out = F.scaled_dot_product_attention(
                query, cache[0, :, :, :length], cache[1, :, :, :length]
            )
            outputs.append(out.reshape(rows, self.hidden).to(qkv.dtype))
            row += rows
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)

    def _stacked_cross(self, jobs: list[DecodeJob]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer, the batch's cross keys/values as one ``(J, H, S, hd)`` pair (rebuilt only
        when the batch changes; the caller checks the prompts have one length)."""
        key = tuple(job.serial for job in jobs)  # not id(): a freed job's id gets reused
        if self._stacked is None or self._stacked[0] != key:
            layers = [
                (
                    torch.cat([job.cross[i][0] for job in jobs]),
                    torch.cat([job.cross[i][1] for job in jobs]),
                )
                for i in range(len(self.layers))
            ]
            self._stacked = (key, layers)
        return self._stacked[1]

    def _cross_attention(self, index: int, jobs: list[DecodeJob], q: torch.Tensor) -> torch.Tensor:
        lengths = {job.cross[0][0].shape[2] for job in jobs}
        if len(jobs) > 1 and len(lengths) == 1:
            keys, values = self._stacked_cross(jobs)[index]
            query = q.view(len(jobs), self.heads, 1, self.head_dim)
            out = F.scaled_dot_product_attention(query, keys, values)
            return out.reshape(len(jobs), self.hidden)
        outputs = []
        shape = (1, self.heads, 1, self.head_dim)
        for row, job in enumerate(jobs):
            keys, values = job.cross[index]
            out = F.scaled_dot_product_attention(q[row : row + 1].view(shape), keys, values)
            outputs.append(out.reshape(1, self.hidden))
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)
