"""Musical keys: parsing the one asked for, estimating the one a track is in, and the shift
between them.

The estimate correlates the track's mean chroma (librosa's constant-Q chroma) with the
Krumhansl-Kessler key profiles, the standard template method (as in essentia's and
music21's key finders). A pitch shift moves the tonic but keeps the mode: a track read in
another mode than the one asked for is shifted to the asked key's relative (same notes), and
a warning says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:  # parsing is numpy-free: the request schema (and the Lambda) uses it
    import numpy as np
    import numpy.typing as npt

__all__ = ["Key", "find_key", "parse_key", "shift_between"]

NAMES: Final = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
_FLATS: Final = {"Db": "C#", "Eb": "D#", "Gb": "F#", "Ab": "G#", "Bb": "A#", "Cb": "B", "Fb": "E"}
_SHARPS_ONLY: Final = {"E#": "F", "B#": "C"}
# Krumhansl & Kessler (1982) probe-tone ratings, tonic first
_MAJOR: Final = (6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88)
_MINOR: Final = (6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17)
_PATTERN: Final = re.compile(r"^\s*([A-Ga-g])\s*([#b♯♭]?)\s*(major|minor|maj|min)\s*$", re.I)


@dataclass(frozen=True)
class Key:
    tonic: int  # pitch class, C = 0
    minor: bool

    def __str__(self) -> str:
        return f"{NAMES[self.tonic]} {'minor' if self.minor else 'major'}"

    @property
    def relative(self) -> Key:
        """The key with the same notes in the other mode (A minor <-> C major)."""
        return Key((self.tonic + (3 if self.minor else 9)) % 12, not self.minor)


def parse_key(text: str) -> Key:
    """``"A minor"``, ``"F# major"``, ``"Bb min"`` -> `Key` (`ValueError` otherwise)."""
    match = _PATTERN.match(text)
    if match is None:
        raise ValueError("must be a tonic and a mode, such as 'A minor' or 'F# major'")
    letter, accidental, mode = match.groups()
    name = letter.upper() + accidental.replace("♯", "#").replace("♭", "b")
    name = _FLATS.get(name, _SHARPS_ONLY.get(name, name))
    if name not in NAMES:  # e.g. "Fb" handled above; anything else is not a pitch
        raise ValueError(f"{text!r} is not a key")
    return Key(NAMES.index(name), mode.lower().startswith("min"))


def find_key(samples: npt.NDArray[np.float32], sample_rate: int) -> tuple[Key, float]:
    """The key `samples` ``(frames, channels)`` are most likely in, and how clearly (the
    profile correlation, -1..1)."""
    import librosa
    import numpy as np

    mono = np.asarray(samples, dtype=np.float32).mean(axis=1)
    chroma = librosa.feature.chroma_cqt(y=mono, sr=sample_rate).mean(axis=1)
    best, score = Key(0, False), -2.0
    for tonic in range(12):
        for minor, profile in ((False, _MAJOR), (True, _MINOR)):
            r = float(np.corrcoef(chroma, np.roll(np.array(profile), tonic))[0, 1])
            if np.isfinite(r) and r > score:
                best, score = Key(tonic, minor), r
    return best, score


def shift_between(found: Key, wanted: Key) -> tuple[int, Key]:
    """The smallest shift in semitones (-6..5) that takes a track in `found` to `wanted`, and
    the key it lands in: `wanted`, or its relative when the modes differ."""
    lands = wanted if wanted.minor == found.minor else wanted.relative
    semitones = (lands.tonic - found.tonic) % 12
    if semitones >= 6:  # down rather than up at the tritone: less of a chipmunk
        semitones -= 12
    return semitones, lands
