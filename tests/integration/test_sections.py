"""Sectioned tracks (`tunesmith.engine.sections`) on tiny random MusicGen checkpoints: each part
conditioned on its own prompt, a new window at each boundary continuing the codes before it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import torch

from tunesmith.engine import GenerationParams, MusicGenEngine
from tunesmith.engine.musicgen.windows import Window
from tunesmith.engine.params import SectionParams
from tunesmith.errors import InvalidRequest

INTRO, DROP = "calm piano intro", "heavy drum and bass drop with distorted synths"
RATE = 32000
# 2 s then 3 s: the boundary at frame 100 of 250
SECTIONS = (SectionParams(INTRO, 2.0), SectionParams(DROP, 3.0))


def sectioned(
    seed: int, greedy: bool = False, sections: tuple[SectionParams, ...] = SECTIONS
) -> GenerationParams:
    return GenerationParams("unused", 5.0, seed, greedy=greedy, sections=sections)


def noise(seconds: float) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(0)
    return (0.3 * rng.standard_normal((round(seconds * RATE), 1))).astype(np.float32)


def test_a_sectioned_track_has_its_length_and_its_seed_reproduces_it(
    tiny_engine: MusicGenEngine,
) -> None:
    assert tiny_engine.windows_for(5.0, 0, SECTIONS) == [Window(0, 100), Window(100, 150)]
    track = tiny_engine.generate(sectioned(7))
    assert track.samples.shape == (5 * RATE, 1) and track.duration == 5.0
    assert np.array_equal(tiny_engine.generate(sectioned(7)).samples, track.samples)
    assert not np.array_equal(tiny_engine.generate(sectioned(8)).samples, track.samples)


def test_the_first_section_is_a_plain_track_of_its_prompt(tiny_engine: MusicGenEngine) -> None:
    codes = tiny_engine.generate_codes(sectioned(7))
    plain = tiny_engine.generate_codes(GenerationParams(INTRO, 2.0, 7))
    assert codes.shape == (4, 250) and torch.equal(codes[:, :100], plain)
    # the audio too, up to the last 0.1 s, which EnCodec decodes with what follows in view
    ours = tiny_engine.decode_audio(codes, 5.0).samples[: 2 * RATE - RATE // 10]
    alone = tiny_engine.generate(GenerationParams(INTRO, 2.0, 7)).samples
    assert np.allclose(ours, alone[: len(ours)], atol=1e-4)
    # the second section's prompt makes its part: the same track with the first's differs
    same = (SECTIONS[0], SectionParams(INTRO, 3.0))
    again = tiny_engine.generate_codes(sectioned(7, sections=same))
    assert torch.equal(again[:, :100], plain) and not torch.equal(again[:, 100:], codes[:, 100:])


def test_the_second_section_continues_the_first_on_its_own_prompt(
    tiny_engine: MusicGenEngine,
) -> None:
    """Greedy, so the generator's state does not matter: the part after the boundary is what a
    continuation of the first part's codes on the second prompt makes."""
    codes = tiny_engine.generate_codes(sectioned(1, greedy=True))
    continued = tiny_engine.generate_codes(
        GenerationParams(DROP, 5.0, 1, greedy=True), prompt=codes[:, :100]
    )
    assert torch.equal(continued, codes)
    on_intro = tiny_engine.generate_codes(
        GenerationParams(INTRO, 5.0, 1, greedy=True), prompt=codes[:, :100]
    )
    assert not torch.equal(on_intro[:, 100:], codes[:, 100:])


def test_one_section_is_the_plain_track_of_its_prompt(tiny_engine: MusicGenEngine) -> None:
    one = GenerationParams("unused", 3.0, 4, sections=(SectionParams(DROP, 3.0),))
    assert tiny_engine.steps_for(3.0, 0, one.sections) == tiny_engine.steps_for(3.0)
    assert torch.equal(
        tiny_engine.generate_codes(one), tiny_engine.generate_codes(GenerationParams(DROP, 3.0, 4))
    )


def test_progress_counts_every_sections_windows(tiny_engine: MusicGenEngine) -> None:
    seen: list[tuple[int, int]] = []
    tiny_engine.generate(sectioned(3), lambda d, t: seen.append((d, t)))
    total = tiny_engine.steps_for(5.0, 0, SECTIONS)
    assert total == 250 + 2 * tiny_engine.decoder.max_delay  # two windows
    assert total > tiny_engine.steps_for(5.0)  # one window without the boundary
    assert {t for _, t in seen} == {total}
    assert [d for d, _ in seen] == list(range(1, total + 1))


def test_a_continuation_with_sections_keeps_its_audio(tiny_engine: MusicGenEngine) -> None:
    """Sections cover the whole track, the given audio (1 s) included: the first section's
    last second and the second section are made."""
    prompt = tiny_engine.encode_prompt_audio(noise(1.0))
    assert tiny_engine.windows_for(5.0, 50, SECTIONS) == [Window(50, 50), Window(100, 150)]
    codes = tiny_engine.generate_codes(sectioned(2), prompt=prompt)
    assert codes.shape == (4, 250) and torch.equal(codes[:, :50], prompt)
    track = tiny_engine.generate(sectioned(2), prompt_audio=noise(1.0))
    assert track.samples.shape == (5 * RATE, 1)


def test_sections_that_do_not_fill_the_track_are_refused(tiny_engine: MusicGenEngine) -> None:
    short = GenerationParams("unused", 6.0, 1, sections=SECTIONS)
    with pytest.raises(InvalidRequest, match="sections"):
        tiny_engine.steps_for(6.0, 0, short.sections)
    with pytest.raises(InvalidRequest, match="sections"):
        tiny_engine.generate(short)


def test_a_melody_model_plays_sections_over_the_melody(
    tiny_melody_engine: MusicGenEngine,
) -> None:
    engine = tiny_melody_engine
    melody = noise(5.0)
    seen: list[int] = []
    track = engine.generate(sectioned(5), lambda d, t: seen.append(t), melody=melody)
    assert track.samples.shape == (5 * RATE, 1)
    assert set(seen) == {engine.steps_for(5.0, 0, SECTIONS)}
    assert np.array_equal(engine.generate(sectioned(5), melody=melody).samples, track.samples)
    codes = engine.generate_codes(sectioned(5), melody=melody)
    plain = engine.generate_codes(sectioned(5))
    assert not torch.equal(codes, plain)  # it follows the melody
    # with a continuation too
    prompt = engine.encode_prompt_audio(noise(1.0))
    continued = engine.generate_codes(sectioned(5), prompt=prompt, melody=melody)
    assert continued.shape == (4, 250) and torch.equal(continued[:, :50], prompt)


def test_sections_through_the_static_step(
    tiny_model_dir: Path, tiny_engine: MusicGenEngine
) -> None:
    """The static batch (a CUDA graph's step, run eagerly here) seats each window as a job: the
    same greedy codes as the dynamic step."""
    engine = MusicGenEngine(str(tiny_model_dir), "cpu", max_batch=2, step="static")
    engine.setup()
    try:
        assert engine.step_kind == "static"
        codes = engine.generate_codes(sectioned(1, greedy=True))
    finally:
        engine.close()
    assert torch.equal(codes, tiny_engine.generate_codes(sectioned(1, greedy=True)))
