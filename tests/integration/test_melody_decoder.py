"""musicgen-melody in tunesmith's fast decoder (the chroma prefix instead of cross-attention),
on a tiny random checkpoint: against transformers' `generate` at fp32, int8 and int4 drift,
batching, streaming, long tracks over a melody and continuations."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import torch

from tunesmith.benchmark.reference import compare_scores, engine_scores, reference_scores
from tunesmith.engine import GenerationParams, MusicGenEngine
from tunesmith.engine.loader import LoadedModel, load_model
from tunesmith.engine.melody.chroma import chroma_features
from tunesmith.engine.melody.prefix import MelodyConditioner
from tunesmith.engine.musicgen.model import Conditioning, FastDecoder
from tunesmith.engine.musicgen.model.projections import Precision
from tunesmith.errors import ConfigError

PROMPT = "calm piano melody for a rainy evening"
RATE = 32000


def tune(seconds: float, freqs: tuple[float, ...] = (440.0, 523.25, 329.63)) -> npt.NDArray:
    """A melody of `freqs` in turn, equally long notes: ``(frames, 1)`` float32 at 32 kHz."""
    note = np.arange(round(seconds * RATE / len(freqs))) / RATE
    line = np.concatenate([0.5 * np.sin(2 * np.pi * f * note) for f in freqs])
    return line[:, None].astype(np.float32)


@pytest.fixture(scope="module")
def loaded(tiny_melody_dir: Path) -> LoadedModel:
    return load_model(str(tiny_melody_dir), device="cpu")


def conditioning(
    decoder: FastDecoder, loaded: LoadedModel, melody: npt.NDArray | None, prompt: str = PROMPT
) -> Conditioning:
    inputs = loaded.processor(text=[prompt], padding=True, return_tensors="pt")
    track = MelodyConditioner(decoder, loaded).track(
        inputs["input_ids"], inputs["attention_mask"], melody, RATE, False
    )
    return track(0)


def features(loaded: LoadedModel, melody: npt.NDArray | None) -> torch.Tensor | None:
    if melody is None:
        return None
    return chroma_features(melody, RATE, loaded.processor.feature_extractor)


@pytest.mark.parametrize("guidance", [3.0, 1.0])
@pytest.mark.parametrize("with_melody", [True, False], ids=["melody", "no-melody"])
def test_fp32_greedy_codes_and_logits_match_transformers(
    loaded: LoadedModel, guidance: float, with_melody: bool
) -> None:
    frames = 50
    melody = tune(2.0) if with_melody else None
    steps = frames + loaded.num_codebooks - 1
    chroma = features(loaded, melody)
    reference = reference_scores(loaded.model, loaded.processor, PROMPT, steps, guidance, chroma)
    decoder = FastDecoder(loaded.model, "fp32", loaded.device)
    assert not decoder.cross_attention
    cond = conditioning(decoder, loaded, melody)
    ours, tokens = engine_scores(decoder, None, PROMPT, frames, guidance, conditioning=cond)
    result = compare_scores(reference, ours)
    assert result.steps == steps and result.codes_equal, result
    assert result.max_abs_diff <= 1e-5 * max(1.0, result.scale), result  # float rounding
    assert len(torch.unique(tokens[0, 1 : frames + 1])) > 1  # the codes really vary


def test_a_continuation_follows_the_prefix_as_in_transformers(loaded: LoadedModel) -> None:
    """Known codes after the chroma prefix: transformers' `generate` from ``decoder_input_ids``
    gives the codes the prefilled job steps to (the prefill crossing the prefix's end)."""
    melody, frames = tune(1.0), 40
    known = torch.randint(0, 64, (4, 10), generator=torch.Generator().manual_seed(1))
    chroma = features(loaded, melody)
    steps = frames - 10 + loaded.num_codebooks - 1
    reference = reference_scores(
        loaded.model, loaded.processor, PROMPT, steps, 3.0, chroma, known.clone()
    )
    decoder = FastDecoder(loaded.model, "fp32", loaded.device)
    cond = conditioning(decoder, loaded, melody)
    ours, tokens = engine_scores(decoder, None, PROMPT, frames, 3.0, conditioning=cond, codes=known)
    result = compare_scores(reference, ours)
    assert result.steps == steps and result.codes_equal, result
    # codebook k's frame f at position 1 + f + k (the delay pattern): the prompt kept
    assert torch.equal(torch.stack([tokens[k, 1 + k : 11 + k] for k in range(4)]), known)


@pytest.mark.parametrize(("precision", "moved_at_most"), [("int8", 0.25), ("int4", 0.5)])
def test_quantized_drift_stays_bounded_on_teacher_forced_steps(
    loaded: LoadedModel, precision: Precision, moved_at_most: float
) -> None:
    """fp32's codes forced through the quantized decoder: its scores move a fraction of what
    another melody moves them, and agree on the top code more often than that melody's."""
    melody = tune(2.0)
    exact = FastDecoder(loaded.model, "fp32", loaded.device)
    cond = conditioning(exact, loaded, melody)
    scores, tokens = engine_scores(exact, None, PROMPT, 40, 3.0, conditioning=cond)
    other_cond = conditioning(exact, loaded, tune(2.0, (261.63, 392.0)))
    other, _ = engine_scores(exact, None, PROMPT, 40, 3.0, tokens, conditioning=other_cond)
    quantized = FastDecoder(loaded.model, precision, loaded.device)
    assert quantized.weight_bytes < exact.weight_bytes / 3
    cond = conditioning(quantized, loaded, melody)
    forced, _ = engine_scores(quantized, None, PROMPT, 40, 3.0, tokens, conditioning=cond)
    assert not torch.equal(forced, scores)  # it really is another computation
    moved = float((forced - scores).norm() / (other - scores).norm())
    assert moved < moved_at_most, moved
    agree = compare_scores(scores, forced).top1_agreement
    assert agree > compare_scores(scores, other).top1_agreement, agree


def melody_engine(path: Path, **settings: object) -> MusicGenEngine:
    engine = MusicGenEngine(str(path), "cpu", **settings)  # type: ignore[arg-type]
    engine.setup()
    return engine


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_batched_melody_and_text_requests_get_the_codes_they_get_alone(
    tiny_melody_dir: Path, precision: str
) -> None:
    requests = [
        (GenerationParams(PROMPT, 1.0, seed=1), tune(2.0)),
        (GenerationParams("jazz trio", 1.4, seed=2, top_k=50), tune(1.0, (261.63, 392.0))),
        (GenerationParams("ambient drone", 1.2, seed=3), None),  # text only: the null chroma
        (GenerationParams("drums", 0.8, seed=4, guidance_scale=1.0), None),
    ]

    def run(engine: MusicGenEngine, request: tuple[GenerationParams, object]) -> torch.Tensor:
        params, melody = request
        return engine.generate_codes(params, melody=melody)  # type: ignore[arg-type]

    solo_engine = melody_engine(tiny_melody_dir, precision=precision, max_batch=1)
    solo = [run(solo_engine, r) for r in requests]
    solo_engine.close()
    batched_engine = melody_engine(tiny_melody_dir, precision=precision, batch_window=0.1)
    with ThreadPoolExecutor(len(requests)) as pool:
        batched = list(pool.map(lambda r: run(batched_engine, r), requests))
    sizes = batched_engine.batch_sizes
    batched_engine.close()
    assert max(sizes) > 1, sizes  # the requests really shared steps
    for (params, _), alone, together in zip(requests, solo, batched, strict=True):
        assert alone.shape == (4, round(params.duration * 50))
        assert torch.equal(alone, together), params


def test_the_engine_streams_reports_progress_and_reports_the_truth(
    tiny_melody_engine: MusicGenEngine,
) -> None:
    engine = tiny_melody_engine
    assert engine.follows_melody and engine.continues_audio
    assert engine.max_track_seconds is None and engine.precision == "fp32"
    assert engine.kernels is engine.decoder.kernels
    params = GenerationParams(PROMPT, 2.0, seed=5)
    steps: list[tuple[int, int]] = []
    chunks = list(engine.stream(params, lambda d, t: steps.append((d, t)), melody=tune(2.0)))
    assert len(chunks) > 1  # audio while it is made, not all at the end
    total = engine.steps_for(2.0)
    assert [d for d, _ in steps] == list(range(1, total + 1)) and {t for _, t in steps} == {total}
    track = engine.generate(params, melody=tune(2.0))
    assert np.array_equal(np.concatenate(chunks), track.samples)
    assert not np.array_equal(engine.generate(params).samples, track.samples)


def test_each_window_of_a_long_track_follows_its_own_stretch_of_the_melody(
    tiny_melody_dir: Path,
) -> None:
    """A 40 s track with a 10 s stride: windows at 0 s (melody 0-30 s) and 10 s (10-40 s).
    Two melodies alike for 30 s give the same first window and a different second."""
    engine = melody_engine(tiny_melody_dir, extend_stride=10.0)
    assert engine.steps_for(40.0) == sum(w.new + 3 for w in engine.windows_for(40.0))
    params = GenerationParams(PROMPT, 40.0, seed=2, greedy=True)
    alike = tune(30.0)
    first = np.concatenate([alike, tune(10.0, (261.63, 392.0))])
    other = np.concatenate([alike, tune(10.0, (349.23, 196.0))])
    a = engine.generate_codes(params, melody=first)
    b = engine.generate_codes(params, melody=other)
    assert a.shape == b.shape == (4, 2000)
    assert torch.equal(a[:, :1500], b[:, :1500])
    assert not torch.equal(a[:, 1500:], b[:, 1500:])
    # a shorter melody is cycled, as audiocraft does: the window at 10 s hears 10-30 s of a
    # 5 s tune repeated
    short = tune(5.0)
    cycled = engine.generate_codes(params, melody=short)
    repeated = engine.generate_codes(params, melody=np.concatenate([short] * 8))
    engine.close()
    assert torch.equal(cycled, repeated)


def test_melody_with_continuation_keeps_the_prompt_and_follows_the_melody(
    tiny_melody_engine: MusicGenEngine,
) -> None:
    engine = tiny_melody_engine
    prompt_audio = 0.2 * np.random.default_rng(0).standard_normal((RATE, 1)).astype(np.float32)
    known = engine.encode_prompt_audio(prompt_audio)
    params = GenerationParams(PROMPT, 3.0, seed=8)
    with_melody = engine.generate_codes(params, prompt=known, melody=tune(3.0))
    plain = engine.generate_codes(params, prompt=known)
    assert with_melody.shape == plain.shape == (4, 150)
    assert torch.equal(with_melody[:, :50], known) and torch.equal(plain[:, :50], known)
    assert not torch.equal(with_melody, plain)
    track = engine.generate(params, prompt_audio=prompt_audio, melody=tune(3.0))
    assert track.samples.shape == (3 * RATE, 1)


@pytest.mark.parametrize("step", ["static", "cuda-graph"])
def test_a_static_step_is_refused_with_its_reason(tiny_melody_dir: Path, step: str) -> None:
    engine = MusicGenEngine(str(tiny_melody_dir), "cpu", step=step)
    with pytest.raises(ConfigError, match="melody"):
        engine.setup()
