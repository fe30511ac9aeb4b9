"""Cutting audio to the bar grid: the first downbeat, exact bars, seamless loops, endings."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["cut_bars", "fade_out", "first_downbeat"]


def first_downbeat(
    times: npt.NDArray[np.float64], strength: npt.NDArray[np.float64], beats_per_bar: int
) -> float:
    """The time of the first downbeat: of the `beats_per_bar` ways to group the beats into
    bars, the one whose first beats are the strongest onsets (the kick or the chord change
    that marks a bar), its first beat."""
    if times.size == 0:
        return 0.0
    if times.size < 2 * beats_per_bar:
        return float(times[0])
    phases = [float(strength[phase::beats_per_bar].mean()) for phase in range(beats_per_bar)]
    return float(times[int(np.argmax(phases))])


def cut_bars(
    samples: npt.NDArray[np.float32],
    sample_rate: int,
    start: float,
    length: float,
    loop: bool,
    crossfade: float,
) -> npt.NDArray[np.float32]:
    """`length` s of `samples` from `start` s, to the sample. With `loop`, the audio that
    follows the cut (the overrun) is crossfaded into its beginning over `crossfade` s: the
    file's last sample flows into the overrun's first, which now opens the file, so it plays
    around without a click or a jump in level."""
    first = round(start * sample_rate)
    frames = round(length * sample_rate)
    if first + frames > samples.shape[0]:
        raise ValueError(
            f"{samples.shape[0] / sample_rate:.2f} s of audio cannot give {length:.2f} s "
            f"from {start:.2f} s"
        )
    out = np.array(samples[first : first + frames], dtype=np.float32)
    if not loop:
        return out
    fade = min(round(crossfade * sample_rate), samples.shape[0] - first - frames, frames)
    if fade < 2:
        raise ValueError("no audio after the loop to crossfade its seam with")
    overrun = samples[first + frames : first + frames + fade].astype(np.float64)
    opening = out[:fade].astype(np.float64)
    ramp = np.linspace(0.0, np.pi / 2, fade, dtype=np.float64)[:, None]
    fading, rising = np.cos(ramp), np.sin(ramp)
    # equal power for unrelated audio, equal gain for alike (a loop of repeating music is):
    # the gains keep the level for the two signals' correlation
    energy = float(np.sqrt(np.sum(overrun**2) * np.sum(opening**2)))
    alike = float(np.clip(np.sum(overrun * opening) / energy, 0.0, 1.0)) if energy > 0 else 0.0
    level = np.sqrt(fading**2 + rising**2 + 2 * alike * fading * rising)
    out[:fade] = ((overrun * fading + opening * rising) / level).astype(np.float32)
    return out


def fade_out(
    samples: npt.NDArray[np.float32], sample_rate: int, seconds: float
) -> npt.NDArray[np.float32]:
    """`samples` with their last `seconds` faded to silence (a raised-cosine curve)."""
    frames = min(round(seconds * sample_rate), samples.shape[0])
    if frames <= 0:
        return samples
    out = np.array(samples, dtype=np.float32)
    curve = 0.5 * (1 + np.cos(np.linspace(0.0, np.pi, frames, dtype=np.float64)))
    out[-frames:] *= curve[:, None].astype(np.float32)
    return out
