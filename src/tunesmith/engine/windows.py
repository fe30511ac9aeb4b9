"""Tracks longer than one window, and tracks that continue given audio, as audiocraft makes them.

MusicGen attends over at most one window (30 s). A longer track slides it: each window after
the first starts from the last ``window - stride`` seconds of the codes so far, run through the
decoder as a known prompt (`FastDecoder.prefill`), and adds `stride` seconds of new frames
(audiocraft's ``extend_stride``, 18 s by default). A continuation is the same loop begun from
the codes of the given audio. The text conditioning is computed once and the seeded generator
carries through every window, so a long track is one seamless, reproducible set of codes.

Each window is an ordinary job: it joins the batch with whatever else is in flight, in any
precision. Between windows the request leaves the batch for its prefill, which runs on the
decode thread a chunk at a time so the other requests keep stepping.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from tunesmith.engine.model import Conditioning, FastDecoder
    from tunesmith.engine.model.sampling import SamplingParams
    from tunesmith.engine.scheduler import BatchScheduler

__all__ = ["PREFILL_CHUNK", "Window", "plan_windows", "run_windows", "window_steps"]

PREFILL_CHUNK = 64  # prompt positions per pass: each weight read shared by 64 positions


@dataclass(frozen=True)
class Window:
    """One window: `context` frames of codes it starts from, `new` frames it adds."""

    context: int
    new: int


def plan_windows(total: int, prompt: int, window: int, stride: int) -> list[Window]:
    """The windows that make `total` frames from `prompt` known frames (0: none).

    Each window starts from the last ``min(known, window - stride)`` frames and fills the rest of
    the window, the last one only as far as `total`."""
    if not 0 < stride < window:
        raise ValueError(f"the stride ({stride} frames) must be within the window ({window})")
    if not 0 <= prompt < total:
        raise ValueError(f"{prompt} known frames leave none of {total} to generate")
    windows = []
    known = prompt
    while known < total:
        context = min(known, window - stride)
        new = min(window - context, total - known)
        windows.append(Window(context, new))
        known += new
    return windows


def window_steps(windows: list[Window], delay: int) -> int:
    """Decoder steps the windows take (the prompt's prefill aside): each new frame, and the
    codebook delay at each window's end."""
    return sum(w.new + delay for w in windows)


def run_windows(
    decoder: FastDecoder,
    scheduler: BatchScheduler,
    conditioning: Conditioning,
    windows: list[Window],
    sampling: SamplingParams,
    generator: torch.Generator,
    prompt: torch.Tensor,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Generate `windows` after the known codes `prompt` ``(K, F)``: the whole track's codes
    ``(K, F + new frames)``, the prompt's included. Blocking; batched with other callers.

    `progress` gets ``(steps_done, steps_total)`` over every window together."""
    import torch

    total_steps = window_steps(windows, decoder.max_delay)
    codes = prompt
    done = 0
    for window in windows:
        context = codes[:, codes.shape[1] - window.context :]
        frames = window.context + window.new
        job = scheduler.call(
            partial(decoder.open, conditioning, frames, sampling, generator, context)
        )
        while job.t < job.prefix:
            scheduler.call(partial(decoder.prefill, job, PREFILL_CHUNK))
        report = None
        if progress is not None:
            offset, first = done, job.t
            report = partial(_report, progress, offset, first, total_steps)
        scheduler.submit(job, report).wait()
        done += job.steps - job.prefix
        codes = torch.cat([codes, decoder.codes(job)[:, window.context :]], dim=1)
    return codes


def _report(
    progress: Callable[[int, int], None], offset: int, first: int, total: int, t: int, _: int
) -> None:
    progress(offset + t - first, total)
