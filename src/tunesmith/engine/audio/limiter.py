"""A look-ahead true-peak limiter, and loudness normalization that lands on its target.

One gain for a whole track cannot meet both a loudness target and a -1 dBTP ceiling when the
track's peaks stand far above its body: it must give up one. Broadcast chains meet both by
limiting only the few moments that would pass the ceiling: `limit` lowers the gain there,
smoothly, and leaves the rest untouched.

The gain at each sample is the lowest the true peaks (4x oversampled, as BS.1770's meter) need
within the look-ahead window after it, averaged over that window: a ramp that reaches each
peak's gain before the peak (so no sample is louder than the ceiling) and no step a listener
hears as a click. It then rises back at a fixed rate (`RELEASE_DB_PER_S`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = ["LOOKAHEAD_S", "RELEASE_DB_PER_S", "land_loudness", "limit", "true_peak_envelope"]

LOOKAHEAD_S: Final = 0.005  # 5 ms: shorter clicks, longer smears the attack
RELEASE_DB_PER_S: Final = 100.0  # back from 10 dB of reduction in 100 ms
OVERSAMPLE: Final = 4  # BS.1770's true-peak meter
_MARGIN: Final = 10 ** (-0.1 / 20)  # aim 0.1 dB under: the gain ramp moves intersample peaks


def true_peak_envelope(audio: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """Per frame of ``(frames, channels)`` audio, the largest 4x-oversampled magnitude within
    half a sample of it, over all channels."""
    from scipy.signal import resample_poly

    magnitude: npt.NDArray[np.float64] = np.max(np.abs(audio), axis=1).astype(np.float64)
    if audio.shape[0] < 2:
        return magnitude
    over = np.abs(resample_poly(audio.astype(np.float64), OVERSAMPLE, 1, axis=0)).max(axis=1)
    # the oversampled points nearest each frame: its own and the ones either side
    groups = over[: audio.shape[0] * OVERSAMPLE].reshape(-1, OVERSAMPLE).max(axis=1)
    before = np.concatenate([[0.0], groups[:-1]])
    return np.asarray(np.maximum.reduce([magnitude, groups, before]), dtype=np.float64)


def _forward_min(values: npt.NDArray[np.float64], width: int) -> npt.NDArray[np.float64]:
    """``out[n] = min(values[n : n + width])`` (the window shrinks at the end)."""
    from scipy.ndimage import minimum_filter1d

    # minimum_filter1d centres its window; the origin shifts it to start at n
    lowest = minimum_filter1d(values, size=width, mode="nearest", origin=-(width // 2))
    return np.asarray(lowest, dtype=np.float64)


def limit(
    audio: npt.NDArray[np.floating],
    sample_rate: int,
    ceiling: float,
    lookahead_s: float = LOOKAHEAD_S,
) -> npt.NDArray[np.float32]:
    """`audio` ``(frames, channels)`` with its true peak at or under `ceiling` (linear), the
    gain lowered only around the peaks that pass it. Audio already under it is returned as is."""
    audio = np.asarray(audio, dtype=np.float32)
    target = ceiling * _MARGIN
    envelope = true_peak_envelope(audio)
    if envelope.size == 0 or float(envelope.max()) <= ceiling:
        return audio
    needed = np.minimum(1.0, target / np.maximum(envelope, 1e-12))
    width = max(1, round(lookahead_s * sample_rate))
    lowest = _forward_min(needed, width)
    # release: in dB, the gain rises at most RELEASE_DB_PER_S; a running minimum of the
    # needed gain minus that slope is the recursion min(needed[n], gain[n - 1] + slope)
    slope = RELEASE_DB_PER_S / sample_rate
    db = 20 * np.log10(lowest)
    steps = np.arange(db.size) * slope
    released = np.minimum.accumulate(db - steps) + steps
    gain = 10 ** (np.minimum(released, 0.0) / 20)
    # the moving average of `width` values each at most the need at n keeps gain[n] under it
    kernel = np.full(width, 1.0 / width)
    # before the start the gain is its first value, itself under the needs of the first window
    padded = np.concatenate([np.full(width - 1, gain[0]), gain])
    smooth = np.convolve(padded, kernel, mode="valid")
    out = (audio * smooth[:, None]).astype(np.float32)
    # the ramp itself can lift an intersample peak by a hair: one last gain settles it
    peak = float(true_peak_envelope(out).max())
    if peak > ceiling:
        out *= np.float32(target / peak)
    return out


def land_loudness(
    audio: npt.NDArray[np.floating],
    sample_rate: int,
    target_lufs: float,
    ceiling: float,
    measure: Callable[[npt.NDArray[np.float32]], float | None],
    tolerance_lu: float = 0.1,
    rounds: int = 6,
) -> npt.NDArray[np.float32]:
    """`audio` at `target_lufs` integrated loudness (by `measure`) with its true peak at or
    under `ceiling`: a gain to the target, the limiter, and the gain corrected by what the
    limiter took, until the loudness is within `tolerance_lu` (a few rounds at most)."""
    source = np.asarray(audio, dtype=np.float32)
    measured = measure(source)
    if measured is None or not np.isfinite(measured):
        return limit(source, sample_rate, ceiling)
    gain_db = target_lufs - measured
    out = source
    for _ in range(rounds):
        out = limit(source * np.float32(10 ** (gain_db / 20)), sample_rate, ceiling)
        now = measure(out)
        if now is None or not np.isfinite(now) or abs(target_lufs - now) <= tolerance_lu:
            break
        gain_db += target_lufs - now
    return out
