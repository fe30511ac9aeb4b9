"""The sliding-window plan of long tracks, continuations and sectioned tracks."""

import pytest

from tunesmith.engine.musicgen.windows import Window, plan_windows, window_steps
from tunesmith.engine.params import SectionParams
from tunesmith.engine.sections import section_starts
from tunesmith.errors import InvalidRequest


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


def test_a_section_boundary_starts_a_new_window() -> None:
    # 4 s then 6 s at 50 frames/s: the second section's first window continues the first's
    assert plan_windows(500, 0, 1500, 900, [200]) == [Window(0, 200), Window(200, 300)]
    # a long first section slides as usual, then stops at the boundary
    windows = plan_windows(2000, 0, 1500, 900, [1700])
    assert windows == [Window(0, 1500), Window(600, 200), Window(600, 300)]
    assert plan_windows(500, 0, 1500, 900, []) == plan_windows(500, 0, 1500, 900)


def test_no_window_spans_a_boundary_and_every_frame_is_made_once() -> None:
    boundaries = [150, 1400, 1600, 2900]
    windows = plan_windows(3750, 0, 1500, 900, boundaries)
    ends, known = [], 0
    for w in windows:
        assert w.context + w.new <= 1500 and w.context == min(known, 600)
        assert not any(known < b < known + w.new for b in boundaries)
        known += w.new
        ends.append(known)
    assert known == 3750 and set(boundaries) <= set(ends)
    assert window_steps(windows, 3) == 3750 + 3 * len(windows)


def test_boundaries_within_a_continuations_prompt_are_already_made() -> None:
    assert plan_windows(500, 250, 1500, 900, [100, 300]) == [Window(250, 50), Window(300, 200)]


@pytest.mark.parametrize("boundary", [0, 500, 600, -1])
def test_a_boundary_outside_the_track_is_refused(boundary: int) -> None:
    with pytest.raises(ValueError, match="boundaries"):
        plan_windows(500, 0, 1500, 900, [boundary])


@pytest.mark.parametrize(
    ("total", "prompt", "stride"), [(100, 100, 900), (100, 0, 0), (5, 0, 1500)]
)
def test_impossible_plans_are_refused(total: int, prompt: int, stride: int) -> None:
    with pytest.raises(ValueError):
        plan_windows(total, prompt, 1500, stride)


def test_sections_start_where_their_seconds_add_up_to() -> None:
    sections = [SectionParams("a", 0.1), SectionParams("b", 0.2), SectionParams("c", 0.7)]
    assert section_starts(sections, 1.0, 50) == [0, 5, 15]
    assert section_starts([], 1.0, 50) == section_starts(sections[:1], 0.1, 50) == [0]
    # rounding: the last section takes what is left
    assert section_starts([SectionParams("a", 2.01), SectionParams("b", 2.0)], 4.0, 50) == [0, 101]


@pytest.mark.parametrize(
    "seconds", [(2.0, 3.0), (2.0, 0.0), (4.0, -1.0, 1.0), (4.99, 0.005, 0.005)]
)
def test_sections_that_do_not_fill_the_track_are_refused(seconds: tuple[float, ...]) -> None:
    sections = [SectionParams(str(i), s) for i, s in enumerate(seconds)]
    with pytest.raises(InvalidRequest, match="sections"):
        section_starts(sections, 4.0 if len(seconds) == 2 else 5.0, 50)
