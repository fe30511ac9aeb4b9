"""The engine's audio while it is made (`MusicGenEngine.stream`), on the tiny random MusicGen."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from tunesmith.engine import GenerationParams, MusicGenEngine
from tunesmith.errors import Canceled


def test_the_stream_is_the_generated_track_in_chunks(tiny_engine: MusicGenEngine) -> None:
    params = GenerationParams("ambient drone", 3.3, seed=11)
    steps: list[int] = []
    at_chunk: list[int] = []  # steps done when each chunk arrived

    def progress(done: int, total: int) -> None:
        steps.append(done)

    chunks = []
    for chunk in tiny_engine.stream(params, progress):
        at_chunk.append(steps[-1])
        chunks.append(chunk)

    whole = tiny_engine.generate(params).samples
    np.testing.assert_array_equal(np.concatenate(chunks), whole)
    # a quarter and a half second first, then 1 s chunks, then the rest
    assert [len(c) for c in chunks] == [7680, 8320, 16000, 32000, 32000, 9600]
    total = tiny_engine.steps_for(3.3)
    # the first 12 frames are out once they (and the codebook delay) are decoded
    assert 12 + 3 <= at_chunk[0] < total


def test_a_continuation_streams_its_prompt_first(tiny_engine: MusicGenEngine) -> None:
    prompt = tiny_engine.generate(GenerationParams("piano", 1.2, seed=2)).samples
    params = GenerationParams("piano", 2.5, seed=3)
    streamed = np.concatenate(list(tiny_engine.stream(params, prompt_audio=prompt)))
    whole = tiny_engine.generate(params, prompt_audio=prompt).samples
    np.testing.assert_array_equal(streamed, whole)
    assert streamed.shape == (80000, 1)


def test_cancel_stops_the_stream_at_the_next_step(tiny_engine: MusicGenEngine) -> None:
    cancel = threading.Event()
    steps: list[int] = []
    stream = tiny_engine.stream(
        GenerationParams("drums", 20.0, seed=1), lambda d, t: steps.append(d), cancel=cancel
    )
    first = next(stream)
    cancel.set()
    with pytest.raises(Canceled):
        list(stream)
    assert first.shape == (7680, 1)
    assert steps[-1] < tiny_engine.steps_for(20.0)
    assert tiny_engine.scheduler.in_flight == 0


def test_closing_the_stream_stops_its_generation(tiny_engine: MusicGenEngine) -> None:
    steps: list[int] = []
    stream = tiny_engine.stream(
        GenerationParams("drums", 20.0, seed=1), lambda d, t: steps.append(d)
    )
    next(stream)
    stream.close()  # e.g. the listener went away
    reached = len(steps)
    assert steps[-1] < tiny_engine.steps_for(20.0)
    assert tiny_engine.scheduler.in_flight == 0
    assert len(steps) == reached  # nothing runs on after the close
