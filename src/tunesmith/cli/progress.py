"""The one progress bar `tunesmith generate` draws: seconds of audio made, how much faster than
realtime, and the time left."""

from __future__ import annotations

import sys
import time
from types import TracebackType

from tqdm import tqdm

__all__ = ["AudioBar"]


class AudioBar:
    """A bar over a `duration` s track.

    It shows ``loading`` until the first decode step; `progress` (the engine's step callback)
    then moves it. Steps are spread evenly over the new audio, so steps done give seconds made,
    across every window of a long track."""

    def __init__(self, duration: float) -> None:
        self.duration = duration
        self.given = 0.0
        self.began: float | None = None
        self.bar = tqdm(
            total=duration,
            desc="loading",
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s{postfix}",
            file=sys.stderr,
        )

    def begins_with(self, seconds: float) -> None:
        """The track starts with `seconds` of a continued file: made already, not generated."""
        self.given = min(seconds, self.duration)
        self.bar.update(self.given - self.bar.n)

    def progress(self, done: int, total: int) -> None:
        now = time.monotonic()
        if self.began is None:
            self.began = now
            self.bar.set_description_str("generating", refresh=False)
        new = (self.duration - self.given) * done / max(total, 1)
        elapsed = now - self.began
        if elapsed > 0 and new > 0:
            speed = new / elapsed  # seconds of audio per second
            left = (self.duration - self.given - new) / speed
            self.bar.set_postfix_str(
                f"{speed:.1f}x realtime, {tqdm.format_interval(left)} left", refresh=False
            )
        self.bar.update(self.given + new - self.bar.n)

    def __enter__(self) -> AudioBar:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.bar.close()
