"""The parts `tunesmith loadtest` drives: ``tunesmith serve`` processes, client threads that
POST /generate against them, and the check of what the bucket holds afterwards.

httpx and soundfile are imported here at the top: this module is only imported by the
load test (httpx is in the ``[dev]`` extra).
"""

from __future__ import annotations

import io
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import soundfile

from tunesmith.errors import TunesmithError
from tunesmith.testing.seaweed import free_ports

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = [
    "Expected",
    "Load",
    "Outcome",
    "Replica",
    "expected_track",
    "list_keys",
    "passed",
    "percentile",
    "rss_sampler",
    "serve_env",
    "tally",
    "verify_bucket",
]

PROMPTS = (
    "upbeat electronic dance music with heavy bass",
    "calm piano melody for a rainy evening",
    "lofi hip hop beat with vinyl crackle",
    "acoustic guitar folk song with soft vocals",
)
SAMPLE_RATE = 32000  # MusicGen's EnCodec
TRACK_PREFIX = "music-output/"
JOB_PREFIX = "music-jobs/"
# long enough that no request is abandoned by its client (which would leave the server to
# store a track that no 200 names)
REQUEST_TIMEOUT = httpx.Timeout(300.0, connect=5.0)
_MAX_BACKOFF = 1.0  # seconds a client waits after a 503 or 429 at most (Retry-After says more)


@dataclass
class Outcome:
    """One request as its client saw it; `status` None: no HTTP answer came back."""

    phase: str
    replica: int
    sent: float  # seconds since the run began
    seconds: float
    duration: float  # asked for
    status: int | None
    error: str | None  # the JSON body's error code, or the transport error's class name
    body: dict[str, Any] | None
    is_json: bool
    retry_after: float | None = None  # seconds, from the Retry-After header

    @property
    def answered(self) -> float:
        return self.sent + self.seconds

    @property
    def clean(self) -> bool:
        """A JSON answer: the track, or an error with its code (the API's contract)."""
        return self.is_json and (self.status == 200 or self.error is not None)

    @property
    def label(self) -> str:
        """``200``, ``503 overloaded``, ``no answer (ConnectError)``, ..."""
        if self.status is None:
            return f"no answer ({self.error})"
        if self.status == 200:
            return "200"
        return f"{self.status} {self.error or '(not a JSON error)'}"


def tally(outcomes: Iterable[Outcome]) -> dict[str, int]:
    """How many outcomes of each `Outcome.label`, most common first."""
    return dict(Counter(o.label for o in outcomes).most_common())


def percentile(values: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


class Replica:
    """One ``tunesmith serve`` process on a free loopback port, its output in `log_path`."""

    def __init__(self, index: int, env: dict[str, str], workdir: Path) -> None:
        self.index = index
        self.port = free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**env, "TUNESMITH_HOST": "127.0.0.1", "TUNESMITH_PORT": str(self.port)}
        self.log_path = workdir / f"serve-{index}.log"
        self.peak_rss_kb = 0
        self.returncode: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "tunesmith.cli", "serve"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def wait_ready(self, timeout: float) -> None:
        """Until ``/healthz`` answers 200; `TunesmithError` with the log's tail otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                raise TunesmithError(f"replica {self.index} exited at start:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TunesmithError(
            f"replica {self.index} not healthy in {timeout:g} s:\n{self.log_tail()}"
        )

    def sample_rss(self) -> None:
        """Keep the process's peak resident set (VmHWM) while it runs."""
        if self._proc is None:
            return
        try:
            status = Path(f"/proc/{self._proc.pid}/status").read_text()
        except OSError:
            return
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                self.peak_rss_kb = max(self.peak_rss_kb, int(line.split()[1]))

    def terminate(self, timeout: float) -> tuple[int | None, float]:
        """SIGTERM, then wait up to `timeout` s (SIGKILL past it): ``(status, seconds)``,
        status None when it had to be killed."""
        if self._proc is None or self._proc.poll() is not None:
            return (self._proc.returncode if self._proc else None), 0.0
        self.sample_rss()
        began = time.monotonic()
        self._proc.send_signal(signal.SIGTERM)
        try:
            self.returncode = self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=30)
            return None, time.monotonic() - began
        return self.returncode, time.monotonic() - began

    def kill(self) -> None:
        if self.alive:
            assert self._proc is not None
            self._proc.kill()
            self._proc.wait(timeout=30)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def shut_down_cleanly(self) -> bool:
        """The server's log says its lifespan finished (uvicorn's last lines)."""
        text = self.log_text()
        return "Application shutdown complete" in text and "Traceback" not in text


