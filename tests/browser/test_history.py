"""The studio's history in Chromium, against a real server on the tiny random MusicGen: what
each entry shows (every parameter, its waveform, its length, its lineage) and what it does
(vary, re-run, delete)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect
from studio_page import wait_ready

from live_server import Api, stored_files, track_files

OpenPage = Callable[..., Page]
EXACT_SEED = 9007199254740993  # 2**53 + 1: a JS number would round it
SPEED = re.compile(r"made (\d+(\.\d)?x (faster|slower)|about as fast) than it plays")
INKED = """c => {
  const data = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let inked = 0;
  for (let i = 3; i < data.length; i += 4) if (data[i] > 0) inked++;
  return inked;
}"""


def entry(page: Page, track: str) -> Locator:
    return page.locator(f'#history-list .track[data-id="{track}"]')


def make(studio: Api, **fields: Any) -> dict[str, Any]:
    made = studio.generate({"prompt": "a history entry", "duration": 1, **fields})
    assert made.status_code == 200, made.text
    body: dict[str, Any] = made.json()
    return body


def record(studio: Api, track: str) -> dict[str, Any]:
    body: dict[str, Any] = studio.client.get(f"/files/music-output/{track}.json").json()
    return body


def audio_sha(studio: Api, track: str, fmt: str = "wav") -> str:
    return hashlib.sha256(
        (studio.root / "music-output" / f"{track}.{fmt}").read_bytes()
    ).hexdigest()


def newest_job(page: Page) -> str:
    expect(page.locator("#job")).to_have_attribute("data-status", "succeeded", timeout=60_000)
    return str(page.evaluate("window.tunesmithStudio.state.job.id"))


def test_an_entry_shows_every_parameter_and_its_length_before_it_is_played(
    studio: Api, open_page: OpenPage
) -> None:
    asked = {
        "prompt": "every knob turned",
        "duration": 2,
        "seed": EXACT_SEED,
        "temperature": 1.3,
        "top_k": 50,
        "top_p": 0.9,
        "guidance_scale": 2.5,
        "format": "flac",
        "normalization": "loudness",
        "loudness_lufs": -16,
    }
    made = make(studio, **asked)
    page = open_page(studio.base_url)
    wait_ready(page)
    item = entry(page, made["id"])
    expect(item.locator(".track-prompt")).to_have_text("every knob turned")
    shown = {
        "duration": "2 s",
        "seed": str(EXACT_SEED),
        "temperature": "1.3",
        "top_k": "50",
        "top_p": "0.9",
        "guidance_scale": "2.5",
        "format": "flac",
        "normalization": "loudness",
        "loudness_lufs": "-16 LUFS",
        "model": Path(record(studio, made["id"])["model"]).name,
    }
    for name, text in shown.items():
        expect(item.locator(f'[data-param="{name}"] dd')).to_have_text(text)
    model = record(studio, made["id"])["model"]
    expect(item.locator('[data-param="model"]')).to_have_attribute("title", model)
    expect(item.locator(".track-meta")).to_contain_text("flac")
    assert SPEED.search(item.locator(".track-meta").inner_text())

    audio = item.locator("audio")
    assert audio.get_attribute("preload") == "metadata"
    length = page.wait_for_function(
        "a => a.readyState >= 1 && Number.isFinite(a.duration) ? a.duration : null",
        arg=audio.element_handle(),
    ).json_value()
    assert length == pytest.approx(2.0, abs=0.05)
    assert audio.evaluate("a => a.paused && a.played.length === 0")
    assert "realtime" not in page.locator("body").inner_text()


def test_waveforms_are_drawn_as_entries_come_into_view(
    studio: Api, open_page: OpenPage, artifacts: Path
) -> None:
    made = [make(studio, prompt=f"wave {n}")["id"] for n in range(6)]
    page = open_page(studio.base_url, viewport={"width": 1280, "height": 800})
    wait_ready(page)
    newest, oldest = entry(page, made[-1]), entry(page, made[0])
    expect(newest.locator("canvas.track-wave")).to_have_attribute("data-state", "drawn")
    assert newest.locator("canvas.track-wave").evaluate(INKED) > 0
    box = oldest.locator("canvas.track-wave").bounding_box()
    assert box is not None and box["y"] > 800 + 200  # well below the fold
    page.wait_for_timeout(300)
    assert oldest.locator("canvas.track-wave").get_attribute("data-state") == "waiting"

    oldest.locator("canvas.track-wave").scroll_into_view_if_needed()
    expect(oldest.locator("canvas.track-wave")).to_have_attribute("data-state", "drawn")
    page.screenshot(path=str(artifacts / "studio-history.png"))
    assert oldest.locator("canvas.track-wave").evaluate(INKED) > 0


def test_a_continued_track_names_the_track_it_continued(studio: Api, open_page: OpenPage) -> None:
    source = make(studio, prompt="the first half")["id"]
    page = open_page(studio.base_url)
    wait_ready(page)
    entry(page, source).locator(".continue").click()
    expect(page.locator("#input_audio-info")).to_contain_text(f"{source}.wav")
    page.fill("#duration", "3")
    page.click("#generate")
    made = newest_job(page)
    assert record(studio, made)["request"]["source_track"] == source

    item = entry(page, made)
    link = item.locator(".track-lineage a")
    expect(item.locator(".track-lineage")).to_have_text("Continued from “the first half”")
    link.click()
    expect(entry(page, source)).to_have_class(re.compile(r"\bflash\b"))
    expect(entry(page, source).locator("button").first).to_be_focused()

    page.reload()  # the lineage comes from the stored record
    expect(entry(page, made).locator(".track-lineage")).to_have_text(
        "Continued from “the first half”"
    )


def test_rerun_makes_the_same_audio_and_vary_a_new_seed_at_once(
    studio: Api, open_page: OpenPage
) -> None:
    asked = {"prompt": "again and again", "seed": EXACT_SEED, "temperature": 0.8, "top_k": 40}
    first = make(studio, **asked)["id"]
    page = open_page(studio.base_url)
    wait_ready(page)
    page.fill("#prompt", "something else entirely")

    entry(page, first).locator(".rerun").click()
    rerun = newest_job(page)
    assert rerun != first
    assert record(studio, rerun)["request"] == record(studio, first)["request"]
    assert audio_sha(studio, rerun) == audio_sha(studio, first)

    entry(page, first).locator(".vary").click()
    expect(page.locator("#job")).not_to_have_attribute("data-status", "succeeded")
    varied = newest_job(page)
    again = record(studio, varied)["request"]
    assert varied not in (first, rerun) and again["seed"] != EXACT_SEED
    assert {**again, "seed": EXACT_SEED} == record(studio, first)["request"]
    assert audio_sha(studio, varied) != audio_sha(studio, first)


def test_delete_asks_first_then_removes_the_track(studio: Api, open_page: OpenPage) -> None:
    kept, gone = make(studio, prompt="keep me")["id"], make(studio, prompt="delete me")["id"]
    before = set(stored_files(studio.root))
    page = open_page(studio.base_url)
    wait_ready(page)
    dialog = page.locator("#delete-dialog")

    entry(page, gone).locator(".delete").click()
    expect(dialog).to_be_visible()
    expect(page.locator("#delete-what")).to_have_text("“delete me”")
    expect(page.locator("#delete-cancel")).to_be_focused()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    entry(page, gone).locator(".delete").click()
    page.click("#delete-cancel")
    expect(entry(page, gone)).to_be_visible()
    assert set(stored_files(studio.root)) == before

    entry(page, gone).locator(".delete").click()
    page.click("#delete-confirm")
    expect(entry(page, gone)).to_have_count(0)
    expect(page.locator("#history-status")).to_have_text("Track deleted.")
    assert set(stored_files(studio.root)) == before - set(track_files(studio.root, gone, "wav"))
    page.reload()
    expect(entry(page, kept)).to_be_visible()
    expect(entry(page, gone)).to_have_count(0)


def test_a_track_whose_audio_is_gone_says_so_and_delete_finishes_it(
    studio: Api, open_page: OpenPage
) -> None:
    track = make(studio, prompt="half deleted")["id"]
    (studio.root / "music-output" / f"{track}.wav").unlink()  # a delete stopped after the audio
    page = open_page(studio.base_url)
    wait_ready(page)
    item = entry(page, track)
    expect(item.locator(".track-note")).to_contain_text("delete it again")
    item.locator(".delete").click()
    page.click("#delete-confirm")
    expect(item).to_have_count(0)
    assert not list((studio.root / "music-output").glob(f"{track}.*"))
