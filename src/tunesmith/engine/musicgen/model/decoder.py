"""tunesmith's own MusicGen decode loop over the transformers modules' weights.

transformers stays the source of the model definition and the checkpoint; the loaded weights
are read once into the layout the loop wants (`musicgen.model.weights`: fused q/k/v,
fused LM heads, stacked codebook embeddings, projections per precision), and this module runs
the decoder step by step:

- the prompt is encoded once per request and each layer's cross-attention keys/values are
  computed once; the unconditional (classifier-free guidance) row attends to an all-masked
  prompt, which contributes exactly zero, so it skips cross-attention altogether; a prompt
  shorter than a head's size has its cross-attention weights folded into its keys and values
  (`tunesmith.engine.musicgen.model.cross`), which a step then reads instead of the weights;
- the self-attention cache is preallocated per request, sized to the request's steps;
- conditional and unconditional rows of every request in the batch go through each weight
  matrix in one call; attention runs per request on its own cache (requests in a batch have
  different lengths and positions);
- the codebook delay pattern and sampling happen per request (`musicgen.model.sampling`);
- the layers, final norm and heads run as one TorchScript module (`layers.Stack`), so the ~60
  small ops per layer around the matmuls run without the Python interpreter between them.

`step` takes any set of in-flight `DecodeJob` s, so requests can join and leave between steps.
A job can start from known codes (the previous window of a long track, or audio to continue):
`prefill` runs them many positions at a time (`musicgen.model.prefill`), and the steps
after them keep the prompt's codes where the delay pattern still reaches into it.

musicgen-melody's decoder has no cross-attention: its conditioning is a prefix of the input,
the projected chroma then the projected text (`tunesmith.engine.melody.prefix`). A job's cache
then holds the prefix's positions before the start token's (``DecodeJob.offset``), which
`prefill` writes first; the layers skip cross-attention, and everything else is shared.
"""

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from tunesmith.engine.kernels import SCALE_BYTES
from tunesmith.engine.musicgen.model import cross
from tunesmith.engine.musicgen.model.cross import FoldedCross
from tunesmith.engine.musicgen.model.layers import Batch, Stack, script
from tunesmith.engine.musicgen.model.prefill import prefill
from tunesmith.engine.musicgen.model.projections import Precision
from tunesmith.engine.musicgen.model.prompt import encode_prompt, prompt_keys_values
from tunesmith.engine.musicgen.model.sampling import SamplingParams, guided_logits, pick_tokens
from tunesmith.engine.musicgen.model.weights import (
    DecoderWeights,
    module_buffers,
    release_decoder_weights,
)

if TYPE_CHECKING:
    from tunesmith.engine.musicgen.model.store import WeightStore

__all__ = ["Conditioning", "DecodeJob", "FastDecoder", "release_decoder_weights"]


@dataclass(frozen=True)
class Conditioning:
    """A window's conditioning. Text MusicGen: each layer's cross-attention keys/values
    ``(layers, 2, 1, H, S, hd)`` (computed once per request and shared by its windows), and
    their folded form where short prompts fold (`tunesmith.engine.musicgen.model.cross`).
    musicgen-melody: `prefix`, the embedded input before the start token ``(2, P, D)``, the
    conditional row then the null one (classifier-free guidance)."""

    cross: torch.Tensor | None = None
    folded: FoldedCross | None = None
    prefix: torch.Tensor | None = None


@dataclass
class DecodeJob:
    """One request's decoding state. ``tokens[k, p]`` is codebook k at position p (0 = BOS)."""

    sampling: SamplingParams
    steps: int
    tokens: torch.Tensor  # (K, steps + 1) long
    keep: torch.Tensor  # (K, steps + 1) bool: True where the delay pattern lets a code through
    cache: torch.Tensor  # (layers, 2, rows, H, offset + steps + 1, hd)
    cross: torch.Tensor | None  # (layers, 2, 1, H, S, hd) prompt keys and values (text models)
    generator: torch.Generator
    folded: FoldedCross | None = field(default=None, repr=False)  # see `cross.fold`
    serial: int = 0  # unique per decoder: identifies the job in per-batch caches
    t: int = 0  # tokens[:, :t+1] are known; the next step predicts position t + 1
    prefix: int = 0  # frames of known prompt codes: `prefill` runs positions below it
    known: torch.Tensor | None = field(default=None, repr=False)  # (K, steps + 1) prompt codes
    # musicgen-melody: the conditioning prefix (rows, P, D) at cache positions 0 .. P - 1 (so
    # token position t sits at offset + t), and how many of them `prefill` has written
    lead: torch.Tensor | None = field(default=None, repr=False)
    offset: int = 0
    primed: int = 0
    # parity checks and benchmarks: record each step's guided scores, or force the codes
    scores: list[torch.Tensor] | None = field(default=None, repr=False)
    teacher: torch.Tensor | None = field(default=None, repr=False)  # (K, steps + 1) codes

    @property
    def rows(self) -> int:
        return int(self.cache.shape[2])

    @property
    def done(self) -> bool:
        return self.t >= self.steps

    @property
    def pending(self) -> bool:
        """Whether `prefill` has positions left to run (a prefix, known codes) before a step."""
        return self.primed < self.offset or self.t < self.prefix