class Load:
    """`clients` threads, client i sending POST /generate to ``targets[i % len]`` in a loop,
    until `stop`. A 503 or 429 waits out its Retry-After (at most a second) before the next."""

    def __init__(
        self,
        phase: str,
        targets: list[Replica],
        clients: int,
        durations: list[float],
        clock: Callable[[], float],
        seed: int = 0,
    ) -> None:
        self.phase = phase
        self.targets = targets
        self.durations = durations
        self.clock = clock
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, args=(i, seed), daemon=True)
            for i in range(clients)
        ]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, timeout: float = 330.0) -> None:
        """Let each client finish the request it has sent, then end."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)

    def _client(self, index: int, seed: int) -> None:
        replica = self.targets[index % len(self.targets)]
        rng = random.Random(f"{seed}-{self.phase}-{index}")
        with httpx.Client(base_url=replica.url, timeout=REQUEST_TIMEOUT) as http:
            while not self._stop.is_set():
                duration = rng.choice(self.durations)
                body = {
                    "prompt": rng.choice(PROMPTS),
                    "duration": duration,
                    "seed": rng.randrange(2**31),
                }
                outcome = self._send(http, replica.index, body)
                with self._lock:
                    self.outcomes.append(outcome)
                if outcome.status is None:
                    self._stop.wait(0.2)  # refused: the server is down or stopping
                elif outcome.status in (429, 503):
                    self._stop.wait(min(_MAX_BACKOFF, outcome.retry_after or _MAX_BACKOFF))

    def _send(self, http: httpx.Client, replica: int, body: dict[str, Any]) -> Outcome:
        sent = self.clock()
        try:
            response = http.post("/generate", json=body)
        except httpx.TransportError as exc:
            seconds = self.clock() - sent
            return Outcome(
                self.phase, replica, sent, seconds, body["duration"], None,
                type(exc).__name__, None, False,
            )  # fmt: skip
        seconds = self.clock() - sent
        parsed: dict[str, Any] | None = None
        is_json = response.headers.get("content-type", "").startswith("application/json")
        if is_json:
            try:
                value = response.json()
                parsed = value if isinstance(value, dict) else None
            except ValueError:
                parsed = None
            is_json = parsed is not None
        error = None if parsed is None or response.status_code == 200 else parsed.get("error")
        retry = response.headers.get("retry-after", "")
        return Outcome(
            self.phase, replica, sent, seconds, body["duration"], response.status_code,
            str(error) if error is not None else None, parsed, is_json,
            float(retry) if retry.isdigit() else None,
        )  # fmt: skip


# -- verification --------------------------------------------------------------------------------


@dataclass
class Expected:
    """A track a 200 (or a succeeded job) named: where it is and how long it must be."""

    key: str
    public_url: str
    metadata_url: str
    duration: float


def expected_track(body: dict[str, Any], bucket: str) -> Expected:
    key = str(body["s3_url"]).removeprefix(f"s3://{bucket}/")
    return Expected(key, body["public_url"], body["metadata_url"], float(body["duration"]))


def _check_track(track: Expected) -> str | None:
    """None when the audio decodes to its length and its record names it; else what is wrong."""
    with httpx.Client(timeout=30) as http:
        audio = http.get(track.public_url)
        if audio.status_code == 404:
            return "lost"
        if audio.status_code != 200:
            return f"corrupt: GET answered {audio.status_code}"
        try:
            samples, rate = soundfile.read(io.BytesIO(audio.content))
        except Exception as exc:  # libsndfile says what it could not read
            return f"corrupt: {exc}"
        want = round(track.duration * SAMPLE_RATE)
        if rate != SAMPLE_RATE or len(samples) != want:
            return f"corrupt: {len(samples)} frames at {rate} Hz, not {want} at {SAMPLE_RATE}"
        meta = http.get(track.metadata_url)
        try:
            record = meta.json() if meta.status_code == 200 else None
        except ValueError:
            record = None
        if not isinstance(record, dict) or record.get("audio_key") != track.key:
            return f"no record: GET {track.metadata_url} answered {meta.status_code}"
    return None


def list_keys(client: S3Client, bucket: str) -> list[str]:
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return keys


def verify_bucket(
    client: S3Client, bucket: str, tracks: list[Expected], job_ids: list[str]
) -> dict[str, Any]:
    """Every expected track whole with its record beside it, and nothing else in the bucket
    (job records for `job_ids` aside)."""
    keys = set(list_keys(client, bucket))
    with ThreadPoolExecutor(8) as pool:
        problems = list(pool.map(_check_track, tracks))
    bad = {t.key: p for t, p in zip(tracks, problems, strict=True) if p is not None}
    named = {t.key for t in tracks}
    named |= {t.key.rsplit(".", 1)[0] + ".json" for t in tracks}
    named |= {f"{JOB_PREFIX}{job}.json" for job in job_ids}
    orphaned = sorted(keys - named)
    ids = [t.key for t in tracks]
    return {
        "tracks": len(tracks),
        "whole": len(tracks) - len(bad),
        "lost": sorted(k for k, p in bad.items() if p == "lost"),
        "corrupt": {k: p for k, p in bad.items() if p.startswith("corrupt")},
        "no_record": {k: p for k, p in bad.items() if p.startswith("no record")},
        "orphaned": orphaned,
        "duplicate_ids": sorted(k for k, n in Counter(ids).items() if n > 1),
        "job_records": len([j for j in job_ids if f"{JOB_PREFIX}{j}.json" in keys]),
        "objects": len(keys),
    }


def passed(verification: dict[str, Any]) -> bool:
    return not any(
        verification[name] for name in ("lost", "corrupt", "no_record", "orphaned", "duplicate_ids")
    )


def rss_sampler(replicas: list[Replica], stop: threading.Event) -> threading.Thread:
    """A thread keeping each replica's peak RSS every half second until `stop`."""

    def sample() -> None:
        while not stop.wait(0.5):
            for replica in replicas:
                replica.sample_rss()

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    return thread


def serve_env(base: dict[str, str], workdir: Path, settings: dict[str, str]) -> dict[str, str]:
    """This process's environment without TUNESMITH_* and AWS_* (and ~/.aws ignored), plus
    `base` (the S3 server's variables) and `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TUNESMITH_", "AWS_"))}
    env["AWS_CONFIG_FILE"] = str(workdir / "no-aws-config")
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(workdir / "no-aws-credentials")
    return {**env, **base, **settings}
