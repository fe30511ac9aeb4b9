"""Long tracks and continuations on a tiny random MusicGen: windows, seams, seeds, prefill."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from tunesmith.engine import GenerationParams, MusicGenEngine
from tunesmith.engine.musicgen.model import DecodeJob, FastDecoder
from tunesmith.engine.musicgen.model.prefill import _load

PROMPT = "lofi hip hop beat with vinyl crackle"


@pytest.fixture(scope="module", params=["fp32", "int8"])
def engine(request: pytest.FixtureRequest, tiny_model_dir: Path) -> Iterator[MusicGenEngine]:
    engine = MusicGenEngine(str(tiny_model_dir), device="cpu", precision=request.param)
    engine.setup()
    yield engine
    engine.close()


def _job(engine: MusicGenEngine, prompt: torch.Tensor, frames: int, seed: int) -> DecodeJob:
    decoder = engine.decoder
    inputs = engine.loaded.processor(text=[PROMPT], padding=True, return_tensors="pt")
    params = GenerationParams(PROMPT, frames / 50, seed, greedy=True)

    def open_job() -> DecodeJob:
        conditioning = decoder.condition(inputs["input_ids"], inputs["attention_mask"])
        generator = torch.Generator().manual_seed(seed)
        return decoder.open(conditioning, frames, params.sampling, generator, prompt)

    job: DecodeJob = engine.scheduler.call(open_job)
    job.scores = []
    return job


def _cache(decoder: FastDecoder, job: DecodeJob, end: int) -> torch.Tensor:
    return _load(job.cache[..., :end, :], decoder.head_dim).float()


def test_prefill_fills_the_cache_as_the_steps_would(engine: MusicGenEngine) -> None:
    decoder = engine.decoder
    codes = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, decoder.vocab_size, (decoder.num_codebooks, 300), generator=codes)
    prefilled, stepped = _job(engine, prompt, 340, 1), _job(engine, prompt, 340, 1)
    while prefilled.t < prefilled.prefix:
        engine.scheduler.call(lambda: decoder.prefill(prefilled, 64))  # chunked, as served
    while stepped.t < stepped.prefix:
        engine.scheduler.call(lambda: decoder.step([stepped]))
    assert prefilled.t == stepped.t == 300
    a, b = _cache(decoder, prefilled, 300), _cache(decoder, stepped, 300)
    tolerance = 1e-4 if engine.precision == "fp32" else 5e-2
    assert torch.allclose(a, b, atol=tolerance * float(b.abs().max()), rtol=0)
    prefilled.scores, stepped.scores = [], []
    for _ in range(40):  # the steps after the prompt read either cache alike
        engine.scheduler.call(lambda: decoder.step([prefilled, stepped]))
    assert prefilled.scores is not None and stepped.scores is not None
    pairs = zip(prefilled.scores, stepped.scores, strict=True)
    # int8: a cache value rounded to the neighbouring int8 step here and there
    atol = 1e-3 if engine.precision == "fp32" else 2e-2
    assert all(torch.allclose(x, y, atol=atol) for x, y in pairs)
    # the prompt's codes come out as they went in, and the delayed codebooks kept them
    assert torch.equal(decoder.codes(prefilled)[:, :300], prompt)


def test_long_track_has_its_exact_length_and_seamless_windows(engine: MusicGenEngine) -> None:
    params = GenerationParams(PROMPT, 75.0, 7, greedy=True)
    windows = engine.windows_for(75.0)
    assert len(windows) == 4
    codes = engine.generate_codes(params)
    assert codes.shape == (engine.decoder.num_codebooks, 75 * 50)
    # each window continues exactly the 12 s before it: regenerating one window from the
    # stitched codes before its start gives the stitched codes after it (a frame missing or
    # doubled at a seam would shift every later frame)
    start = 1500
    for window in windows[1:]:
        context = codes[:, start - window.context : start]
        again = engine.generate_codes(
            GenerationParams(PROMPT, (window.context + window.new) / 50, 7, greedy=True),
            prompt=context,
        )
        assert torch.equal(again[:, window.context :], codes[:, start : start + window.new])
        start += window.new
    track = engine.decode_audio(codes, 75.0)
    assert track.samples.shape == (75 * 32000, 1)


def test_same_seed_same_long_track_solo_and_batched(engine: MusicGenEngine) -> None:
    params = [GenerationParams(PROMPT, 40.0, seed) for seed in (11, 12)]
    solo = [engine.generate_codes(p) for p in params]
    again = engine.generate_codes(params[0])
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(engine.generate_codes, params))
    assert torch.equal(solo[0], again)
    assert all(torch.equal(a, b) for a, b in zip(solo, together, strict=True))
    assert not torch.equal(solo[0], solo[1])


def test_progress_spans_every_window(engine: MusicGenEngine) -> None:
    seen: list[tuple[int, int]] = []
    engine.generate_codes(GenerationParams(PROMPT, 45.0, 3), lambda d, t: seen.append((d, t)))
    total = engine.steps_for(45.0)
    assert total == 45 * 50 + 2 * engine.decoder.max_delay  # two windows
    assert all(t == total for _, t in seen)
    done = [d for d, _ in seen]
    assert done == sorted(done) and done[-1] == total and len(done) == total


def test_continuation_begins_with_the_prompt_and_continues_it(
    engine: MusicGenEngine,
) -> None:
    rng = np.random.default_rng(0)
    upload = (0.3 * rng.standard_normal((4 * 32000, 1))).astype(np.float32)
    prompt = engine.encode_prompt_audio(upload)
    assert prompt.shape == (engine.decoder.num_codebooks, 200)
    params = GenerationParams(PROMPT, 10.0, 5)
    codes = engine.generate_codes(params, prompt=prompt)
    assert codes.shape[1] == 500 and torch.equal(codes[:, :200], prompt)
    track = engine.generate(params, prompt_audio=upload)
    assert track.samples.shape == (10 * 32000, 1)
    # the first 4 s are the prompt as the codec reproduces it (the decoder is causal: what
    # follows cannot change them), and the rest is new
    alone = engine.decode_audio(prompt, 4.0).samples
    head = track.samples[: 4 * 32000]
    assert np.allclose(head[: -32000 // 10], alone[: -32000 // 10], atol=1e-4)
    tail = track.samples[4 * 32000 :]
    assert float(np.abs(tail).max()) > 0 and not np.allclose(tail[:32000], head[:32000])
