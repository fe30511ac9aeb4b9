"""A duration over the limit is refused naming the limit that applies where it was sent (the
server's TUNESMITH_MAX_DURATION, the Lambda's variant), however far over it is: through a real
server for JSON and form bodies on /generate and /jobs, and through the Lambda handler."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from apigw_events import lambda_context, proxy_event
from live_server import Api, serve
from tunesmith.aws import lambda_handler
from tunesmith.aws.protocol import encode_form
from tunesmith.engine import MusicGenEngine

LIMIT = 300  # the server's default TUNESMITH_MAX_DURATION, below the contract's hour
# just over it, over the contract's hour, and far over both
OVER = [301, 3601, 100000, 1e300]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, tiny_engine: MusicGenEngine) -> Iterator[Api]:
    with serve(tmp_path_factory.mktemp("limit"), tiny_engine, max_duration=LIMIT) as running:
        yield running


def _post(api: Api, path: str, duration: float, *, form: bool) -> httpx.Response:
    fields: dict[str, Any] = {"prompt": "a drone", "duration": duration}
    if not form:
        return api.client.post(path, json=fields)
    body, content_type = encode_form({k: str(v) for k, v in fields.items()}, {})
    return api.client.post(path, content=body, headers={"Content-Type": content_type})


@pytest.mark.parametrize("form", [False, True], ids=["json", "form"])
@pytest.mark.parametrize("path", ["/generate", "/jobs"])
@pytest.mark.parametrize("duration", OVER)
def test_every_duration_over_the_limit_names_the_servers_limit(
    api: Api, path: str, form: bool, duration: float
) -> None:
    response = _post(api, path, duration, form=form)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["fields"] == [
        {"field": "duration", "message": f"must be at most {LIMIT} seconds on this server"}
    ]


def test_the_limit_itself_is_accepted_and_other_errors_come_with_it(api: Api) -> None:
    response = api.client.post("/jobs", json={"prompt": "a drone", "duration": LIMIT})
    assert response.status_code == 202, response.text
    api.client.delete(response.headers["location"])
    response = api.client.post("/generate", json={"prompt": "", "duration": LIMIT + 1})
    assert response.status_code == 422
    assert {f["field"] for f in response.json()["fields"]} == {"prompt", "duration"}


@pytest.fixture
def function_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """A serverless deployment's function; the refusal comes before any AWS call."""
    for name in [n for n in os.environ if n.startswith("TUNESMITH_")]:
        monkeypatch.delenv(name)
    env = {
        "TUNESMITH_S3_BUCKET": "tracks",
        "TUNESMITH_ENDPOINT_NAME": "tunesmith",
        "TUNESMITH_VARIANT": "serverless",
        "TUNESMITH_TIME_LIMIT": "27",
        "TUNESMITH_MAX_DURATION": "6",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "unused",
        "AWS_SECRET_ACCESS_KEY": "unused",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    lambda_handler.reset()
    yield monkeypatch
    lambda_handler.reset()


@pytest.mark.usefixtures("function_env")
@pytest.mark.parametrize("duration", [7, 3601, 100000])
def test_the_lambda_names_its_variants_limit(duration: float) -> None:
    answer = lambda_handler.handler(
        proxy_event({"prompt": "a drone", "duration": duration}), lambda_context()
    )
    assert answer["statusCode"] == 422
    (field,) = json.loads(answer["body"])["fields"]
    assert field["field"] == "duration"
    assert field["message"].startswith("must be at most 6 seconds on the serverless variant")
