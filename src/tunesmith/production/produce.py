"""A generated track made to the producer's measure: exact tempo, exact bars from a downbeat,
a seamless loop, the key asked for, a fade at the end (`produce`).

The analysis (what tempo and key were found, the stretch and the shift) and any warning go
into the response and the track record.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from tunesmith.production.grid import cut_bars, fade_out, first_downbeat
from tunesmith.production.key import find_key, parse_key, shift_between
from tunesmith.production.plan import Production
from tunesmith.production.rubberband import stretch
from tunesmith.production.tempo import find_beats, onset_near

__all__ = ["Produced", "produce"]


@dataclass(frozen=True)
class Produced:
    samples: npt.NDArray[np.float32]
    analysis: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def produce(
    samples: npt.NDArray[np.float32], sample_rate: int, plan: Production, duration: float
) -> Produced:
    """`samples` ``(frames, channels)``, made for a request of `duration` s, to `plan`.
    `RuntimeError` if Rubber Band fails; `ValueError` if the audio cannot fill the bars."""
    analysis: dict[str, Any] = {}
    time_ratio, semitones = 1.0, 0
    beats = None
    if plan.bpm is not None:
        beats = find_beats(samples, sample_rate, plan.bpm)
        time_ratio = beats.bpm / plan.bpm  # under 1: slower than asked, so it gets shorter
        analysis["tempo_found"] = round(beats.bpm, 2)
        analysis["stretch"] = round(time_ratio, 4)
    if plan.key is not None:
        found, clarity = find_key(samples, sample_rate)
        wanted = parse_key(plan.key)
        semitones, lands = shift_between(found, wanted)
        analysis.update(key_found=str(found), key_clarity=round(clarity, 3))
        analysis.update(key_shift=semitones, key=str(lands))
    out = stretch(samples, sample_rate, time_ratio, semitones)
    if plan.bpm is not None and beats is not None:
        start = first_downbeat(beats.times * time_ratio, beats.strength, plan.beats_per_bar)
        start = onset_near(out, sample_rate, start)
        length = plan.track_seconds(duration)
        seam = plan.beat_seconds / 4
        out, start, repeated = _fill_bars(out, sample_rate, start, length + seam, plan)
        out = cut_bars(out, sample_rate, start, length, plan.loop, seam)
        analysis.update(downbeat=round(start, 3), bars=plan.bars_for(duration))
        if repeated:
            analysis["repeated_bars"] = repeated
    else:  # the stretcher may round the length by a few samples
        out = _exact(out, round(duration * sample_rate))
    if plan.fade_out > 0:
        out = fade_out(out, sample_rate, plan.fade_out)
    return Produced(np.ascontiguousarray(out, dtype=np.float32), analysis, plan.warnings(analysis))


def _fill_bars(
    samples: npt.NDArray[np.float32], sample_rate: int, start: float, need: float, plan: Production
) -> tuple[npt.NDArray[np.float32], float, int]:
    """Audio holding `need` s from a downbeat: from `start`, else from the earliest downbeat in
    phase with it, else with whole bars repeated (a model much slower than asked, stretched,
    is short of audio). The audio, the downbeat, and how many bars were repeated."""
    have = samples.shape[0] / sample_rate
    if start + need <= have:
        return samples, start, 0
    bar = plan.beat_seconds * plan.beats_per_bar
    start %= bar
    if start + need <= have:
        return samples, start, 0
    first = round(start * sample_rate)
    bar_frames = round(bar * sample_rate)
    whole = (samples.shape[0] - first) // bar_frames
    if whole < 1:
        raise ValueError(f"{have:.2f} s of audio cannot hold one bar of {bar:.2f} s")
    bars = samples[first : first + whole * bar_frames]
    missing = math.ceil((start + need - have) / bar) + 1
    extra = np.concatenate([bars] * math.ceil(missing / whole))[: missing * bar_frames]
    return np.concatenate([samples[: first + whole * bar_frames], extra]), start, missing


def _exact(samples: npt.NDArray[np.float32], frames: int) -> npt.NDArray[np.float32]:
    if samples.shape[0] >= frames:
        return samples[:frames]
    pad = np.zeros((frames - samples.shape[0], samples.shape[1]), dtype=np.float32)
    return np.concatenate([samples, pad])
