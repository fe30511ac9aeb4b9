"""The studio's model picker in Chromium, against a server with the tiny text model (the
default) and the tiny melody model, which loads when first chosen for a track."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile
from playwright.sync_api import Page, expect

from live_server import Api, serve_models
from tunesmith.engine.registry import model_id

OpenPage = Callable[..., Page]


def test_the_picker_offers_each_model_and_the_controls_it_supports(
    tmp_path: Path, tiny_model_dir: Path, tiny_melody_dir: Path, open_page: OpenPage
) -> None:
    text, melody = model_id(str(tiny_model_dir)), model_id(str(tiny_melody_dir))
    tune = tmp_path / "tune.wav"
    samples = 0.2 * np.random.default_rng(0).standard_normal((64000, 1))
    soundfile.write(tune, samples.astype(np.float32), 32000, subtype="PCM_16")
    with serve_models(tmp_path, [tiny_model_dir, tiny_melody_dir]) as api:
        page = open_page(api.base_url)
        status = page.locator("#server-status")
        expect(status).to_have_attribute("data-state", "ok", timeout=60_000)
        picker = page.locator("#model")
        expect(picker).to_be_visible()
        expect(page.locator('label[for="model"]')).to_have_text("Model")
        expect(picker.locator("option")).to_have_count(2)
        expect(picker).to_have_value(text)
        expect(picker.locator(f'option[value="{melody}"]')).to_contain_text("melody")
        expect(page.locator("#melody-group")).to_be_hidden()  # the text model follows none
        expect(page.locator("#continuation-group")).to_be_visible()

        picker.select_option(melody)
        expect(page.locator("#melody-group")).to_be_visible()
        page.set_input_files("#melody", str(tune))
        page.fill("#prompt", "a hummed tune, on strings")
        page.fill("#duration", "2")
        page.click("#generate")  # the melody model loads for this job, which waits for it
        expect(page.locator("#job")).to_have_attribute("data-status", "succeeded", timeout=90_000)
        made = str(page.evaluate("window.tunesmithStudio.state.job.id"))
        record = record_of(api, made)
        assert record["request"]["model"] == melody and record["model"] == str(tiny_melody_dir)
        assert "melody" in record["inputs"]

        picker.select_option(text)  # a text model: the melody upload goes, and is not sent
        expect(page.locator("#melody-group")).to_be_hidden()
        page.click("#generate")
        done = "(made) => { const s = window.tunesmithStudio.state; "
        done += "return s.job && s.job.id !== made && s.job.status === 'succeeded' && s.job.id; }"
        second = record_of(api, str(page.wait_for_function(done, arg=made).json_value()))
        assert second["request"]["model"] == text and second["inputs"] == {}


def test_one_model_shows_no_picker(studio: Api, open_page: OpenPage) -> None:
    page = open_page(studio.base_url)
    expect(page.locator("#server-status")).to_have_attribute("data-state", "ok")
    expect(page.locator("#model option")).to_have_count(1)
    expect(page.locator("#model-field")).to_be_hidden()


def record_of(api: Api, track: str) -> dict[str, object]:
    response = api.client.get(f"/files/music-output/{track}.json")
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body
