"""schemathesis against the app's own OpenAPI document, through a real uvicorn server with the
tiny MusicGen: every route, JSON and multipart bodies, valid and invalid data; no 5xx.

Two passes: the document as served (uploads and continuation ranges included), and its two
generating routes without the fields that need an upload, so that valid bodies, boundary
values first, reach the engine instead of stopping at "needs an input_audio upload". The
summary line (requests generated, server errors) is written at the end of the module."""

from __future__ import annotations

import copy
import tempfile
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error

from live_server import Api, serve
from tunesmith.api import create_app
from tunesmith.config import load_settings
from tunesmith.engine import MusicGenEngine
from tunesmith.storage import LocalStorage

MAX_DURATION = 2  # the server's limit: longer durations are 422s, tracks stay quick to make
GENERATING = ("/generate", "/jobs")
STREAMED_JOBS = 16  # jobs whose events and audio are read to their end
NEEDS_UPLOAD = ("input_audio", "melody", "continuation_start", "continuation_end", "source_track")

FUZZ_SETTINGS = settings(
    max_examples=30,  # per operation and generation mode, beyond schemathesis's boundary cases
    derandomize=True,  # the same requests every run: a stable count, no flaky findings
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking through HTTP
    suppress_health_check=list(HealthCheck),
)


def app_document() -> dict[str, Any]:
    """The OpenAPI document the app serves: its routes depend on neither model nor storage, so
    an app whose engine is never loaded gives it at collection, when schemathesis needs it."""
    with tempfile.TemporaryDirectory() as tmp:
        config = load_settings(model="unloaded", local_dir=tmp, max_duration=MAX_DURATION)
        app = create_app(
            config, engine=MusicGenEngine("unloaded", device="cpu"), storage=LocalStorage(tmp)
        )
        try:
            return app.openapi()
        finally:
            app.state.tunesmith.jobs.close()


def bodies(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The request body schemas (JSON and multipart) of the generating routes."""
    for path in GENERATING:
        for content in document["paths"][path]["post"]["requestBody"]["content"].values():
            yield content["schema"]


def limited(document: dict[str, Any], max_duration: float) -> dict[str, Any]:
    """`document` with this server's duration limit in its request bodies, and the duration
    required there. The app documents the hard limit and a 10 s default (each deployment sets
    its own limit), both above this server's: nearly every valid body would be a 422."""
    fuzzed = copy.deepcopy(document)
    for body in bodies(fuzzed):
        body["properties"]["duration"]["maximum"] = max_duration
        body["required"] = sorted({*body.get("required", []), "duration"})
    return fuzzed


def renderable(document: dict[str, Any]) -> dict[str, Any]:
    """The generating routes of `document` without the fields that need an upload."""
    fuzzed = copy.deepcopy(document)
    fuzzed["paths"] = {path: fuzzed["paths"][path] for path in GENERATING}
    for body in bodies(fuzzed):
        for name in NEEDS_UPLOAD:
            body["properties"].pop(name, None)
    return fuzzed


DOCUMENT = app_document()
served = schemathesis.openapi.from_dict(limited(DOCUMENT, MAX_DURATION))
generating = schemathesis.openapi.from_dict(renderable(limited(DOCUMENT, MAX_DURATION)))


class Tally:
    """Requests sent and their status codes, by pass and operation, over the module."""

    def __init__(self) -> None:
        self.seen: Counter[tuple[str, int]] = Counter()  # ("pass: operation", status)
        self.followed: Counter[tuple[str, int]] = Counter()  # on real jobs' ids and tracks' keys
        self.jobs = 0

    @property
    def requests(self) -> int:
        return self.seen.total()

    @property
    def server_errors(self) -> int:
        return sum(n for (_, status), n in self.seen.items() if status >= 500)

    def lines(self) -> list[str]:
        by_operation: dict[str, Counter[int]] = {}
        for (operation, status), n in sorted(self.seen.items()):
            by_operation.setdefault(operation, Counter())[status] += n
        followed = ", ".join(f"{op} {code}: {n}" for (op, code), n in sorted(self.followed.items()))
        return [
            f"fuzz: {self.requests} generated requests, {self.server_errors} server errors",
            *(
                f"  {operation}: {sum(codes.values())} "
                f"({', '.join(f'{code}: {n}' for code, n in codes.items())})"
                for operation, codes in by_operation.items()
            ),
            f"  and {self.followed.total()} requests on the {self.jobs} jobs started and the "
            f"tracks made: {followed}",
        ]


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory, tiny_engine: MusicGenEngine) -> Iterator[Api]:
    tmp = tmp_path_factory.mktemp("fuzz")
    # room for every job the fuzzer submits, so that none is a 503 for overload
    with serve(tmp, tiny_engine, max_duration=MAX_DURATION, max_jobs=4096) as api:
        yield api


