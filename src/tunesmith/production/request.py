"""The producers' request fields, a part of the request contract (`tunesmith.schema`).

`GenerateRequest` takes these fields from `ProducerFields`; the rules that tie them to
``duration`` (bars give it; sections sum to it) run before the fields are checked, so the
request that is stored says exactly what was made.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tunesmith.errors import FieldError, InvalidRequest
from tunesmith.production.key import parse_key
from tunesmith.production.plan import Production

__all__ = ["MAX_SECTIONS", "ProducerFields", "Section"]

MAX_SECTIONS = 32
MAX_SECTION_PROMPT = 500


class Section(BaseModel):
    """One part of a long track: what it adds to the shared prompt, and how long it lasts."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    prompt: str = Field(min_length=1, max_length=MAX_SECTION_PROMPT)
    duration: float | None = Field(None, gt=0, allow_inf_nan=False)
    bars: int | None = Field(None, ge=1, le=1024)

    @model_validator(mode="after")
    def _one_length(self) -> Section:
        if (self.duration is None) == (self.bars is None):
            raise ValueError("give a section a duration or bars, one of them")
        return self


class ProducerFields(BaseModel):
    """Exact tempo, bars, loops, key, sections and endings."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    bpm: float | None = Field(
        None,
        ge=40,
        le=240,
        allow_inf_nan=False,
        description="The tempo, exactly: named in the prompt, then the audio is time-stretched "
        "to it (needs rubberband-cli on the server)",
    )
    bars: int | None = Field(
        None, ge=1, le=1024, description="With bpm: the track is exactly this many bars"
    )
    beats_per_bar: int = Field(4, ge=1, le=16)
    loop: bool = Field(
        False, description="With bpm: the file loops seamlessly (WAV files carry loop points)"
    )
    key: str | None = Field(
        None,
        max_length=20,
        description="The key, such as 'A minor' or 'F# major': named in the prompt, then the "
        "audio is shifted to it by the smallest interval",
    )
    sections: list[Section] | None = Field(
        None,
        max_length=MAX_SECTIONS,
        description="Parts played in order, each window conditioned on the shared prompt plus "
        "its section's; their durations (or bars) sum to the track's. JSON bodies only",
    )
    fade_out: float = Field(0.0, ge=0, le=60, allow_inf_nan=False, description="Seconds")

    @field_validator("key")
    @classmethod
    def _a_key(cls, value: str | None) -> str | None:
        return None if value is None else str(parse_key(value))

    @model_validator(mode="before")
    @classmethod
    def _duration_from_the_grid(cls, data: Any) -> Any:
        """bars and sections give the duration; a duration given beside them must agree."""
        if not isinstance(data, dict):
            return data
        given = data.get("duration")
        derived = _derived_duration(data)
        if derived is None:
            return data
        if given is not None and not _same(given, derived):
            raise InvalidRequest(
                [FieldError("duration", f"give duration or bars/sections: they make {derived:g}")]
            )
        return {**data, "duration": derived}

    @model_validator(mode="after")
    def _fields_agree(self) -> ProducerFields:
        problems = []
        if self.bpm is None:
            problems += [
                FieldError(name, "needs bpm") for name in ("bars", "loop") if _set(self, name)
            ]
        if self.loop and self.fade_out > 0:
            problems.append(FieldError("fade_out", "a loop has no ending to fade"))
        duration = float(getattr(self, "duration", 0.0))
        if self.fade_out > duration:
            problems.append(FieldError("fade_out", f"must be at most the track's {duration:g} s"))
        if problems:
            raise InvalidRequest(problems)
        return self

    @property
    def needs_rubberband(self) -> str | None:
        """The first field that needs Rubber Band's tool, if any (`rubberband.require`)."""
        return "bpm" if self.bpm is not None else "key" if self.key is not None else None

    @property
    def track_seconds(self) -> float:
        """The finished file's length: `duration`, or with bpm its nearest whole bars."""
        return self.production.track_seconds(float(getattr(self, "duration", 0.0)))

    @property
    def generation_seconds(self) -> float:
        """How much audio the engine makes: more than `duration` with bpm (`Production`)."""
        return self.production.generation_seconds(float(getattr(self, "duration", 0.0)))

    def section_seconds(self) -> list[float]:
        """Each section's length in the finished track (empty without sections)."""
        beat = 60.0 / self.bpm if self.bpm is not None else 0.0
        return [
            s.duration if s.duration is not None else (s.bars or 0) * self.beats_per_bar * beat
            for s in self.sections or []
        ]

    def section_map(self) -> list[dict[str, Any]]:
        """Where each section plays in the finished track: its prompt, start and end (s)."""
        placed, start = [], 0.0
        for section, seconds in zip(self.sections or [], self.section_seconds(), strict=True):
            end = start + seconds
            placed.append(
                {"prompt": section.prompt, "start": round(start, 3), "end": round(end, 3)}
            )
            start = end
        return placed

    @property
    def production(self) -> Production:
        return Production(
            bpm=self.bpm,
            bars=self.bars,
            beats_per_bar=self.beats_per_bar,
            loop=self.loop,
            key=self.key,
            fade_out=self.fade_out,
        )


def _set(fields: ProducerFields, name: str) -> bool:
    value = getattr(fields, name)
    return value is not None and value is not False


def _same(given: Any, derived: float) -> bool:
    number = _number(given)
    return number is not None and math.isclose(number, derived, abs_tol=1e-6)


def _number(value: Any) -> float | None:
    """A JSON number, or a form's numeric string; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _derived_duration(data: dict[str, Any]) -> float | None:
    """The duration bars or sections give (None: they give none, or are malformed, which the
    field checks then report)."""
    bpm, beats = _number(data.get("bpm")), _number(data.get("beats_per_bar", 4))
    if beats is None or beats < 1 or beats != int(beats):
        return None
    beat = 60.0 / bpm if bpm is not None and 40 <= bpm <= 240 else None
    bars = _number(data.get("bars"))
    if bars is not None and bars >= 1 and bars == int(bars) and beat is not None:
        return bars * beats * beat
    sections = data.get("sections")
    if not isinstance(sections, list) or not sections:
        return None
    total = 0.0
    for section in sections:
        if not isinstance(section, dict):
            return None
        seconds, count = section.get("duration"), section.get("bars")
        if isinstance(seconds, int | float) and not isinstance(seconds, bool) and count is None:
            total += float(seconds)
        elif isinstance(count, int) and not isinstance(count, bool) and seconds is None:
            if beat is None:
                raise InvalidRequest([FieldError("sections", "bars need bpm")])
            total += count * beats * beat
        else:
            return None
    return total
