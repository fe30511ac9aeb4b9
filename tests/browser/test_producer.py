"""The studio's producer controls in Chromium, against a real server on the tiny random
MusicGen: tempo, bars and loop; the sections timeline; the server's word on a field; what the
analysis found. A tempo or a key needs Rubber Band's CLI (``rubberband``) on the server."""

from __future__ import annotations

import io
import json
import re
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, Route, expect
from studio_page import overflow, wait_ready

from live_server import Api

OpenPage = Callable[..., Page]


def open_producer(page: Page) -> None:
    page.locator("#producer-summary").click()
    expect(page.locator("#bpm")).to_be_visible()


def finished_record(page: Page, api: Api) -> dict[str, Any]:
    expect(page.locator("#job")).to_have_attribute("data-status", "succeeded", timeout=90_000)
    track = page.evaluate("window.tunesmithStudio.state.job.id")
    body: dict[str, Any] = api.client.get(f"/files/music-output/{track}.json").json()
    return body


def add_section(page: Page, prompt: str, length: str, unit: str = "duration") -> None:
    page.click("#section-add")
    row = page.locator("#sections-list > li").last
    expect(row.locator(".section-prompt")).to_be_focused()
    row.locator(".section-prompt").fill(prompt)
    row.locator(".section-unit").select_option(unit)
    row.locator(".section-length").fill(length)


