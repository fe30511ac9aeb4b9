"""Two replicas of the API on one S3 bucket (the suite's SeaweedFS), each with its own
`S3Storage` and boto3 client as separate processes would have, sharing the tiny engine: what
one stores, the other lists and answers for."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
import soundfile

from live_server import LiveServer
from s3server import SeaweedS3
from tunesmith.api import create_app
from tunesmith.config import load_settings
from tunesmith.engine import MusicGenEngine
from tunesmith.storage import S3Storage

pytestmark = pytest.mark.s3


@pytest.fixture
def replicas(
    s3_server: SeaweedS3, s3_bucket: str, tiny_engine: MusicGenEngine
) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    settings = load_settings(
        model=tiny_engine.model_name, storage="s3", s3_bucket=s3_bucket, job_heartbeat=0.2
    )
    with ExitStack() as stack:
        clients = []
        for _ in range(2):
            storage = S3Storage(s3_bucket, client=s3_server.client())
            app = create_app(settings, engine=tiny_engine, storage=storage)
            server = stack.enter_context(LiveServer(app))
            clients.append(stack.enter_context(httpx.Client(base_url=server.base_url, timeout=60)))
        yield clients[0], clients[1]


def wait_for(client: httpx.Client, job_id: str, status: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/jobs/{job_id}").json()
        if job["status"] == status:
            return job
        assert time.monotonic() < deadline and job["status"] in ("queued", "running"), job
        time.sleep(0.1)


def generate(client: httpx.Client, seed: int, duration: float = 1) -> Any:
    body = {"prompt": "lofi hip hop beat", "duration": duration, "seed": seed}
    response = client.post("/generate", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def history(client: httpx.Client, limit: int, before: str | None = None) -> Any:
    params: dict[str, Any] = {"limit": limit} | ({"before": before} if before else {})
    response = client.get("/tracks", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_track_made_on_one_replica_is_in_the_others_history(
    replicas: tuple[httpx.Client, httpx.Client],
) -> None:
    a, b = replicas
    made = generate(a, seed=1, duration=2)

    listed = history(b, limit=20)["tracks"]
    assert [t["id"] for t in listed] == [made["id"]]
    assert listed[0]["public_url"] == made["public_url"]
    assert listed[0]["record"]["seed"] == 1
    samples, rate = soundfile.read(io.BytesIO(httpx.get(listed[0]["public_url"]).content))
    assert (rate, len(samples)) == (32000, 2 * 32000)


def test_a_job_submitted_on_one_replica_is_answered_by_the_other(
    replicas: tuple[httpx.Client, httpx.Client],
) -> None:
    a, b = replicas
    submitted = a.post("/jobs", json={"prompt": "calm piano", "duration": 2, "seed": 3})
    assert submitted.status_code == 202, submitted.text
    job = submitted.json()

    seen = b.get(f"/jobs/{job['id']}")
    assert seen.status_code == 200
    assert seen.json()["replica"] == job["replica"]
    done = wait_for(b, job["id"], "succeeded")
    assert done["result"]["public_url"] == job["public_url"]
    assert a.get(f"/jobs/{job['id']}").json()["status"] == "succeeded"
    samples, _ = soundfile.read(io.BytesIO(httpx.get(done["public_url"]).content))
    assert len(samples) == 2 * 32000
    assert [t["id"] for t in history(b, limit=20)["tracks"]] == [job["id"]]


def test_a_job_canceled_through_the_other_replica_stops_and_stores_nothing(
    replicas: tuple[httpx.Client, httpx.Client], s3_server: SeaweedS3, s3_bucket: str
) -> None:
    a, b = replicas
    job = a.post("/jobs", json={"prompt": "slow ambient drone", "duration": 240}).json()
    wait_for(a, job["id"], "running")

    canceled = b.delete(f"/jobs/{job['id']}")
    assert canceled.status_code == 200, canceled.text
    assert wait_for(a, job["id"], "canceled", timeout=30)["result"] is None
    assert b.get(f"/jobs/{job['id']}").json()["status"] == "canceled"
    listing = s3_server.client().list_objects_v2(Bucket=s3_bucket)
    keys = [item["Key"] for item in listing.get("Contents", [])]
    assert not [k for k in keys if k.startswith("music-output/")]
    assert history(a, limit=20)["tracks"] == []


def test_history_pages_agree_between_replicas(
    replicas: tuple[httpx.Client, httpx.Client],
) -> None:
    a, b = replicas
    made = [generate((a, b)[seed % 2], seed=seed)["id"] for seed in range(5)]

    def walk(clients: list[httpx.Client]) -> list[str]:
        """Page through /tracks two at a time, each page from the next client in turn."""
        ids: list[str] = []
        before = None
        for turn in range(10):
            page = history(clients[turn % len(clients)], limit=2, before=before)
            ids += [t["id"] for t in page["tracks"]]
            before = page["next"]
            if before is None:
                return ids
        raise AssertionError(f"more pages than tracks: {ids}")

    on_a, on_b, mixed = walk([a]), walk([b]), walk([a, b])
    assert on_a == on_b == mixed
    assert sorted(on_a) == sorted(made)  # each track once, none missing
    assert len(history(a, limit=100)["tracks"]) == 5
