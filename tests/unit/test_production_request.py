"""The producers' request fields: what they give the duration, and what they refuse."""

from __future__ import annotations

from typing import Any

import pytest

from tunesmith.errors import InvalidRequest
from tunesmith.schema import parse_generate_request


def parse(body: dict[str, Any], form: bool = False) -> Any:
    return parse_generate_request({"prompt": "techno", **body}, max_duration=300, form=form)


def refused(body: dict[str, Any], form: bool = False) -> list[str]:
    with pytest.raises(InvalidRequest) as error:
        parse(body, form)
    return [problem.field for problem in error.value.fields]


def test_bars_give_the_duration() -> None:
    request = parse({"bpm": 124, "bars": 8})
    assert request.duration == pytest.approx(8 * 4 * 60 / 124)
    three = parse({"bpm": 90, "bars": 4, "beats_per_bar": 3})
    assert three.duration == pytest.approx(4 * 3 * 60 / 90)
    assert three.production.bars == 4


def test_sections_give_the_duration_in_seconds_or_bars() -> None:
    sections = [{"prompt": "intro", "duration": 8}, {"prompt": "drop", "bars": 4}]
    request = parse({"bpm": 120, "sections": sections})
    assert request.duration == pytest.approx(8 + 4 * 4 * 0.5)
    assert [s.prompt for s in request.sections] == ["intro", "drop"]


def test_a_form_gives_the_same_numbers() -> None:
    assert parse({"bpm": "124", "bars": "8"}, form=True).duration == pytest.approx(15.4838709)


def test_a_key_is_stored_in_one_spelling() -> None:
    assert parse({"key": "bb min"}).key == "A# minor"
    assert parse({"bpm": 124}).production.prompt_for("techno") == "techno, 124 bpm"


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"bars": 8}, ["bars"]),
        ({"loop": True}, ["loop"]),
        ({"bpm": 124, "bars": 8, "duration": 10}, ["duration"]),
        ({"bpm": 30}, ["bpm"]),
        ({"bpm": 124, "bars": 0}, ["bars"]),
        ({"key": "H minor"}, ["key"]),
        ({"bpm": 120, "loop": True, "bars": 4, "fade_out": 1}, ["fade_out"]),
        ({"duration": 5, "fade_out": 6}, ["fade_out"]),
        ({"sections": [{"prompt": "a", "duration": 5}, {"prompt": "b"}]}, ["sections.1"]),
        ({"sections": [{"prompt": "a", "bars": 2}]}, ["sections"]),
        ({"sections": [{"prompt": "a", "duration": 5, "mood": "x"}]}, ["sections.0.mood"]),
        ({"bpm": 60, "bars": 200}, ["duration"]),  # 800 s: over this server's limit
    ],
)
def test_fields_that_do_not_agree_are_refused_by_name(
    body: dict[str, Any], fields: list[str]
) -> None:
    assert refused(body) == fields


def test_sections_come_in_json_only() -> None:
    assert refused({"sections": "[]"}, form=True) == ["sections"]
