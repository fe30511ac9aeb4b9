"""The scheduler's step decoder over the static batch: admission, release, graph replay.

`StaticStepper.step(jobs)` has the contract of `FastDecoder.step` (`tunesmith.engine.scheduler.
StepDecoder`): a job that is new to it is copied into a free slot (after its prompt was
prefilled by the dynamic path, many positions at a time), a slot whose job left the batch is
freed, then one step runs for all slots at once, as one CUDA graph replay where ``graphs`` is
on, else eagerly (the same code: the CPU tests run it this way). The host keeps each job's
``t`` in step with the device's without reading it back.

The step always runs at the full batch shape, however many slots are busy: a request's codes
then never depend on what shares its batch, even at fp16, where a matmul over 2 rows and one
over 16 may round differently, and there is one graph to capture, not one per batch size. On a
launch-bound GPU the idle slots cost little; `scripts/gpu-check` measures 1 to 16 requests.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch

from tunesmith.engine.cuda.slots import Slots
from tunesmith.engine.cuda.step import static_step

if TYPE_CHECKING:
    from tunesmith.engine.musicgen.model.decoder import DecodeJob, FastDecoder

__all__ = ["StaticStepper"]

log = logging.getLogger(__name__)

_WARMUP = 3  # eager runs on a side stream before capture, as torch's CUDA graph notes advise


class StaticStepper:
    """Steps up to `slots` jobs of at most `positions` positions (BOS included) together."""

    def __init__(
        self, decoder: FastDecoder, slots: int, positions: int, graphs: bool = False
    ) -> None:
        if graphs and decoder.device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device")
        self.decoder = decoder
        self.graphs = graphs
        self.slots = Slots(decoder, slots, positions)
        self._jobs: list[DecodeJob | None] = [None] * slots
        self._graph: Any = None  # torch.cuda.CUDAGraph once captured

    def prepare(self) -> None:
        """Capture the graph now (at load), so the first request does not wait for it."""
        if self.graphs and self._graph is None:
            self._graph = self._capture()

    def step(self, jobs: list[DecodeJob]) -> None:
        """Advance every job by one position (the caller drops jobs that are `done`)."""
        if len(jobs) > self.slots.count:
            raise ValueError(f"{len(jobs)} jobs for {self.slots.count} slots")
        self._seat(jobs)
        if self.graphs:
            self._replay()
        else:
            static_step(self.decoder, self.slots)
        for slot, job in enumerate(self._jobs):
            if job is None:
                continue
            job.t += 1
            if job.scores is not None:
                job.scores.append(self.slots.scores[slot].clone())
            if job.done:  # its codes copied out now: the slot may be reused before they are read
                self.slots.release(slot, job)
                self._jobs[slot] = None

    def _seat(self, jobs: list[DecodeJob]) -> None:
        """Free the slots of jobs no longer in the batch, then seat the new ones."""
        wanted = {job.serial for job in jobs}
        for slot, job in enumerate(self._jobs):
            if job is not None and job.serial not in wanted:
                self.slots.release(slot, job)
                self._jobs[slot] = None
        seated = {job.serial for job in self._jobs if job is not None}
        for job in jobs:
            if job.serial in seated:
                continue
            if job.done:
                raise ValueError("a finished job cannot be stepped")
            if not self.slots.fits(job):
                raise ValueError(
                    f"a job of {job.steps} steps is longer than the {self.slots.positions - 1} "
                    "positions the static batch holds"
                )
            if job.cross is None:
                raise ValueError("the static batch steps cross-attention decoders only")
            if self.slots.grow_prompts(job.cross.shape[4]):
                self._graph = None  # it reads the replaced prompt buffer
            slot = self._jobs.index(None)
            self.slots.admit(slot, job)
            self._jobs[slot] = job

    def _replay(self) -> None:
        if self._graph is None:
            self._graph = self._capture()
        self._graph.replay()

    def _capture(self) -> Any:
        """Capture `static_step` as a CUDA graph. The warm-up runs execute the step for real
        with every slot marked inactive: each writes what the next real step writes anyway
        (same keys and values at each row's position, same code at the next one) and moves no
        position, so capturing mid-track changes nothing."""
        slots = self.slots
        active = slots.active.clone()
        slots.active.fill_(False)
        stream = torch.cuda.Stream(self.decoder.device)  # type: ignore[no-untyped-call]
        stream.wait_stream(torch.cuda.current_stream(self.decoder.device))
        with torch.cuda.stream(stream):
            for _ in range(_WARMUP):
                static_step(self.decoder, slots)
        torch.cuda.current_stream(self.decoder.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        # thread-local: only this thread's CUDA work may be captured (the engine's other threads
        # do none while it captures, and must not fail the capture if they ever do)
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            static_step(self.decoder, slots)
        slots.active.copy_(active)
        log.info(
            "captured the decode step as a CUDA graph (%d slots, prompts up to %d tokens)",
            slots.count,
            slots.prompt_capacity,
        )
        return graph
