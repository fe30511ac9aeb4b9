"""Reading a track's tempo and beats (librosa's beat tracker), near the tempo asked for.

Beat trackers often lock onto half or double the felt tempo; of the readings at half, the
same and double, the one nearest the asked tempo is taken, and the beats follow it (every
other beat, or a beat between each two). The tempo is the slope of a line fitted through the
beats, finer than the tracker's own estimate (quantized by its frame rate).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["Beats", "find_beats", "onset_near"]


@dataclass(frozen=True)
class Beats:
    bpm: float  # the tempo read, nearest the one asked for
    times: npt.NDArray[np.float64]  # seconds of each beat
    strength: npt.NDArray[np.float64]  # the onset strength at each beat (downbeats)


def find_beats(samples: npt.NDArray[np.float32], sample_rate: int, target_bpm: float) -> Beats:
    """The beats of `samples` ``(frames, channels)``, read near `target_bpm`."""
    import librosa

    mono = np.asarray(samples, dtype=np.float32).mean(axis=1)
    hop = 512
    onset = librosa.onset.onset_strength(y=mono, sr=sample_rate, hop_length=hop)
    _, frames = librosa.beat.beat_track(
        onset_envelope=onset, sr=sample_rate, hop_length=hop, start_bpm=target_bpm
    )
    times = librosa.frames_to_time(frames, sr=sample_rate, hop_length=hop).astype(np.float64)
    # downbeats are marked by the kick and the bass: their band's onsets, not the hi-hat's
    low = librosa.onset.onset_strength(
        y=mono, sr=sample_rate, hop_length=hop, fmax=250.0, n_mels=16
    )
    strength = low[np.clip(frames, 0, low.size - 1)].astype(np.float64)
    if times.size < 2:
        return Beats(target_bpm, times, strength)
    bpm = _fitted_bpm(times)
    readings = {bpm / 2: 0.5, bpm: 1.0, bpm * 2: 2.0}
    chosen = min(readings, key=lambda reading: abs(reading - target_bpm))
    factor = readings[chosen]
    if factor == 0.5:
        times, strength = times[::2], strength[::2]
    elif factor == 2.0:
        tracked = times
        times = np.sort(np.concatenate([tracked, (tracked[:-1] + tracked[1:]) / 2]))
        strength = np.interp(times, tracked, strength)
    return Beats(chosen if times.size < 2 else _fitted_bpm(times), times, strength)


def _fitted_bpm(times: npt.NDArray[np.float64]) -> float:
    period = float(np.polyfit(np.arange(times.size), times, 1)[0])
    return 60.0 / period


def onset_near(samples: npt.NDArray[np.float32], sample_rate: int, when: float) -> float:
    """The attack nearest `when` s, to the millisecond: the tracker's beats sit a frame or two
    after the attack, and a cut there would lose the transient. The attack is where the energy
    in 5 ms rises most over the next 5 ms, within 80 ms before and 40 ms after `when`."""
    first = max(0, round((when - 0.08) * sample_rate))
    last = min(samples.shape[0], round((when + 0.045) * sample_rate))
    hop, width = max(1, sample_rate // 1000), max(1, sample_rate // 200)
    mono = np.asarray(samples[first:last], dtype=np.float64).mean(axis=1)
    if mono.size < 4 * width:
        return when
    summed = np.concatenate([[0.0], np.cumsum(mono**2)])
    starts = np.arange(0, mono.size - width, hop)
    energy = np.log10((summed[starts + width] - summed[starts]) / width + 1e-10)
    lag = width // hop
    rise = int(np.argmax(energy[lag:] - energy[:-lag]))  # a window before the attack
    return float(first + starts[rise] + width) / sample_rate
