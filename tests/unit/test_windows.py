"""The sliding-window plan of long tracks and continuations."""

import pytest

from tunesmith.engine.musicgen.windows import Window, plan_windows, window_steps


def test_one_window_when_the_track_fits() -> None:
    assert plan_windows(500, 0, 1500, 900) == [Window(0, 500)]
    assert plan_windows(1500, 0, 1500, 900) == [Window(0, 1500)]


def test_long_track_slides_by_the_stride_keeping_the_rest_as_context() -> None:
    # audiocraft's 30 s window, 18 s stride at 50 frames/s: a 75 s track
    windows = plan_windows(3750, 0, 1500, 900)
    assert windows == [Window(0, 1500), Window(600, 900), Window(600, 900), Window(600, 450)]
    assert sum(w.new for w in windows) == 3750  # every frame made once: none missing or twice
    assert all(w.context + w.new <= 1500 for w in windows)


def test_continuation_starts_from_the_prompt() -> None:
    # a 10 s prompt is all context; a 25 s one keeps its last 12 s
    assert plan_windows(1500, 500, 1500, 900) == [Window(500, 1000)]
    assert plan_windows(2000, 1250, 1500, 900) == [Window(600, 750)]


def test_steps_count_each_window_delay() -> None:
    assert window_steps(plan_windows(3750, 0, 1500, 900), 3) == 3750 + 4 * 3


@pytest.mark.parametrize(
    ("total", "prompt", "stride"), [(100, 100, 900), (100, 0, 0), (5, 0, 1500)]
)
def test_impossible_plans_are_refused(total: int, prompt: int, stride: int) -> None:
    with pytest.raises(ValueError):
        plan_windows(total, prompt, 1500, stride)
