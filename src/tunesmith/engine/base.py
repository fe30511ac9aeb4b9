"""The engine contract the API, service, jobs, render and AWS tiers depend on, torch-free.

`MusicGenEngine` (`tunesmith.engine.engine`) is the implementation; these tiers are typed
against `Engine` alone, so they import no model code and a test double or another family's
engine can stand in wherever it offers the same surface. Until `setup` has finished, the
properties that describe the loaded model raise `ModelNotReady` (or `ModelUnavailable` once
loading failed); `check_ready` raises the same without reading anything.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from tunesmith.engine.params import GenerationParams, ProgressCallback, SectionParams

__all__ = ["Engine", "KernelInfo"]


class KernelInfo(Protocol):
    """Which kernels run: ``compiled`` or ``torch`` (`tunesmith.engine.kernels.KernelStatus`)."""

    @property
    def path(self) -> str: ...
    def describe(self) -> str: ...


class Engine(Protocol):
    """A text-to-music engine with a lifecycle (`setup` loads once, never at import)."""

    model_name: str
    extend_stride: float  # seconds each window of a long track adds
    load_error: str | None  # why loading failed, once it has
    load_seconds: float | None  # how long `setup` took, once it succeeded
    step_kind: str  # how a decode step runs: eager, static or cuda-graph

    # lifecycle
    @property
    def ready(self) -> bool: ...
    def check_ready(self) -> None: ...
    def setup(self) -> None: ...
    def load_in_background(self, on_failure: Callable[[], None] | None = None) -> None: ...
    def close(self) -> None: ...

    # what is loaded
    @property
    def device(self) -> str: ...
    @property
    def precision(self) -> str: ...
    @property
    def kernels(self) -> KernelInfo: ...
    @property
    def sample_rate(self) -> int: ...
    @property
    def channels(self) -> int: ...
    @property
    def follows_melody(self) -> bool: ...
    @property
    def continues_audio(self) -> bool: ...
    @property
    def max_track_seconds(self) -> float | None: ...
    @property
    def batch_sizes(self) -> dict[int, int]: ...

    # generation
    def steps_for(  # the decode steps `stream` reports, each section's windows counted
        self, duration: float, prompt_frames: int = 0, sections: Sequence[SectionParams] = ()
    ) -> int: ...
    def stream(
        self,
        params: GenerationParams,
        progress: ProgressCallback | None = None,
        prompt_audio: npt.NDArray[np.float32] | None = None,
        melody: npt.NDArray[np.float32] | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[npt.NDArray[np.float32]]: ...