@pytest.fixture(scope="module")
def tally(request: pytest.FixtureRequest) -> Iterator[Tally]:
    counted = Tally()
    yield counted
    # written past pytest's capture, so that the figures show without -s
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line("")
            for line in counted.lines():
                reporter.write_line(line)


def test_the_fuzzed_document_is_the_one_the_server_serves(fuzzed: Api) -> None:
    assert fuzzed.client.get("/openapi.json").json() == DOCUMENT
    operations = {(m.upper(), path) for path, item in DOCUMENT["paths"].items() for m in item}
    assert {("POST", "/generate"), ("POST", "/jobs"), ("GET", "/jobs/{job_id}/audio")} <= operations


def check(case: schemathesis.Case[Any], api: Api, tally: Tally, name: str) -> None:
    response = case.call(base_url=api.base_url, timeout=60)
    tally.seen[f"{name}: {case.operation.label}", response.status_code] += 1
    case.validate_response(response, checks=[not_a_server_error])
    if case.operation.label == "POST /jobs" and response.status_code == 202:
        follow(api, response.json()["id"], tally)
    if case.operation.label == "POST /generate" and response.status_code == 200:
        track = response.json()
        for url in (track["public_url"], track["metadata_url"]):  # GET /files/{key}, real keys
            fetched = api.client.get(url)
            tally.followed["GET /files/{key}", fetched.status_code] += 1
            assert fetched.status_code == 200, (url, fetched.text[:500])


@served.parametrize()
@FUZZ_SETTINGS
def test_no_route_answers_a_server_error(
    case: schemathesis.Case[Any], fuzzed: Api, tally: Tally
) -> None:
    check(case, fuzzed, tally, "served")


@generating.parametrize()
@FUZZ_SETTINGS
def test_no_renderable_body_gets_a_server_error(
    case: schemathesis.Case[Any], fuzzed: Api, tally: Tally
) -> None:
    check(case, fuzzed, tally, "renderable")


def follow(api: Api, job_id: str, tally: Tally) -> None:
    """The job routes on a job the fuzzer started (generated ids are only ever 404s): its
    status, its event and audio streams read to their end, and a cancel, before or after.
    Past the first few jobs, only its status and a cancel: the engine is not kept busy."""
    tally.jobs += 1
    calls = [
        ("GET", f"/jobs/{job_id}"),
        ("GET", f"/jobs/{job_id}/events"),
        ("GET", f"/jobs/{job_id}/audio"),
        ("DELETE", f"/jobs/{job_id}"),
    ]
    if tally.jobs > STREAMED_JOBS:
        del calls[1:3]
    elif tally.jobs % 2:  # cancel while it is queued or running
        calls.insert(1, calls.pop())
    canceled = False
    for method, path in calls:
        label = method + " " + path.replace(job_id, "{job_id}")
        try:
            response = api.client.request(method, path)
        except httpx.RemoteProtocolError:
            # what a canceled job's audio does: it breaks off short of its Content-Length
            assert canceled and path.endswith("/audio"), label
            tally.followed[label + " (broken off)", 200] += 1
            continue
        canceled = canceled or method == "DELETE"
        tally.followed[label, response.status_code] += 1
        assert response.status_code < 500, (label, response.status_code, response.text[:500])
