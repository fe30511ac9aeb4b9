"""The studio page's own files, served by the app under /studio/ (the page itself is at /)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest

from live_server import Api, serve
from tunesmith.engine import MusicGenEngine

STATIC = resources.files("tunesmith.api").joinpath("static")


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, tiny_engine: MusicGenEngine) -> Iterator[Api]:
    with serve(tmp_path_factory.mktemp("studio-files"), tiny_engine) as running:
        yield running


def test_every_file_the_page_and_its_modules_name_is_served(api: Api) -> None:
    page = api.client.get("/")
    assert page.status_code == 200 and page.headers["cache-control"] == "no-cache"
    wanted = set(re.findall(r'"/studio/([\w-]+\.(?:js|css))"', page.text))
    seen: set[str] = set()
    while wanted - seen:  # the modules the page loads, and the modules they import
        name = sorted(wanted - seen)[0]
        seen.add(name)
        served = api.client.get(f"/studio/{name}")
        assert served.status_code == 200, name
        assert served.headers["content-type"].split(";")[0] == (
            "text/css" if name.endswith(".css") else "text/javascript"
        )
        assert served.text == STATIC.joinpath(name).read_text("utf-8")
        wanted |= set(re.findall(r'from "\./([\w-]+\.js)"', served.text))
    assert {"app.js", "style.css", "history.js"} <= seen
    on_disk = {p.name for p in Path(str(STATIC)).iterdir() if p.suffix in (".js", ".css")}
    assert seen == on_disk  # no module left unused


@pytest.mark.parametrize("name", ["index.html", "missing.js", "..js", "app.js.map", "app"])
def test_nothing_else_is_served_from_there(api: Api, name: str) -> None:
    response = api.client.get(f"/studio/{name}")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
