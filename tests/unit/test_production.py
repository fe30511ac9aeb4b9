"""Producers' controls on synthetic music whose tempo, downbeats and key are known."""

from __future__ import annotations

import numpy as np
import pytest

from tunesmith.errors import InvalidRequest
from tunesmith.production import Production
from tunesmith.production.key import Key, find_key, parse_key, shift_between
from tunesmith.production.produce import produce
from tunesmith.production.rubberband import require
from tunesmith.production.tempo import find_beats

RATE = 32000
E_MINOR = (4, 7, 11)  # E G B


def song(bpm: float, seconds: float, chord: tuple[int, ...] = E_MINOR) -> np.ndarray:
    """``(frames, 2)``: a kick on each bar's first beat, a softer tick on the others, and a
    sustained chord (pitch classes, around E4) whose notes give the key."""
    t = np.arange(round(seconds * RATE)) / RATE
    audio = np.zeros_like(t)
    for pc in chord:
        for octave in (0, 1):
            freq = 440 * 2 ** ((pc - 9) / 12 + octave - 1)
            audio += 0.04 * np.sin(2 * np.pi * freq * t)
    beat = 60 / bpm
    hit = np.arange(int(0.08 * RATE))
    kick = np.sin(2 * np.pi * 60 * hit / RATE) * np.exp(-hit / 600)
    tick = np.sin(2 * np.pi * 3000 * hit / RATE) * np.exp(-hit / 150)
    for n, when in enumerate(np.arange(0.37, seconds - 0.1, beat)):
        start = round(when * RATE)
        end = min(start + hit.size, t.size)
        audio[start:end] += (0.9 * kick if n % 4 == 0 else 0.3 * tick)[: end - start]
    return np.stack([audio, audio], axis=1).astype(np.float32)


def test_the_track_is_exactly_the_bars_at_exactly_the_tempo() -> None:
    plan = Production(bpm=124, bars=8)
    made = produce(song(118, plan.generation_seconds(0)), RATE, plan, duration=0)
    assert made.samples.shape[0] == round(8 * 4 * 60 / 124 * RATE)
    assert made.analysis["tempo_found"] == pytest.approx(118, abs=0.5)
    assert made.analysis["stretch"] == pytest.approx(118 / 124, abs=0.005)
    assert made.warnings == []
    assert find_beats(made.samples, RATE, 124).bpm == pytest.approx(124, abs=0.3)


