"""Tracks longer than one window, and tracks that continue given audio, as audiocraft makes them.

MusicGen attends over at most one window (30 s). A longer track slides it: each window after
the first starts from the last ``window - stride`` seconds of the codes so far, run through the
decoder as a known prompt (`FastDecoder.prefill`), and adds `stride` seconds of new frames
(audiocraft's ``extend_stride``, 18 s by default). A continuation is the same loop begun from
the codes of the given audio. Each text is encoded once (a melody model's prefix per window:
each follows its own stretch of the melody) and the seeded generator carries through every
window, so a long track is one seamless, reproducible set of codes. A sectioned track
(`tunesmith.engine.sections`) starts a window at each section's first frame, conditioned on
that section's text and continuing the codes before it.

Each window is an ordinary job: it joins the batch with whatever else is in flight, in any
precision. Between windows the request leaves the batch for its prefill, which runs on the
decode thread a chunk at a time so the other requests keep stepping.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from tunesmith.engine.musicgen.model import DecodeJob, FastDecoder
    from tunesmith.engine.musicgen.model.sampling import SamplingParams
    from tunesmith.engine.scheduler import BatchScheduler
    from tunesmith.engine.sections import TrackConditioning

__all__ = ["PREFILL_CHUNK", "Window", "plan_windows", "run_windows", "window_steps"]

PREFILL_CHUNK = 64  # prompt positions per pass: each weight read shared by 64 positions


@dataclass(frozen=True)
class Window:
    """One window: `context` frames of codes it starts from, `new` frames it adds."""

    context: int
    new: int


def plan_windows(
    total: int, prompt: int, window: int, stride: int, boundaries: Sequence[int] = ()
) -> list[Window]:
    """The windows that make `total` frames from `prompt` known frames (0: none).

    Each window starts from the last ``min(known, window - stride)`` frames and fills the rest of
    the window, the last one only as far as `total`. No window spans a boundary (a frame index,
    within the track): a new one starts at each after the known frames."""
    if not 0 < stride < window:
        raise ValueError(f"the stride ({stride} frames) must be within the window ({window})")
    if not 0 <= prompt < total:
        raise ValueError(f"{prompt} known frames leave none of {total} to generate")
    if any(not 0 < b < total for b in boundaries):
        raise ValueError(f"section boundaries {list(boundaries)} must lie within {total} frames")
    windows = []
    known = prompt
    for end in [*sorted(b for b in set(boundaries) if b > prompt), total]:
        while known < end:
            context = min(known, window - stride)
            new = min(window - context, end - known)
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
    condition: TrackConditioning,
    windows: list[Window],
    sampling: SamplingParams,
    generator: torch.Generator,
    prompt: torch.Tensor,
    progress: Callable[[int, int], None] | None = None,
    sink: Callable[[torch.Tensor], None] | None = None,
    cancel: threading.Event | None = None,
) -> torch.Tensor:
    """Generate `windows` after the known codes `prompt` ``(K, F)``: the whole track's codes
    ``(K, F + new frames)``, the prompt's included. Blocking; batched with other callers.
    `condition` gives a window's conditioning from the track frames it starts at and its new
    frames start at.

    `progress` gets ``(steps_done, steps_total)`` over every window together; `sink` gets the
    track's codes in order, ``(K, n)`` frames at a time as they become final (the prompt's
    first), on the decode thread. Setting `cancel` stops it at the next step (`Canceled`)."""
    import torch

    from tunesmith.errors import Canceled

    total_steps = window_steps(windows, decoder.max_delay)
    codes = prompt
    if sink is not None and prompt.shape[1] > 0:
        sink(prompt)
    done = 0
    for window in windows:
        if cancel is not None and cancel.is_set():
            raise Canceled("the request was canceled")
        start = codes.shape[1] - window.context
        context = codes[:, start:]
        frames = window.context + window.new
        conditioning = scheduler.call(partial(condition, start, codes.shape[1]))
        job = scheduler.call(
            partial(decoder.open, conditioning, frames, sampling, generator, context)
        )
        while job.pending:
            if cancel is not None and cancel.is_set():
                raise Canceled("the request was canceled")
            scheduler.call(partial(decoder.prefill, job, PREFILL_CHUNK))
        report = _Report(decoder, job, progress, done, total_steps, sink, window.context)
        scheduler.submit(job, report, cancel).wait()
        report.flush()
        done += job.steps - job.prefix
        codes = torch.cat([codes, decoder.codes(job)[:, window.context :]], dim=1)
    return codes


class _Report:
    """A window's step callback: progress over the whole track, and its new final frames."""

    def __init__(
        self,
        decoder: FastDecoder,
        job: DecodeJob,
        progress: Callable[[int, int], None] | None,
        offset: int,
        total: int,
        sink: Callable[[torch.Tensor], None] | None,
        emitted: int,
    ) -> None:
        self.decoder, self.job, self.progress, self.sink = decoder, job, progress, sink
        self.offset, self.first, self.total = offset, job.t, total
        self.emitted = emitted  # frames of this window already handed to `sink`

    def __call__(self, t: int, _: int) -> None:
        if self.sink is not None:
            self.flush()
        if self.progress is not None:
            self.progress(self.offset + t - self.first, self.total)

    def flush(self) -> None:
        """Hand `sink` the frames that became final since the last call."""
        final = self.decoder.final_frames(self.job)
        if self.sink is not None and final > self.emitted:
            self.sink(self.decoder.codes(self.job, self.emitted, final))
            self.emitted = final
