"""The static step a CUDA graph captures (`tunesmith.engine.cuda`), run eagerly on the CPU.

It must give the dynamic step's greedy codes and transformers' (fp32), whatever else shares
its batch and whenever jobs join or leave; and with sampling, a request's codes must not depend
on its batch. The graph itself needs a GPU: `scripts/gpu-check` runs it there.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from tunesmith.benchmark.reference import compare_scores, engine_scores, reference_scores
from tunesmith.engine import GenerationParams, MusicGenEngine
from tunesmith.engine.cuda import StaticStepper
from tunesmith.engine.loader import LoadedModel, load_model
from tunesmith.engine.musicgen.model import DecodeJob, FastDecoder, SamplingParams
from tunesmith.errors import ConfigError

PROMPTS = ["calm piano melody", "epic orchestral soundtrack with strings and a choir", "jazz"]
GREEDY = SamplingParams(greedy=True)


@pytest.fixture(scope="module")
def loaded(tiny_model_dir: Path) -> LoadedModel:
    return load_model(str(tiny_model_dir), device="cpu")


@pytest.fixture(scope="module")
def decoder(loaded: LoadedModel) -> FastDecoder:
    return FastDecoder(loaded.model, "fp32", loaded.device)


def start(
    loaded: LoadedModel,
    decoder: FastDecoder,
    prompt: str,
    frames: int,
    sampling: SamplingParams = GREEDY,
    seed: int = 0,
) -> DecodeJob:
    inputs = loaded.processor(text=[prompt], padding=True, return_tensors="pt")
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    return decoder.start(ids, mask, frames, sampling, seed)


def run(stepper: object, jobs: list[DecodeJob], joins: dict[int, list[DecodeJob]]) -> int:
    """Step `jobs` until all are done, adding ``joins[n]`` before step n; the widest batch."""
    step = getattr(stepper, "step")  # noqa: B009 - FastDecoder or StaticStepper
    active, n, widest = list(jobs), 0, 0
    while active or any(k >= n for k in joins):
        active += joins.pop(n, [])
        active = [job for job in active if not job.done]
        if active:
            widest = max(widest, len(active))
            step(active)
        n += 1
    return widest


def test_greedy_codes_equal_the_dynamic_steps_with_jobs_joining_and_leaving(
    loaded: LoadedModel, decoder: FastDecoder
) -> None:
    lengths = [40, 25, 33]

    def jobs() -> list[DecodeJob]:
        return [start(loaded, decoder, p, f) for p, f in zip(PROMPTS, lengths, strict=True)]

    dynamic = jobs()
    for job in dynamic:  # each alone
        run(decoder, [job], {})
    static = jobs()
    stepper = StaticStepper(decoder, slots=4, positions=64)
    # the first (43 steps) starts alone, the second (28) joins at step 5 and leaves at 33, the
    # third joins at step 38 and takes its slot
    widest = run(stepper, [static[0]], {5: [static[1]], 38: [static[2]]})
    assert widest == 2
    for alone, batched in zip(dynamic, static, strict=True):
        assert torch.equal(alone.tokens, batched.tokens)
        assert len(torch.unique(batched.tokens[0, 1:20])) > 1  # the codes really vary


@pytest.mark.parametrize("guidance_scale", [3.0, 1.0])
def test_fp32_scores_match_transformers(
    loaded: LoadedModel, decoder: FastDecoder, guidance_scale: float
) -> None:
    frames = 40
    steps = frames + decoder.max_delay
    prompt = PROMPTS[1]
    reference = reference_scores(loaded.model, loaded.processor, prompt, steps, guidance_scale)
    stepper = StaticStepper(decoder, slots=3, positions=steps + 1)
    ours, _ = engine_scores(decoder, loaded.processor, prompt, frames, guidance_scale, step=stepper)
    result = compare_scores(reference, ours)
    assert result.steps == steps and result.codes_equal, result
    assert result.max_abs_diff <= 1e-5 * max(1.0, result.scale), result


def test_teacher_forcing_follows_the_given_codes(loaded: LoadedModel, decoder: FastDecoder) -> None:
    frames = 30
    stepper = StaticStepper(decoder, slots=2, positions=64)
    free, codes = engine_scores(decoder, loaded.processor, PROMPTS[0], frames, 3.0, step=stepper)
    teacher = torch.randint(0, decoder.vocab_size, codes.shape)
    _, forced = engine_scores(
        decoder, loaded.processor, PROMPTS[0], frames, 3.0, teacher=teacher, step=stepper
    )
    kept = start(loaded, decoder, PROMPTS[0], frames).keep
    assert torch.equal(forced[kept], teacher[kept])
    assert not torch.equal(forced, codes) and free.shape[0] == frames + decoder.max_delay


def test_a_prompt_longer_than_the_buffer_grows_it(
    loaded: LoadedModel, decoder: FastDecoder
) -> None:
    long_prompt = " ".join(["a slow ambient drone with field recordings of rain"] * 12)
    job = start(loaded, decoder, long_prompt, 20)
    alone = start(loaded, decoder, long_prompt, 20)
    stepper = StaticStepper(decoder, slots=2, positions=32)
    assert job.cross.shape[4] > stepper.slots.prompt_capacity
    short = start(loaded, decoder, PROMPTS[2], 20)
    run(stepper, [short], {3: [job]})
    run(decoder, [alone], {})
    assert stepper.slots.prompt_capacity >= job.cross.shape[4]
    assert torch.equal(job.tokens, alone.tokens)


def test_it_refuses_more_jobs_than_slots_and_jobs_longer_than_its_window(
    loaded: LoadedModel, decoder: FastDecoder
) -> None:
    stepper = StaticStepper(decoder, slots=2, positions=24)
    with pytest.raises(ValueError, match="3 jobs for 2 slots"):
        stepper.step([start(loaded, decoder, "x", 5) for _ in range(3)])
    with pytest.raises(ValueError, match="longer than the 23 positions"):
        stepper.step([start(loaded, decoder, "x", 30)])
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        StaticStepper(decoder, slots=2, positions=24, graphs=True)


REQUESTS = [
    GenerationParams("calm piano melody", 1.0, seed=1),
    GenerationParams("epic orchestral soundtrack", 2.0, seed=2, temperature=0.7, top_k=50),
    GenerationParams("lofi hip hop beat", 1.5, seed=3, guidance_scale=1.0),
    GenerationParams("jazz", 1.2, seed=4, top_k=0, top_p=0.9),
    GenerationParams("drums", 1.0, seed=5, greedy=True),
    GenerationParams("a long ambient piece", 40.0, seed=6),  # three windows, prefilled
]


def static_engine(model_dir: Path, max_batch: int, window: float) -> MusicGenEngine:
    engine = MusicGenEngine(
        str(model_dir), "cpu", max_batch=max_batch, batch_window=window, step="static"
    )
    engine.setup()
    return engine


def test_sampled_requests_get_the_same_codes_alone_and_batched(tiny_model_dir: Path) -> None:
    solo_engine = static_engine(tiny_model_dir, 1, 0.0)
    assert solo_engine.step_kind == "static"
    solo = [solo_engine.generate_codes(p) for p in REQUESTS]
    again = solo_engine.generate_codes(REQUESTS[1])
    other_seed = solo_engine.generate_codes(
        GenerationParams("epic orchestral soundtrack", 2.0, seed=3, temperature=0.7, top_k=50)
    )
    solo_engine.close()
    batched_engine = static_engine(tiny_model_dir, 8, 0.05)
    with ThreadPoolExecutor(len(REQUESTS)) as pool:
        batched = list(pool.map(batched_engine.generate_codes, REQUESTS))
    sizes = batched_engine.scheduler.batch_sizes
    batched_engine.close()
    assert max(sizes) >= 4, sizes  # the requests really shared steps
    for params, alone, together in zip(REQUESTS, solo, batched, strict=True):
        assert alone.shape == (4, round(params.duration * 50))
        assert torch.equal(alone, together), params
    assert torch.equal(again, solo[1])  # same seed, same codes
    assert not torch.equal(other_seed, solo[1])


def test_continuation_through_the_static_step(tiny_model_dir: Path) -> None:
    engine = static_engine(tiny_model_dir, 2, 0.0)
    intro = np.random.default_rng(0).uniform(-0.3, 0.3, (32000, 1)).astype(np.float32)
    params = GenerationParams("calm piano melody", 3.0, seed=9)
    first = engine.generate(params, prompt_audio=intro)
    second = engine.generate(params, prompt_audio=intro)
    engine.close()
    assert first.samples.shape == (3 * 32000, 1)
    assert np.array_equal(first.samples, second.samples)
    assert np.isfinite(first.samples).all() and first.samples[32000:].std() > 0


def test_step_settings_that_cannot_run_are_refused(tiny_model_dir: Path) -> None:
    graph = MusicGenEngine(str(tiny_model_dir), "cpu", step="cuda-graph")
    with pytest.raises(ConfigError, match="cuda-graph needs a CUDA device"):
        graph.setup()
    int8 = MusicGenEngine(str(tiny_model_dir), "cpu", precision="int8", step="static")
    with pytest.raises(ConfigError, match="fp32, fp16 or bf16, not int8"):
        int8.setup()
    default = MusicGenEngine(str(tiny_model_dir), "cpu")
    default.setup()
    assert default.step_kind == "eager"
    default.close()


def test_a_job_that_cannot_be_seated_fails_alone(loaded: LoadedModel, decoder: FastDecoder) -> None:
    from tunesmith.engine.scheduler import BatchScheduler
    from tunesmith.errors import GenerationFailed

    stepper = StaticStepper(decoder, slots=4, positions=40)
    alone = start(loaded, decoder, PROMPTS[0], 30)
    run(decoder, [alone], {})
    good, too_long = start(loaded, decoder, PROMPTS[0], 30), start(loaded, decoder, "x", 60)
    scheduler = BatchScheduler(stepper, max_batch=4, window=0.5)
    try:
        tickets = [scheduler.submit(too_long), scheduler.submit(good)]
        with pytest.raises(GenerationFailed, match="longer than the 39 positions"):
            tickets[0].wait(60)
        assert torch.equal(tickets[1].wait(60).tokens, alone.tokens)  # type: ignore[attr-defined]
    finally:
        scheduler.close()
