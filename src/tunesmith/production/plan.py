"""What a producer asks of a track around the engine: tempo, bars, loop, key, ending.

Torch-free and numpy-free: the request schema, the Lambda and the CLI build a `Production`
and ask it how much audio the engine must make.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["MAX_STRETCH", "Production", "STRETCH_WARNING"]

# Past this the stretch is audible on most material (Rubber Band's own guidance is ~15 %):
# still done, with a warning in the response and the record.
STRETCH_WARNING: Final = 0.15
# The engine makes this much more than the bars need, so a track read up to 25 % slower than
# the tempo asked still fills them once stretched.
MAX_STRETCH: Final = 0.25
_LEAD_BEATS: Final = 4  # room before the first downbeat the tracker may find
_OVERRUN_BEATS: Final = 1  # what a loop crossfades over at its seam


@dataclass(frozen=True)
class Production:
    """The request's producer fields (each None or false: not asked)."""

    bpm: float | None = None
    bars: int | None = None
    beats_per_bar: int = 4
    loop: bool = False
    key: str | None = None
    fade_out: float = 0.0

    @property
    def asked(self) -> bool:
        return self.bpm is not None or self.key is not None or self.fade_out > 0

    @property
    def beat_seconds(self) -> float:
        assert self.bpm is not None
        return 60.0 / self.bpm

    def bars_for(self, duration: float) -> int:
        """The whole bars a track of `duration` s holds at `bpm` (at least one): the file is
        that many bars long, so it ends on a bar line."""
        if self.bars is not None:
            return self.bars
        bar = self.beat_seconds * self.beats_per_bar
        return max(1, round(duration / bar))

    def track_seconds(self, duration: float) -> float:
        """The length of the finished file for a request of `duration` s."""
        if self.bpm is None:
            return duration
        return self.bars_for(duration) * self.beats_per_bar * self.beat_seconds

    def generation_seconds(self, duration: float) -> float:
        """How much audio the engine makes for it: with `bpm`, enough for the bars after a
        stretch of up to `MAX_STRETCH`, a lead-in before the first downbeat and, for a loop,
        the overrun its seam crossfades over."""
        if self.bpm is None:
            return duration
        beats = self.bars_for(duration) * self.beats_per_bar + _LEAD_BEATS
        if self.loop:
            beats += _OVERRUN_BEATS
        return math.ceil(beats * self.beat_seconds / (1 - MAX_STRETCH) * 10) / 10

    def prompt_for(self, prompt: str) -> str:
        """The text the model is conditioned on: the prompt, naming the tempo and the key asked
        for (the audio is then made exact; a model that heard them needs less of it)."""
        named = [prompt]
        if self.bpm is not None:
            named.append(f"{self.bpm:g} bpm")
        if self.key is not None:
            named.append(f"in {self.key}")
        return ", ".join(named)

    def warnings(self, analysis: dict[str, Any]) -> list[str]:
        """What a producer should know about a track made to this plan, from its analysis
        (`produce`): derived, so the Lambda words them as the engine's host would."""
        said = []
        stretch, found = analysis.get("stretch"), analysis.get("tempo_found")
        if isinstance(stretch, float | int) and abs(stretch - 1) > STRETCH_WARNING:
            said.append(
                f"the model played {found} BPM: stretched by {abs(stretch - 1):.0%} to "
                f"{self.bpm:g} BPM, which can be audible; naming the tempo in the prompt helps"
            )
        lands = analysis.get("key")
        if self.key is not None and lands is not None and lands != self.key:
            said.append(
                f"the track reads as {analysis.get('key_found')}; a pitch shift keeps the "
                f"mode, so it is now {lands}, the relative key of {self.key} (the same notes)"
            )
        repeated = analysis.get("repeated_bars")
        if isinstance(repeated, int) and repeated > 0:
            said.append(
                f"the model's audio, stretched to {self.bpm:g} BPM, fell short: its last "
                f"{repeated} bar(s) repeat earlier ones"
            )
        return said

    def as_record(self) -> dict[str, Any]:
        return {
            "bpm": self.bpm,
            "bars": self.bars,
            "beats_per_bar": self.beats_per_bar,
            "loop": self.loop,
            "key": self.key,
            "fade_out": self.fade_out,
        }