def test_it_starts_on_a_downbeat() -> None:
    plan = Production(bpm=120, bars=4)
    made = produce(song(120, plan.generation_seconds(0)), RATE, plan, duration=0)
    # the kick (60 Hz, loud) opens the file: its first 50 ms carry far more energy than a tick
    head = float(np.abs(made.samples[: RATE // 20]).max())
    beat = round(0.5 * RATE)
    ticks = [float(np.abs(made.samples[k * beat : k * beat + RATE // 20]).max()) for k in (1, 2)]
    assert head > 1.5 * max(ticks)
    bar = round(2.0 * RATE)  # and so does the next bar
    assert float(np.abs(made.samples[bar : bar + RATE // 20]).max()) > 1.5 * max(ticks)


def test_a_tracker_reading_half_the_tempo_is_taken_at_the_nearest() -> None:
    beats = find_beats(song(124, 20.0), RATE, 248)
    assert beats.bpm == pytest.approx(248, abs=1.0)
    assert np.median(np.diff(beats.times)) == pytest.approx(60 / 248, abs=0.01)


def test_a_big_stretch_still_lands_with_a_warning() -> None:
    plan = Production(bpm=124, bars=4)
    made = produce(song(100, plan.generation_seconds(0) + 2), RATE, plan, duration=0)
    assert made.samples.shape[0] == round(4 * 4 * 60 / 124 * RATE)
    assert made.analysis["stretch"] == pytest.approx(100 / 124, abs=0.01)
    assert any("audible" in warning for warning in made.warnings)


def test_a_model_far_slower_than_asked_still_fills_the_bars_saying_so() -> None:
    plan = Production(bpm=124, bars=4)
    # 88 BPM read nearest 124 is 88 itself: 10 s stretched to 71 % are 7.1 s, short of the
    # four bars' 7.74 s, so whole bars from the first downbeat repeat
    made = produce(song(88, 10.0), RATE, plan, duration=0)
    assert made.samples.shape[0] == round(4 * 4 * 60 / 124 * RATE)
    assert made.analysis["repeated_bars"] >= 1
    assert any("repeat" in warning for warning in made.warnings)
    assert find_beats(made.samples, RATE, 124).bpm == pytest.approx(124, abs=0.5)


def test_a_loop_plays_around_without_a_click_or_a_jump() -> None:
    plan = Production(bpm=120, bars=4, loop=True)
    audio = song(120, plan.generation_seconds(0), chord=())  # drums alone: bars alike
    made = produce(audio, RATE, plan, duration=0).samples
    assert made.shape[0] == round(4 * 4 * 0.5 * RATE)
    around = np.concatenate([made[-RATE // 10 :], made[: RATE // 10]])[:, 0]
    steps = np.abs(np.diff(around))
    typical = np.abs(np.diff(made[:, 0]))
    assert steps[RATE // 10 - 1] <= np.percentile(typical, 99.9)  # the seam is no click
    # nor a jump in level: around the seam as loud as around a bar line inside the loop
    bar = made.shape[0] // 4
    inside = made[bar - RATE // 10 : bar + RATE // 10, 0]
    level = [float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) for x in (around, inside)]
    assert 20 * np.log10(level[0] / level[1]) == pytest.approx(0, abs=1.0)


def test_bpm_without_bars_ends_on_a_bar_line() -> None:
    plan = Production(bpm=120, fade_out=1.0)
    made = produce(song(120, plan.generation_seconds(9.0)), RATE, plan, duration=9.0)
    assert made.samples.shape[0] == round(4 * 2.0 * RATE)  # 9 s is nearest 4 bars of 2 s
    assert float(np.abs(made.samples[-32:]).max()) < 1e-3  # faded out to silence


def test_the_key_is_found_and_shifted_the_shortest_way() -> None:
    audio = song(120, 8.0)
    assert find_key(audio, RATE)[0] == Key(4, minor=True)
    made = produce(audio, RATE, Production(key="A minor"), duration=8.0)
    assert made.analysis["key_found"] == "E minor"
    assert made.analysis["key_shift"] == 5
    assert made.samples.shape[0] == 8 * RATE
    assert find_key(made.samples, RATE)[0] == parse_key("A minor")


def test_another_mode_lands_on_the_relative_key_with_a_warning() -> None:
    made = produce(song(120, 8.0), RATE, Production(key="C major"), duration=8.0)
    assert made.analysis["key"] == "A minor"
    assert made.analysis["key_shift"] == 5
    assert "relative" in made.warnings[0]


@pytest.mark.parametrize(
    ("found", "wanted", "shift"),
    [("C major", "D major", 2), ("C major", "A# major", -2), ("C major", "F# major", -6),
     ("A minor", "E minor", -5), ("Bb minor", "C# major", 0)],
)  # fmt: skip
def test_the_shift_is_the_smallest_interval(found: str, wanted: str, shift: int) -> None:
    assert shift_between(parse_key(found), parse_key(wanted))[0] == shift


@pytest.mark.parametrize("text", ["H minor", "A", "A dorian", "", "C## major"])
def test_a_key_that_is_not_one_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"key|mode"):
        parse_key(text)


def test_the_engine_makes_enough_for_the_bars() -> None:
    plan = Production(bpm=90, bars=16, loop=True)
    bars_seconds = 16 * 4 * 60 / 90
    assert plan.generation_seconds(0) >= bars_seconds / 0.75
    assert plan.track_seconds(0) == pytest.approx(bars_seconds)
    assert Production().generation_seconds(12.5) == 12.5


def test_without_rubberband_a_request_is_refused_naming_the_field(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(InvalidRequest) as refused:
        require("bpm")
    assert refused.value.fields[0].field == "bpm"
    assert "rubberband-cli" in refused.value.fields[0].message


def test_a_loop_file_carries_its_loop_points() -> None:
    import io

    import soundfile

    from tunesmith.engine.audio.files import encode_audio
    from tunesmith.engine.audio.loops import loop_points, with_loop_points

    wav = encode_audio(song(120, 2.0), RATE, "wav")
    looped = with_loop_points(wav, 0, 2 * RATE - 1, RATE)
    assert loop_points(wav) == []
    assert loop_points(looped) == [(0, 2 * RATE - 1)]
    samples, _ = soundfile.read(io.BytesIO(looped))  # still a plain WAV to any reader
    np.testing.assert_array_equal(samples, soundfile.read(io.BytesIO(wav))[0])
