"""The studio page at / in Chromium, against a real server on the tiny random MusicGen."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Page, expect
from studio_page import overflow, wait_ready

from live_server import Api, serve
from tunesmith.engine import MusicGenEngine

# The tiny model makes ~10 s of audio per second as a job on 2 CPUs, with the browser running:
# this long a track takes ~6 s, and the page starts playing it after ~1.5 s.
LONG = 60.0
EXACT_SEED = "9007199254740993"  # 2**53 + 1: a JS number would round it
SPEED = re.compile(r"made (\d+(\.\d)?x (faster|slower)|about as fast) than it plays")

OpenPage = Callable[..., Page]

PLAYING = """() => {
  const player = document.getElementById("player");
  if (player.paused || !(player.currentTime > 0)) return null;
  const { job, finished } = window.tunesmithStudio.state;
  return { status: job.status, finished, time: player.currentTime, src: player.src };
}"""


def job_id(page: Page) -> str:
    return str(page.evaluate("window.tunesmithStudio.state.job.id"))


def compose(page: Page, prompt: str, duration: float, seed: str | None = None) -> None:
    page.fill("#prompt", prompt)
    page.fill("#duration", f"{duration:g}")
    if seed is not None:
        page.locator("#advanced > summary").click()
        page.fill("#seed", seed)


def test_plays_the_stream_before_the_job_ends(studio: Api, open_page: OpenPage) -> None:
    page = open_page(studio.base_url)
    wait_ready(page)
    compose(page, "a long ambient drone", LONG)
    page.click("#generate")
    expect(page.locator("#cancel")).to_be_visible()
    playing: dict[str, Any] = page.wait_for_function(PLAYING, timeout=60_000).json_value()
    assert not playing["finished"] and playing["status"] == "running", playing
    assert playing["src"].endswith("/audio"), playing  # the stream, not the finished file
    expect(page.locator("#progress-text")).to_contain_text(SPEED)
    expect(page.locator("#job")).to_have_attribute("data-status", "succeeded", timeout=90_000)
    expect(page.locator("#status")).to_contain_text("Done")
    expect(page.locator("#generate-hint")).to_contain_text(SPEED)
    assert "realtime" not in page.locator("body").inner_text()
    track = job_id(page)
    download = page.locator("#download")
    expect(download).to_have_attribute("href", f"{studio.base_url}/files/music-output/{track}.wav")
    expect(page.locator("#waveform-wrap")).to_be_visible()
    expect(page.locator("#cancel")).to_be_hidden()
    assert (studio.root / "music-output" / f"{track}.wav").exists()


def test_history_after_reload_regenerates_with_the_exact_seed(
    studio: Api, open_page: OpenPage, artifacts: Path
) -> None:
    page = open_page(studio.base_url)
    wait_ready(page)
    compose(page, "a short marimba loop", 3, seed=EXACT_SEED)
    page.locator("#prompt").press("Enter")  # Enter in the prompt submits
    expect(page.locator("#job")).to_have_attribute("data-status", "succeeded")
    expect(page.locator("#waveform-wrap")).to_be_visible()
    track = job_id(page)
    page.screenshot(path=str(artifacts / "studio.png"), full_page=True)

    page.reload()
    item = page.locator(f'#history-list .track[data-id="{track}"]')
    expect(item).to_be_visible()
    expect(page.locator("#history-list .track").first).to_have_attribute("data-id", track)
    expect(item.locator(".track-prompt")).to_have_text("a short marimba loop")
    expect(item.locator(".track-seed")).to_have_text(EXACT_SEED)
    audio = item.locator("audio")
    audio.evaluate("a => a.play()")
    page.wait_for_function("a => !a.paused && a.currentTime > 0", arg=audio.element_handle())

    page.fill("#prompt", "something else")
    item.locator(".edit").click()
    expect(page.locator("#prompt")).to_have_value("a short marimba loop")
    expect(page.locator("#prompt")).to_be_focused()
    expect(page.locator("#seed")).to_have_value(EXACT_SEED)
    expect(page.locator("#duration")).to_have_value("3")


def test_cancel_stores_nothing(studio: Api, open_page: OpenPage) -> None:
    page = open_page(studio.base_url)
    wait_ready(page)
    compose(page, "a track to cancel", 300)
    page.click("#generate")
    expect(page.locator("#job")).to_have_attribute("data-status", "running")
    page.click("#cancel")
    expect(page.locator("#job")).to_have_attribute("data-status", "canceled")
    expect(page.locator("#status")).to_contain_text("Canceled")
    expect(page.locator("#generate")).to_be_enabled()
    expect(page.locator("#player")).to_be_hidden()
    track = job_id(page)
    assert studio.client.get(f"/jobs/{track}").json()["status"] == "canceled"
    assert not list((studio.root / "music-output").glob(f"{track}.*"))


def test_field_errors_show_next_to_the_field(studio: Api, open_page: OpenPage) -> None:
    page = open_page(studio.base_url)
    wait_ready(page)
    expect(page.locator("#duration")).to_have_attribute("max", "300")
    page.fill("#duration", "9999")
    page.click("#generate")  # refused in the page: nothing is sent
    expect(page.locator("#duration-error")).not_to_be_empty()
    expect(page.locator("#duration")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#duration")).to_be_focused()
    assert page.locator("#job").get_attribute("data-status") == "idle"

    # Past the browser's checks, the server's message lands beside the same fields.
    page.evaluate(
        """() => {
        document.getElementById("duration").removeAttribute("max");
        document.getElementById("prompt").removeAttribute("required");
    }"""
    )
    page.fill("#duration", "1000")
    page.click("#generate")
    expect(page.locator("#duration-error")).to_contain_text("at most 300 seconds on this server")
    expect(page.locator("#form-error")).to_contain_text("fix the highlighted fields")
    page.fill("#duration", "5")
    expect(page.locator("#duration-error")).to_be_empty()  # typing clears a field's error
    page.fill("#prompt", "   ")
    page.click("#generate")
    expect(page.locator("#prompt-error")).to_contain_text("non-whitespace")
    expect(page.locator("#prompt")).to_be_focused()
    assert page.locator("#job").get_attribute("data-status") == "idle"


def test_asks_for_the_api_key(
    tmp_path: Path, tiny_engine: MusicGenEngine, open_page: OpenPage
) -> None:
    with serve(tmp_path, tiny_engine, api_key="open-sesame") as api:
        page = open_page(api.base_url)
        dialog = page.locator("#key-dialog")
        expect(dialog).to_be_visible()
        expect(page.locator("#api-key")).to_be_focused()
        page.fill("#api-key", "wrong")
        page.keyboard.press("Enter")
        expect(page.locator("#key-error")).to_contain_text("refused")
        page.fill("#api-key", "open-sesame")
        page.click("#key-save")
        expect(dialog).to_be_hidden()
        expect(page.locator("#history-empty")).to_be_visible()
        compose(page, "a key-protected tune", 1)
        page.click("#generate")
        expect(page.locator("#job")).to_have_attribute("data-status", "succeeded")

        page.reload()  # the key is remembered
        expect(page.locator("#history-list .track")).to_have_count(1)
        expect(dialog).to_be_hidden()
        assert page.evaluate("localStorage.getItem('tunesmith.apiKey')") == "open-sesame"
        refused = httpx.get(f"{api.base_url}/tracks")
        assert refused.status_code == 401


def test_phone_width_has_no_horizontal_scroll(
    studio: Api, open_page: OpenPage, artifacts: Path
) -> None:
    page = open_page(
        studio.base_url,
        viewport={"width": 375, "height": 740},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )
    wait_ready(page)
    page.locator("#advanced > summary").click()
    page.wait_for_timeout(100)
    widths = overflow(page)
    assert widths["scroll"] <= widths["inner"] == 375, widths
    assert not widths["wide"], widths
    page.screenshot(path=str(artifacts / "studio-phone.png"), full_page=True)


def test_keyboard_order_and_visible_focus(studio: Api, open_page: OpenPage) -> None:
    page = open_page(studio.base_url)
    wait_ready(page)
    seen = []
    for _ in range(14):
        page.keyboard.press("Tab")
        seen.append(page.evaluate("document.activeElement.id || document.activeElement.tagName"))
    order = ["key-button", "prompt", "duration", "format", "SUMMARY", "generate"]
    assert [s for s in seen if s in order] == order, seen
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"
    assert page.locator("#status").get_attribute("aria-live") == "polite"
    for name in ("prompt", "duration", "format", "seed", "temperature", "top_k", "top_p"):
        assert page.locator(f'label[for="{name}"]').count() == 1, name


def test_continue_a_track_from_the_history(studio: Api, open_page: OpenPage) -> None:
    made = studio.generate({"prompt": "an intro to continue", "duration": 2}).json()
    page = open_page(studio.base_url)
    wait_ready(page)
    expect(page.locator("#continuation-group")).to_be_visible()
    expect(page.locator("#melody-group")).to_be_hidden()
    item = page.locator(f'#history-list .track[data-id="{made["id"]}"]')
    item.locator(".continue").click()
    expect(page.locator("#input_audio-info")).to_contain_text(f"{made['id']}.wav")
    assert page.eval_on_selector("#input_audio", "el => el.files.length") == 1
    expect(page.locator("#duration")).to_have_value("12")  # longer than the 2 s it continues
    expect(page.locator("#prompt")).to_have_value("an intro to continue")
    page.click("#generate")
    expect(page.locator("#job")).to_have_attribute("data-status", "succeeded")
    record = studio.client.get(f"/files/music-output/{job_id(page)}.json").json()
    assert record["duration"] == 12 and "input_audio" in record["inputs"]


def test_melody_upload_only_where_the_model_follows_melodies(
    tmp_path: Path, tiny_melody_engine: MusicGenEngine, open_page: OpenPage
) -> None:
    with serve(tmp_path, tiny_melody_engine) as api:
        page = open_page(api.base_url)
        wait_ready(page)
        expect(page.locator("#melody-group")).to_be_visible()
        # melody checkpoints also continue audio, by the same prefix as text ones
        expect(page.locator("#continuation-group")).to_be_visible()
