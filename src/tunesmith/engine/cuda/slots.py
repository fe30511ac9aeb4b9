"""The static batch: every buffer a decode step reads or writes, allocated once at full size.

A CUDA graph replays fixed kernels on fixed addresses, so nothing a step touches may be
allocated per request or per step. `Slots` holds ``B`` request slots (the scheduler's
``max_batch``); each slot has two cache rows (conditional, unconditional), its codes, the
delay-pattern masks, its prompt's cross-attention keys and values, its position ``t`` and its
sampling parameters, all as device tensors. A request joins by being copied into a free slot
(`admit`) and leaves by being copied out (`release`); a free slot still runs through the step,
writing only into its own rows, and its position never moves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from tunesmith.engine.cuda.sampling import SlotSampling, draw_key

if TYPE_CHECKING:
    from tunesmith.engine.musicgen.model.decoder import DecodeJob, FastDecoder

__all__ = ["Slots"]

_PROMPT_BUCKET = 64  # prompt buffers grow in powers of two from here (a new graph each time)


class Slots:
    """`slots` requests of up to `positions` positions (BOS included) for `decoder`."""

    def __init__(self, decoder: FastDecoder, slots: int, positions: int) -> None:
        if decoder.cache_dtype != decoder.dtype:
            raise ValueError(f"the static step needs a float cache, not {decoder.cache_dtype}")
        device, dtype = decoder.device, decoder.dtype
        layers, heads, head_dim = len(decoder.layers), decoder.heads, decoder.head_dim
        codebooks, self.pad = decoder.num_codebooks, decoder.pad_token_id
        self.count, self.positions, self.device = slots, positions, device
        self.cache = torch.zeros(
            (layers, 2, 2 * slots, heads, positions, head_dim), dtype=dtype, device=device
        )
        self.cross = torch.zeros(
            (layers, 2, slots, heads, _PROMPT_BUCKET, head_dim), dtype=dtype, device=device
        )
        self.cross_length = torch.ones(slots, dtype=torch.long, device=device)

        def codes(fill: int) -> torch.Tensor:
            return torch.full((slots, codebooks, positions), fill, dtype=torch.long, device=device)

        def flags(*shape: int) -> torch.Tensor:
            return torch.zeros(shape, dtype=torch.bool, device=device)

        self.tokens, self.teacher = codes(self.pad), codes(self.pad)
        self.keep, self.known = (
            flags(slots, codebooks, positions),
            flags(slots, codebooks, positions),
        )
        self.teach, self.active = flags(slots), flags(slots)
        self.t = torch.zeros(slots, dtype=torch.long, device=device)
        self.sampling = SlotSampling.empty(slots, device)
        self.scores = torch.zeros(
            (slots, codebooks, decoder.vocab_size), dtype=torch.float32, device=device
        )

    @property
    def prompt_capacity(self) -> int:
        return int(self.cross.shape[4])

    def fits(self, job: DecodeJob) -> bool:
        return job.steps + 1 <= self.positions

    def grow_prompts(self, length: int) -> bool:
        """Make room for prompts of `length` tokens; True when the buffer was replaced (a
        captured graph reads the old one and must be captured again)."""
        capacity = self.prompt_capacity
        if length <= capacity:
            return False
        while capacity < length:
            capacity *= 2
        grown = self.cross.new_zeros((*self.cross.shape[:4], capacity, self.cross.shape[5]))
        grown[..., : self.prompt_capacity, :] = self.cross
        self.cross = grown
        return True

    @torch.inference_mode()
    def admit(self, slot: int, job: DecodeJob) -> None:
        """Copy `job` (opened, its prompt prefilled) into `slot`; its ``tokens`` and ``cache``
        become views of the slot's, so the rest of the engine reads the codes in place."""
        width = job.steps + 1
        rows = slice(2 * slot, 2 * slot + job.rows)
        self.cache[:, :, 2 * slot : 2 * slot + 2].zero_()  # nothing stale, even masked out
        self.cache[:, :, rows, :, : job.t + 1] = job.cache[:, :, :, :, : job.t + 1]
        assert job.cross is not None  # text MusicGen only (melody's prefix runs eagerly)
        length = job.cross.shape[4]
        self.cross[:, :, slot].zero_()
        self.cross[:, :, slot, :, :length] = job.cross[:, :, 0]
        self.cross_length[slot] = length
        for buffer, source, fill in (
            (self.tokens, job.tokens, self.pad),
            (self.keep, job.keep, False),
            (self.known, job.known, False),
            (self.teacher, job.teacher, self.pad),
        ):
            buffer[slot].fill_(fill)
            if source is not None:
                buffer[slot, :, :width] = source[:, :width]
        self.teach[slot] = job.teacher is not None
        self.t[slot] = job.t
        self.sampling.set(slot, job.sampling, draw_key(job.generator))
        self.active[slot] = True
        job.tokens = self.tokens[slot, :, :width]
        job.cache = self.cache[:, :, rows, :, :width]

    def release(self, slot: int, job: DecodeJob) -> None:
        """Give `job` its own copy of its codes (and, unless it is done, of the cache it has
        written, so it can be seated again) and free `slot`; the slot then writes only to
        itself (pad codes at position 1, its cache at position 0)."""
        job.tokens = job.tokens.clone()
        job.cache = job.cache[:, :, :, :, : 0 if job.done else job.t + 1].clone()
        self.active[slot] = False
        self.t[slot] = 0
        self.keep[slot].fill_(False)
        self.known[slot].fill_(False)
        self.teach[slot] = False
