"""Dynamic batching: concurrent requests share decode steps without changing their audio."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from tunesmith.engine import GenerationParams, MusicGenEngine
from tunesmith.errors import ModelNotReady


def engine(
    model_dir: Path, max_batch: int = 8, window: float = 0.05, precision: str = "fp32"
) -> MusicGenEngine:
    e = MusicGenEngine(
        str(model_dir), "cpu", precision=precision, max_batch=max_batch, batch_window=window
    )
    e.setup()
    return e


# "jazz" and "drums" are shorter (in tokens) than a head of the tiny model is wide: those two
# requests' cross-attention runs folded into their prompts (musicgen.model.cross), the
# others' through the weights, in the same batch
REQUESTS = [
    GenerationParams("calm piano melody", 1.0, seed=1),
    GenerationParams("epic orchestral soundtrack", 2.0, seed=2, temperature=0.7, top_k=50),
    GenerationParams("lofi hip hop beat", 1.5, seed=3, guidance_scale=1.0),
    GenerationParams("jazz", 1.2, seed=4, top_k=0, top_p=0.9),
    GenerationParams("drums", 1.0, seed=5, greedy=True),
]


# prompts of one length: the batch's cross-attention runs as one call over all of them
SAME_LENGTH = [GenerationParams(f"calm piano take {i}", 1.0 + i / 5, seed=i) for i in range(4)]


@pytest.mark.parametrize("precision", ["fp32", "int8", "int4"])
@pytest.mark.parametrize("requests", [REQUESTS, SAME_LENGTH], ids=["mixed", "same-length"])
def test_batched_requests_get_the_codes_they_get_alone(
    tiny_model_dir: Path, precision: str, requests: list[GenerationParams]
) -> None:
    solo_engine = engine(tiny_model_dir, max_batch=1, window=0, precision=precision)
    solo = [solo_engine.generate_codes(p) for p in requests]
    solo_engine.close()
    assert solo_engine.scheduler.batch_sizes.keys() == {1}

    batched_engine = engine(tiny_model_dir, precision=precision)
    with ThreadPoolExecutor(len(requests)) as pool:
        batched = list(pool.map(batched_engine.generate_codes, requests))
    sizes = batched_engine.scheduler.batch_sizes
    batched_engine.close()
    assert max(sizes) > 1, sizes  # the requests really shared steps
    for params, alone, together in zip(requests, solo, batched, strict=True):
        assert together.shape == alone.shape == (4, round(params.duration * 50))
        assert torch.equal(alone, together), params
    # and different requests got different music
    assert not torch.equal(solo[0], solo[-1][:, : solo[0].shape[1]])


def test_a_request_joins_a_running_batch_and_one_leaves_early(tiny_model_dir: Path) -> None:
    e = engine(tiny_model_dir, window=0)
    long = GenerationParams("long one", 6.0, seed=10)
    short = GenerationParams("short one", 1.0, seed=11)
    started = threading.Event()
    progress: list[int] = []

    def on_step(done: int, total: int) -> None:
        progress.append(done)
        if done == 50:
            started.set()

    result: dict[str, torch.Tensor] = {}
    worker = threading.Thread(
        target=lambda: result.setdefault("long", e.generate_codes(long, on_step))
    )
    worker.start()
    assert started.wait(60)
    short_codes = e.generate_codes(short)  # joins mid-way, finishes first
    assert worker.is_alive(), "the long request should still be running when the short one ends"
    worker.join()
    sizes = e.scheduler.batch_sizes
    e.close()
    assert sizes.get(2, 0) >= e.steps_for(1.0)  # the short one ran inside the batch
    assert progress == list(range(1, e.steps_for(6.0) + 1))
    alone = engine(tiny_model_dir, max_batch=1, window=0)
    assert torch.equal(alone.generate_codes(short), short_codes)
    assert torch.equal(alone.generate_codes(long), result["long"])
    alone.close()


def test_precision_int8_generates_exact_length_audio(tiny_model_dir: Path) -> None:
    e = MusicGenEngine(str(tiny_model_dir), "cpu", precision="int8")
    e.setup()
    assert e.precision == "int8"
    track = e.generate(GenerationParams("calm piano", 1.3, seed=1))
    again = e.generate(GenerationParams("calm piano", 1.3, seed=1))
    e.close()
    assert track.samples.shape == (round(1.3 * 32000), 1)
    assert (track.samples == again.samples).all()


def test_a_new_batch_never_reuses_the_last_batchs_prompts(tiny_model_dir: Path) -> None:
    first = SAME_LENGTH
    second = [GenerationParams(f"calm piano take {i + 5}", 1.0, seed=i) for i in range(4)]
    solo_engine = engine(tiny_model_dir, max_batch=1, window=0)
    expected = [solo_engine.generate_codes(p) for p in second]
    solo_engine.close()
    batched_engine = engine(tiny_model_dir)
    for requests in (first, second):  # the second batch's jobs may land on the first's ids
        with ThreadPoolExecutor(len(requests)) as pool:
            got = list(pool.map(batched_engine.generate_codes, requests))
    batched_engine.close()
    for params, alone, together in zip(second, expected, got, strict=True):
        assert torch.equal(alone, together), params


def _native_threads() -> set[int]:
    """This process's OS threads that are not Python threads (OpenMP's workers among them)."""
    python = {thread.native_id for thread in threading.enumerate()}
    return {int(tid) for tid in os.listdir("/proc/self/task")} - python


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="lists threads through /proc")
def test_callers_threads_run_none_of_the_engines_parallel_work(tiny_model_dir: Path) -> None:
    # Each thread that runs a parallel operator keeps an OpenMP team of its own, and libgomp
    # slows every team down once their threads outnumber the CPUs: all of the engine's work,
    # prompt encoding and audio decoding included, has to run on its one compute thread.
    if torch.get_num_threads() < 2:
        pytest.skip("torch runs on one thread here: no OpenMP teams to count")
    e = engine(tiny_model_dir, precision="int8")
    e.generate(GenerationParams("warm up", 1.0, seed=0))
    before = _native_threads()
    done, release = threading.Barrier(4), threading.Event()

    def caller(i: int) -> None:
        e.generate(GenerationParams(f"caller {i}", 1.0, seed=i))
        done.wait(60)
        release.wait(60)  # alive, with whatever team it started, while threads are counted

    callers = [threading.Thread(target=caller, args=(i,)) for i in range(3)]
    for thread in callers:
        thread.start()
    done.wait(120)
    started = _native_threads() - before
    release.set()
    for thread in callers:
        thread.join()
    e.close()
    assert started == set()


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="lists threads through /proc")
def test_loading_leaves_no_parallel_team_behind_in_the_callers_thread(
    tiny_model_dir: Path,
) -> None:
    if torch.get_num_threads() < 2:
        pytest.skip("torch runs on one thread here: no OpenMP teams to count")
    before = _native_threads()
    loaded, release = threading.Event(), threading.Event()
    engines: list[MusicGenEngine] = []

    def load() -> None:  # a caller that stays alive after loading, as a server's main thread
        engines.append(engine(tiny_model_dir, precision="int8"))
        loaded.set()
        release.wait(60)

    caller = threading.Thread(target=load)
    caller.start()
    assert loaded.wait(120)
    deadline = time.monotonic() + 5  # the loading thread's team ends a moment after it
    while (started := _native_threads() - before) and time.monotonic() < deadline:
        time.sleep(0.05)
    release.set()
    caller.join()
    engines[0].close()
    assert started == set()


def test_work_handed_to_the_compute_thread_returns_or_raises_in_the_caller(
    tiny_model_dir: Path,
) -> None:
    e = engine(tiny_model_dir, window=0)
    assert e.scheduler.call(lambda: threading.current_thread().name) == "tunesmith-decode"
    with pytest.raises(ZeroDivisionError):
        e.scheduler.call(lambda: 1 // 0)
    track = e.generate(GenerationParams("still serving", 0.5, seed=1))  # the error hurt nothing
    assert track.samples.shape == (16000, 1)
    e.close()
    with pytest.raises(ModelNotReady):
        e.scheduler.call(lambda: None)
    with pytest.raises(ModelNotReady):
        e.generate(GenerationParams("after close", 0.5, seed=1))
