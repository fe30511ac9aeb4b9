"""Time-stretching and pitch-shifting with Rubber Band, out of process.

Rubber Band is the reference stretcher (its R3 "fine" engine keeps transients and tone at the
ratios producers use) and it is GPL: tunesmith (Apache-2.0) runs its command-line tool, never
links it. Debian and Ubuntu ship it as ``rubberband-cli``; `scripts/install` and the image
install it. Without it, a request that needs it is refused (422) saying how to get it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from tunesmith.errors import FieldError, InvalidRequest

__all__ = ["INSTALL_HINT", "available", "require", "stretch"]

INSTALL_HINT: Final = (
    "needs Rubber Band's command-line tool, which this server lacks: install it "
    "(Debian/Ubuntu: apt-get install rubberband-cli; macOS: brew install rubberband)"
)
_TIMEOUT_S: Final = 300


def available() -> bool:
    return shutil.which("rubberband") is not None


def require(field: str) -> None:
    """Refuse a request whose `field` needs Rubber Band when it is not installed (422)."""
    if not available():
        raise InvalidRequest([FieldError(field, INSTALL_HINT)])


def stretch(
    samples: npt.NDArray[np.float32],
    sample_rate: int,
    time_ratio: float = 1.0,
    semitones: float = 0.0,
) -> npt.NDArray[np.float32]:
    """`samples` ``(frames, channels)`` made `time_ratio` times as long and `semitones` higher,
    through ``rubberband --fine`` on 32-bit float WAV files in a private temporary directory."""
    import soundfile

    if time_ratio == 1.0 and semitones == 0.0:
        return samples
    tool = shutil.which("rubberband")
    if tool is None:
        raise RuntimeError(INSTALL_HINT)
    with tempfile.TemporaryDirectory(prefix="tunesmith-rb-") as scratch:
        source, target = Path(scratch, "in.wav"), Path(scratch, "out.wav")
        soundfile.write(source, samples, sample_rate, subtype="FLOAT")
        command = [tool, "--quiet", "--fine", "--time", f"{time_ratio:.9f}"]
        if semitones:
            command += ["--pitch", f"{semitones:g}", "--formant"]
        done = subprocess.run(
            [*command, str(source), str(target)],
            capture_output=True,
            text=True,
            timeout=_TIMEOUT_S,
            check=False,
        )
        if done.returncode != 0 or not target.exists():
            detail = " ".join(done.stderr.split())[-300:]
            raise RuntimeError(f"rubberband failed (exit {done.returncode}): {detail}")
        out, _ = soundfile.read(target, dtype="float32", always_2d=True)
    return np.ascontiguousarray(out)
