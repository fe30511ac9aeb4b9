"""The studio's compose side in Chromium, against a real server on the tiny random MusicGen:
"Copy as curl" (run for real), recording from a (fake) microphone, Generate in reach on a
phone, and how the page words speed."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect
from studio_page import wait_ready

from live_server import Api, serve
from tunesmith.engine import MusicGenEngine

OpenPage = Callable[..., Page]
EXACT_SEED = "9007199254740993"  # 2**53 + 1: a JS number would round it
# Chromium's fake microphone (a beep) that needs no permission prompt
MIC_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
]


def finished_record(page: Page, api: Api) -> dict[str, Any]:
    expect(page.locator("#job")).to_have_attribute("data-status", "succeeded", timeout=60_000)
    track = page.evaluate("window.tunesmithStudio.state.job.id")
    body: dict[str, Any] = api.client.get(f"/files/music-output/{track}.json").json()
    return body


def run_shell(command: str) -> dict[str, Any]:
    clean = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    done = subprocess.run(
        ["bash", "-c", command], capture_output=True, text=True, timeout=120, env=clean
    )
    assert done.returncode == 0, done.stderr
    body: dict[str, Any] = json.loads(done.stdout)
    return body


# ------------------------------------------------------------------------------ copy as curl


def test_copy_as_curl_is_the_exact_request(studio: Api, open_page: OpenPage) -> None:
    page = open_page(studio.base_url, permissions=["clipboard-read", "clipboard-write"])
    wait_ready(page)
    page.fill("#prompt", "it's a 'quoted' tune & $HOME stays text")
    page.fill("#duration", "1")
    page.locator("#advanced > summary").click()
    page.fill("#seed", EXACT_SEED)
    page.fill("#temperature", "0.9")
    page.select_option("#format", "flac")
    page.click("#copy-curl")
    expect(page.locator("#curl-dialog")).to_be_visible()
    expect(page.locator("#curl-status")).to_have_text("Copied to the clipboard.")
    command = page.locator("#curl-command").input_value()
    assert page.evaluate("navigator.clipboard.readText()") == command
    assert command.startswith(f"curl -sS '{studio.base_url}/generate'")
    assert "Authorization" not in command  # no key entered
    assert page.locator("#job").get_attribute("data-status") == "idle"  # nothing sent

    made = run_shell(command)
    record = studio.client.get(made["metadata_url"]).json()["request"]
    assert record["prompt"] == "it's a 'quoted' tune & $HOME stays text"
    assert str(made["seed"]) == EXACT_SEED and made["format"] == "flac"
    assert (record["duration"], record["temperature"]) == (1, 0.9)


def test_copy_as_curl_carries_the_key_and_the_files(
    tmp_path: Path, tiny_engine: MusicGenEngine, open_page: OpenPage
) -> None:
    with serve(tmp_path, tiny_engine, api_key="open-sesame") as api:
        key = {"Authorization": "Bearer open-sesame"}
        source = api.client.post("/generate", json={"prompt": "a", "duration": 1}, headers=key)
        page = open_page(api.base_url)
        page.fill("#api-key", "open-sesame")
        page.click("#key-save")
        wait_ready(page)
        item = page.locator(f'#history-list .track[data-id="{source.json()["id"]}"]')
        item.locator(".continue").click()
        expect(page.locator("#input_audio-info")).to_contain_text(".wav")
        page.fill("#duration", "2")
        page.click("#copy-curl")
        command = page.locator("#curl-command").input_value()
        assert "-H 'Authorization: Bearer open-sesame'" in command
        assert f'input_audio=@"{source.json()["id"]}.wav"' in command

        audio = api.client.get(source.json()["public_url"], headers=key).content
        (tmp_path / f"{source.json()['id']}.wav").write_bytes(audio)
        made = run_shell(f"cd {tmp_path} && {command}")
        record = api.client.get(made["metadata_url"], headers=key).json()
        assert record["request"]["source_track"] == source.json()["id"]
        assert "input_audio" in record["inputs"]


# ------------------------------------------------------------------------------- microphone


@pytest.fixture(scope="module")
def mic_browser(browser: Browser) -> Iterator[Browser]:
    fake = browser.browser_type.launch(
        executable_path="/usr/bin/chromium", headless=True, args=MIC_ARGS
    )
    yield fake
    fake.close()


@pytest.fixture
def open_mic_page(mic_browser: Browser) -> Iterator[Callable[[str], Page]]:
    contexts = []
    problems: list[str] = []

    def open_(base_url: str) -> Page:
        context = mic_browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(20_000)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        page.goto(base_url + "/")
        return page

    yield open_
    for context in contexts:
        context.close()
    assert not problems, problems


def record_for(page: Page, name: str, seconds: float) -> None:
    button = page.locator(f"#{name}-record")
    button.click()
    expect(button).to_have_attribute("aria-pressed", "true")
    expect(button).to_contain_text("Stop recording")
    page.wait_for_timeout(seconds * 1000)
    button.click()
    expect(page.locator(f"#{name}-info")).to_contain_text(re.compile(r"recording-.*\.wav"))
    expect(button).to_have_attribute("aria-pressed", "false")
    assert page.eval_on_selector(f"#{name}", "el => el.files[0].type") == "audio/wav"


def test_record_an_intro_to_continue(studio: Api, open_mic_page: Callable[[str], Page]) -> None:
    page = open_mic_page(studio.base_url)
    wait_ready(page)
    expect(page.locator("#melody-record")).to_be_hidden()  # this model takes no melody
    record_for(page, "input_audio", 1.5)
    page.fill("#prompt", "after my intro")
    page.fill("#duration", "4")
    page.click("#generate")
    record = finished_record(page, studio)
    used = record["inputs"]["input_audio"]
    assert used["start"] == 0 and 1.0 < used["end"] < 3.0
    assert record["request"]["source_track"] is None  # a recording, not a stored track


def test_record_a_melody_to_follow(
    tmp_path: Path, tiny_melody_engine: MusicGenEngine, open_mic_page: Callable[[str], Page]
) -> None:
    with serve(tmp_path, tiny_melody_engine) as api:
        page = open_mic_page(api.base_url)
        wait_ready(page)
        expect(page.locator("#input_audio-record")).to_be_visible()  # it continues too
        record_for(page, "melody", 1.5)
        page.fill("#duration", "2")
        page.click("#generate")
        record = finished_record(page, api)
        assert 1.0 < record["inputs"]["melody"]["end"] < 3.0


# ------------------------------------------------------------------------------------ layout


def test_generate_is_in_reach_without_scrolling_on_a_phone(
    studio: Api, open_page: OpenPage, artifacts: Path
) -> None:
    page = open_page(
        studio.base_url,
        viewport={"width": 390, "height": 844},
        device_scale_factor=3,
        is_mobile=True,
        has_touch=True,
    )
    wait_ready(page)
    expect(page.locator("#continuation-group")).to_be_visible()  # the longest form there is
    page.locator("#advanced > summary").click()  # longer still
    page.evaluate("window.scrollTo(0, 0)")
    reach = page.evaluate(
        """() => {
        const box = document.getElementById("generate").getBoundingClientRect();
        const x = box.left + box.width / 2, y = box.top + box.height / 2;
        return { top: box.top, bottom: box.bottom, height: innerHeight, scroll: scrollY,
                 hit: document.elementFromPoint(x, y)?.id };
    }"""
    )
    assert reach["scroll"] == 0 and reach["hit"] == "generate", reach
    assert reach["top"] >= 0 and reach["bottom"] <= reach["height"], reach
    page.screenshot(path=str(artifacts / "studio-phone-generate.png"))
    page.fill("#duration", "1")
    page.evaluate("window.scrollTo(0, 0)")
    page.locator("#generate").tap()
    expect(page.locator("#job")).not_to_have_attribute("data-status", "idle")
    expect(page.locator("#job")).to_have_attribute("data-status", "succeeded")


# ------------------------------------------------------------------------------------- words


@pytest.mark.parametrize(
    ("rate", "words"),
    [
        (1.5, "made 1.5x faster than it plays"),
        (12.4, "made 12x faster than it plays"),
        (0.5, "made 2.0x slower than it plays"),
        (1.0, "made about as fast as it plays"),
    ],
)
def test_speed_is_said_plainly(studio: Api, open_page: OpenPage, rate: float, words: str) -> None:
    page = open_page(studio.base_url)
    said = page.evaluate("r => import('/studio/words.js').then((m) => m.speedText(r))", rate)
    assert said == words


# ------------------------------------------------------------------------------ defaults


def test_sampling_fields_start_from_the_servers_defaults(studio: Api, open_page: OpenPage) -> None:
    served = studio.client.get("/healthz").json()["defaults"]
    schema = studio.client.get("/openapi.json").json()["components"]["schemas"]["GenerateRequest"]
    assert served == {name: schema["properties"][name]["default"] for name in served}
    page = open_page(studio.base_url)

    def other_defaults(route: Any) -> None:
        body = route.fetch().json()
        body["defaults"] = {**body["defaults"], "guidance_scale": 4.5, "top_k": 120}
        route.fulfill(json=body)

    page.route("**/healthz", other_defaults)
    page.goto(studio.base_url)
    wait_ready(page)
    expect(page.locator("#guidance_scale")).to_have_value("4.5")
    expect(page.locator("#top_k")).to_have_value("120")
    assert float(page.input_value("#temperature")) == served["temperature"]
