"""Sectioned tracks: parts that play in order, each conditioned on a text of its own.

`GenerationParams.sections` splits a track's `duration` into parts. Each part's frames are made
by windows conditioned on its prompt, and its first window starts from the last codes before it
as any later window of a long track does (`tunesmith.engine.musicgen.windows`), so the model
itself carries the music across the boundary: no crossfade. Sections cover the whole track, a
continuation's given audio included (only the frames after it are made). Without sections, or
with one, the track is what a plain request for that prompt makes, code for code.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tunesmith.errors import FieldError, InvalidRequest

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import torch

    from tunesmith.engine.musicgen.model import Conditioning
    from tunesmith.engine.params import GenerationParams, SectionParams
    from tunesmith.engine.parts import Conditioner

__all__ = ["TrackConditioning", "TrackText", "section_starts", "track_conditioning"]

# a window's conditioning from the track frame the window starts at and the one its new frames
# start at (the section those belong to gives the text)
TrackConditioning = Callable[[int, int], "Conditioning"]


def section_starts(
    sections: Sequence[SectionParams], duration: float, frame_rate: int
) -> list[int]:
    """The frame each section starts at, the first at 0 (no sections: one, ``[0]``).

    Frames are counted as `frames_for` counts a track's: a section's end is its cumulative
    seconds rounded up to a frame, so the first section has the frames a plain track of its
    length has. The last section ends with the track, taking any rounding remainder. Raises
    `InvalidRequest` (naming ``sections``) for sections that do not fill `duration`."""
    if not sections:
        return [0]
    if any(not s.seconds > 0 for s in sections):
        raise InvalidRequest([FieldError("sections", "every section needs a positive length")])
    given = sum(s.seconds for s in sections)
    if abs(given - duration) > len(sections) / frame_rate:  # a frame of rounding a section
        raise InvalidRequest(
            [FieldError("sections", f"they last {given:g} s, not the track's {duration:g} s")]
        )
    starts, elapsed = [0], 0.0
    for section in sections[:-1]:
        elapsed += section.seconds
        # rounded first, so 0.1 + 0.2 s is 15 frames at 50 Hz, not 16
        starts.append(math.ceil(round(elapsed * frame_rate, 6)))
    total = math.ceil(duration * frame_rate)
    if any(a >= b for a, b in zip(starts, [*starts[1:], total], strict=True)):
        raise InvalidRequest([FieldError("sections", "every section needs at least one frame")])
    return starts


@dataclass(frozen=True)
class TrackText:
    """A track's texts: each distinct prompt once, and from which frame each conditions it."""

    prompts: tuple[str, ...]
    sections: tuple[int, ...]  # each section's prompt, as an index into `prompts`
    starts: tuple[int, ...]  # the frame each section starts at (the first: 0)

    @classmethod
    def of(cls, params: GenerationParams, frame_rate: int) -> TrackText:
        """`params`' sections, or its one prompt throughout."""
        starts = section_starts(params.sections, params.duration, frame_rate)
        texts = [s.prompt for s in params.sections] or [params.prompt]
        prompts = tuple(dict.fromkeys(texts))
        return cls(prompts, tuple(prompts.index(t) for t in texts), tuple(starts))

    def at(self, frame: int) -> int:
        """The prompt (its index) of the section that `frame` belongs to."""
        return self.sections[bisect.bisect_right(self.starts, frame) - 1]

    def tokens(self, processor: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each prompt's ``(input_ids, attention_mask)``, tokenized alone (as a plain request's
        is: no padding to another prompt's length)."""
        out = []
        for prompt in self.prompts:
            inputs = processor(text=[prompt], padding=True, return_tensors="pt")
            out.append((inputs["input_ids"], inputs["attention_mask"]))
        return out


def track_conditioning(
    conditioner: Conditioner,
    text: TrackText,
    tokens: Sequence[tuple[torch.Tensor, torch.Tensor]],
    melody: npt.NDArray[np.float32] | None,
    sample_rate: int,
    windowed: bool,
) -> TrackConditioning:
    """Each window's conditioning (on the compute thread): its section's prompt, encoded once
    per distinct prompt, and the family's own per-window part (a melody's stretch)."""
    tracks = [conditioner.track(ids, mask, melody, sample_rate, windowed) for ids, mask in tokens]
    return lambda start, new: tracks[text.at(new)](start)