class FastDecoder(DecoderWeights):
    """The decoder of a loaded `MusicgenForConditionalGeneration`, ready to step in batches."""

    def __init__(
        self,
        model: Any,
        precision: Precision,
        device: torch.device,
        store: "WeightStore | None" = None,
    ) -> None:
        super().__init__(model, precision, device, store)
        self._stack = script(Stack(self.layers, self.lm_heads))
        self._codebook_index = torch.arange(self.num_codebooks, device=device)
        self._cond_index: dict[tuple[int, ...], torch.Tensor] = {}
        # the prompt keys/values of the current batch stacked, when all its prompts have the
        # same length: one cross-attention call per layer instead of one per job
        self._stacked: tuple[tuple[int, ...], torch.Tensor | None] = ((), None)
        self._serials = itertools.count(1)

    def step_bytes(self, jobs: list[DecodeJob]) -> int:
        """Bytes of weights and folded prompts (`musicgen.model.cross`) a step over `jobs`
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
        """Encode the prompt and compute each layer's cross-attention keys/values (text
        MusicGen; musicgen-melody's prefix comes from `tunesmith.engine.melody.prefix`)."""
        if not self.cross_attention:
            raise TypeError("this decoder conditions on a prefix: see tunesmith.engine.melody")
        ids, mask = input_ids.to(self.device), attention_mask.to(self.device)
        encoded = encode_prompt(self.model, ids, mask, self.dtype)
        self.drop_text_pages()
        prompt_kv = prompt_keys_values(encoded, self.cross_kv, self.heads)
        self._drop_pages(module_buffers(self.cross_kv))  # used again by the next prompt only
        folded = None
        if self.fold_cross and encoded.shape[0] < self.head_dim:
            int8 = self.precision in ("int8", "int4")  # A and B are small: int8 serves int4 too
            folded = cross.fold(prompt_kv, self._cross_weights(), int8, self.dtype)
            # a folded job's steps read A and B instead of these (a job with a long prompt
            # reads them back on its first step)
            self._drop_pages(module_buffers(self.cross_qo))
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
        Allocates the cache; `prefill` then runs the conditioning prefix (musicgen-melody) and
        the prompt before the first step."""
        if (conditioning.cross is None) == self.cross_attention:
            raise ValueError("the conditioning is for another kind of decoder")
        steps = self.steps_for(frames)
        rows = 2 if sampling.guided else 1
        lead = None if conditioning.prefix is None else conditioning.prefix[:rows]
        offset = 0 if lead is None else int(lead.shape[1])
        self._reach(offset + steps + 1)
        row = self.head_dim + (SCALE_BYTES if self.cache_dtype == torch.int8 else 0)
        cache = torch.zeros(
            (len(self.layers), 2, rows, self.heads, offset + steps + 1, row),
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
            lead=lead,
            offset=offset,
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
        """Run up to `limit` positions of the job's prefix or known prompt (see `open`)."""
        prefill(self, job, limit)

    def prime(self, job: DecodeJob, chunk: int = 64) -> DecodeJob:
        """Run all of the job's prefill, `chunk` positions a pass: ready to step."""
        while job.pending:
            prefill(self, job, chunk)
        return job

    def _reach(self, positions: int) -> None:
        """Extend the sinusoidal position table to `positions` where it is shorter, as
        transformers does (a melody prefix with a long prompt runs past the table)."""
        if positions > self.positions.shape[0]:
            table = self.model.decoder.model.decoder.embed_positions.get_embedding
            self.positions = self._cast(table(positions, self.hidden))

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
            positions.append(self.positions[job.offset + job.t].expand(job.rows, -1))
        tokens = torch.cat(inputs)  # (R, K)
        x = self.embeddings[self._codebook_index, tokens].sum(dim=1)  # (R, D)
        if self.embed_scale != 1.0:
            x = x * self.embed_scale
        x = x + torch.cat(positions)
        rows = [job.rows for job in jobs]
        cross = [job.cross for job in jobs if job.cross is not None]  # empty: no cross-attention
        batch = Batch(
            [job.cache for job in jobs],
            [job.offset + job.t for job in jobs],  # each job's cache position
            rows,
            cross,
            self._stacked_cross(jobs, cross),
            self._conditional_rows(tuple(rows)),
            [job.folded for job in jobs] if cross else [],
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

    def _stacked_cross(
        self, jobs: list[DecodeJob], cross: list[torch.Tensor]
    ) -> torch.Tensor | None:
        """The batch's prompt keys/values (`cross`, each job's) as one ``(layers, 2, J, H, S,
        hd)`` tensor when the batch has several jobs whose prompts share a length (rebuilt only
        when it changes)."""
        key = tuple(job.serial for job in jobs)  # not id(): a freed job's id gets reused
        if self._stacked[0] != key:
            lengths = {kv.shape[4] for kv in cross}
            stacked = None
            if len(cross) > 1 and len(lengths) == 1:
                stacked = torch.cat(cross, dim=2)
            self._stacked = (key, stacked)
        return self._stacked[1]