def silent_wav(seconds: float = 1.0, rate: int = 32000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\0\0" * int(seconds * rate))
    return out.getvalue()


def test_bars_set_the_duration_and_wait_for_a_tempo(studio: Api, open_page: OpenPage) -> None:
    page = open_page(studio.base_url)
    wait_ready(page)
    open_producer(page)
    for name in ("bars", "beats_per_bar", "loop"):
        expect(page.locator(f"#{name}")).to_be_disabled()  # they need a BPM
    page.fill("#duration", "7")
    page.fill("#bpm", "90")
    page.fill("#bars", "3")
    expect(page.locator("#duration")).to_be_disabled()
    expect(page.locator("#duration")).to_have_value("8")  # 3 bars x 4 beats at 90 BPM
    expect(page.locator("#duration-derived")).to_have_text("3 bars of 4 beats at 90 BPM: 8 s")
    page.fill("#beats_per_bar", "3")
    expect(page.locator("#duration")).to_have_value("6")
    page.check("#loop")
    expect(page.locator("#fade_out")).to_be_disabled()  # a loop has no ending to fade
    page.fill("#bpm", "")
    expect(page.locator("#bars")).to_be_disabled()
    expect(page.locator("#loop")).to_be_disabled()
    expect(page.locator("#duration")).to_be_enabled()
    expect(page.locator("#duration")).to_have_value("7")  # the user's own again
    expect(page.locator("#duration-derived")).to_be_hidden()
    for name in ("bpm", "bars", "beats_per_bar", "musical_key", "fade_out", "loop"):
        assert page.locator(f'label[for="{name}"]').count() == 1, name


def test_tempo_bars_and_loop_make_a_looping_track(studio: Api, open_page: OpenPage) -> None:
    page = open_page(studio.base_url)
    wait_ready(page)
    page.fill("#prompt", "a drum loop")
    open_producer(page)
    page.fill("#bpm", "120")
    page.fill("#bars", "2")
    page.check("#loop")
    page.select_option("#musical_key", "A minor")
    sent: list[dict[str, Any]] = []
    page.on(
        "request",
        lambda r: sent.append(json.loads(r.post_data or "{}")) if r.method == "POST" else None,
    )
    page.click("#generate")
    record = finished_record(page, studio)
    assert "duration" not in sent[0] and "fade_out" not in sent[0]  # only what was set
    request = record["request"]
    assert (request["bpm"], request["bars"], request["loop"]) == (120, 2, True)
    assert request["key"] == "A minor"
    assert request["duration"] == 4  # 2 bars of 4 beats at 120 BPM
    # the stream plays to its end once; then the stored file plays on, looping
    page.wait_for_function(
        """() => { const p = document.getElementById("player");
                   return p.loop && p.src.endsWith(".wav") && !p.paused; }"""
    )
    expect(page.locator("#result-meta")).to_contain_text("loops")
    expect(page.locator("#download")).to_have_attribute("href", re.compile(r"\.wav$"))
    found = re.compile(r"^Producer: found [\d.]+ BPM, .*; key found [A-G]#? m(aj|in)or")
    expect(page.locator("#production")).to_have_text(found)
    item = page.locator(f'#history-list .track[data-id="{record["id"]}"]')
    expect(item.locator('[data-param="bpm"] dd')).to_have_text("120 BPM")
    expect(item.locator('[data-param="loop"] dd')).to_have_text("yes")

    page.fill("#bpm", "")
    item.locator(".edit").click()  # the form takes the producer's fields back
    expect(page.locator("#bpm")).to_have_value("120")
    expect(page.locator("#bars")).to_have_value("2")
    expect(page.locator("#loop")).to_be_checked()
    expect(page.locator("#duration")).to_be_disabled()


def test_sections_timeline_sends_sections(
    studio: Api, open_page: OpenPage, artifacts: Path
) -> None:
    page = open_page(studio.base_url)
    wait_ready(page)
    page.fill("#prompt", "a song in two parts")
    open_producer(page)
    add_section(page, "quiet intro", "2")
    add_section(page, "loud drop", "3")
    segments = page.locator("#sections-timeline .segment")
    expect(segments).to_have_count(2)
    expect(segments.first).to_contain_text("quiet intro")
    expect(page.locator("#sections-total")).to_have_text("2 sections, 5 s in all")
    expect(page.locator("#duration")).to_be_disabled()
    expect(page.locator("#duration")).to_have_value("5")
    page.screenshot(path=str(artifacts / "studio-producer.png"), full_page=True)
    widths = segments.evaluate_all("s => s.map((e) => e.getBoundingClientRect().width)")
    assert abs(widths[1] / widths[0] - 1.5) < 0.1, widths
    page.click("#generate")
    record = finished_record(page, studio)
    sections = [(s["prompt"], s["duration"]) for s in record["request"]["sections"]]
    assert sections == [("quiet intro", 2), ("loud drop", 3)]
    assert record["request"]["duration"] == 5

    page.locator("#sections-list .section-remove").first.click()
    expect(page.locator("#sections-list > li")).to_have_count(1)
    expect(page.locator("#sections-total")).to_have_text("1 section, 3 s in all")


def test_sections_go_without_an_upload(studio: Api, open_page: OpenPage) -> None:
    page = open_page(studio.base_url)
    wait_ready(page)
    open_producer(page)
    add_section(page, "a part", "2")
    page.set_input_files(
        "#input_audio", {"name": "intro.wav", "mimeType": "audio/wav", "buffer": silent_wav()}
    )
    expect(page.locator("#sections-upload")).to_be_visible()
    page.click("#generate")  # refused in the page: a form cannot carry sections
    expect(page.locator("#sections-error")).to_contain_text("JSON request only")
    assert page.locator("#job").get_attribute("data-status") == "idle"
    page.click("#input_audio-clear")
    expect(page.locator("#sections-upload")).to_be_hidden()


def test_the_servers_refusal_shows_beside_the_field(studio: Api, open_page: OpenPage) -> None:
    page = open_page(studio.base_url)
    wait_ready(page)
    open_producer(page)
    page.fill("#duration", "2")
    # a key no select offers, as a hand-made request might send
    page.evaluate(
        """() => {
        const select = document.getElementById("musical_key");
        select.append(new Option("H minor", "H minor"));
        select.value = "H minor";
    }"""
    )
    page.click("#generate")
    expect(page.locator("#musical_key-error")).to_contain_text("a tonic and a mode")
    expect(page.locator("#musical_key")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#musical_key")).to_be_focused()
    expect(page.locator("#form-error")).to_contain_text("fix the highlighted fields")
    expect(page.locator("#key-error")).to_be_empty()  # the API key dialog's slot stays clear
    assert page.locator("#job").get_attribute("data-status") == "idle"

    # a section's error lands at its row
    page.select_option("#musical_key", "")
    add_section(page, "first", "1")
    add_section(page, "second", "1")

    def refuse(route: Route) -> None:
        fields = [{"field": "sections.1.prompt", "message": "too loud"}]
        body = {"error": "invalid_request", "message": "refused", "fields": fields}
        route.fulfill(status=422, json=body)

    page.route("**/jobs", refuse)
    page.click("#generate")
    expect(page.locator("#sections-error")).to_have_text("Section 2 prompt: too loud")
    second = page.locator("#sections-list > li").nth(1).locator(".section-prompt")
    expect(second).to_have_attribute("aria-invalid", "true")
    expect(second).to_be_focused()
    second.fill("second, softer")
    expect(page.locator("#sections-error")).to_be_empty()


def test_the_analysis_and_warnings_are_shown(studio: Api, open_page: OpenPage) -> None:
    made = studio.generate({"prompt": "a", "duration": 1}).json()
    job = {
        "id": made["id"],
        "status": "succeeded",
        "created": "2026-01-01T00:00:00Z",
        "updated": "2026-01-01T00:00:01Z",
        "request": {"prompt": "a", "duration": 4, "bpm": 120, "bars": 2, "key": "A minor"},
        "public_url": made["public_url"],
        "metadata_url": made["metadata_url"],
        "events_url": "/jobs/fake/events",
        "result": {
            **made,
            "production": {
                "tempo_found": 114.3,
                "stretch": 0.9525,
                "key_found": "E minor",
                "key_shift": 5,
                "key": "A minor",
                "downbeat": 0.42,
                "bars": 2,
            },
            "warnings": ["the model played 114.3 BPM: stretched"],
        },
    }
    page = open_page(studio.base_url)
    wait_ready(page)
    page.route("**/jobs", lambda route: route.fulfill(status=202, json={**job, "status": "queued"}))
    page.route(
        "**/jobs/fake/events",
        lambda route: route.fulfill(
            content_type="text/event-stream", body=f"event: done\ndata: {json.dumps(job)}\n\n"
        ),
    )
    page.click("#generate")
    expect(page.locator("#job")).to_have_attribute("data-status", "succeeded")
    expect(page.locator("#production")).to_have_text(
        "Producer: found 114.3 BPM, stretched x0.95; key found E minor, shifted +5 to A minor; "
        "2 bars from the downbeat at 0.42 s."
    )
    expect(page.locator("#warnings li")).to_have_text(["the model played 114.3 BPM: stretched"])
    assert page.evaluate("document.getElementById('player').loop") is False


def test_producer_fits_a_phone(studio: Api, open_page: OpenPage, artifacts: Path) -> None:
    page = open_page(
        studio.base_url,
        viewport={"width": 375, "height": 740},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )
    wait_ready(page)
    open_producer(page)
    page.fill("#bpm", "100")
    add_section(page, "a long description of the first part of the song", "4", "bars")
    add_section(page, "the second", "2", "bars")
    widths = overflow(page)
    assert widths["scroll"] <= widths["inner"] == 375, widths
    assert not widths["wide"], widths
    expect(page.locator("#sections-total")).to_have_text("2 sections, 14.4 s in all")
    page.screenshot(path=str(artifacts / "studio-producer-phone.png"), full_page=True)


def test_a_server_without_rubber_band_says_so_first(studio: Api, open_page: OpenPage) -> None:
    page = open_page(studio.base_url)

    def without(route: Route) -> None:
        route.fulfill(json={**route.fetch().json(), "rubberband": False})

    page.route("**/healthz", without)
    page.goto(studio.base_url)
    wait_ready(page)
    open_producer(page)
    expect(page.locator("#bpm-hint")).to_contain_text("lacks Rubber Band")
    expect(page.locator("#musical_key-hint")).to_contain_text("lacks Rubber Band")
    page.fill("#bpm", "120")
    page.click("#generate")  # refused in the page, as the server would
    expect(page.locator("#bpm-error")).to_contain_text("rubberband-cli")
    expect(page.locator("#bpm")).to_be_focused()
    assert page.locator("#job").get_attribute("data-status") == "idle"
