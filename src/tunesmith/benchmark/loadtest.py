"""``tunesmith loadtest``: ``tunesmith serve`` under concurrent load and faults, on loopback,
with every stored object checked afterwards.

It starts its own SeaweedFS S3 server (`tunesmith.testing.seaweed`) and `--replicas`
``tunesmith serve`` processes on one bucket, with a tiny random MusicGen unless `--model`:

1. load: `--clients` threads POST /generate (short tracks) for `--seconds`, spread over the
   replicas; a 503 or 429 waits out its Retry-After (at most a second) before the next;
2. jobs: POST /jobs on one replica, GET /jobs/{id} on another until it has succeeded;
3. with `--faults`, S3 is killed mid-load and restarted on the same data and port: meanwhile
   every answer must be a track or a JSON error, and the replicas must serve again after, with
   no restart; then replica 0 gets SIGTERM mid-load and must finish (or cleanly fail) what it
   holds within its grace period and exit;
4. the bucket is checked: every 200's track decodes to its length with its record beside it,
   and nothing else is there (no partial or orphaned object).

It prints a summary and ends with one JSON line of every figure. Exit status 1 when an object
was lost, corrupt or orphaned, a response was a 500 or not JSON, a replica did not recover
from the outage or shut down cleanly, or a job did not succeed; 2 when it could not start.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tunesmith.benchmark.load import (
    Load,
    Outcome,
    Replica,
    expected_track,
    passed,
    percentile,
    rss_sampler,
    serve_env,
    tally,
    verify_bucket,
)
from tunesmith.benchmark.loadreport import say as _say
from tunesmith.benchmark.loadreport import summary
from tunesmith.errors import TunesmithError
from tunesmith.testing.seaweed import SeaweedS3

__all__ = ["main", "run"]

BUCKET = "tunesmith-loadtest"
_STARTUP = 180.0  # seconds a replica may take to load the model (slow on a busy machine)
_TRACK_FIELDS = {"s3_url", "public_url", "metadata_url", "duration"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tunesmith loadtest",
        description="Load and faults against tunesmith serve replicas on one S3 bucket (all on "
        "loopback), then a check of every stored object. Exit status 1 when a check failed.",
    )
    add = parser.add_argument
    add("--clients", type=int, default=8, help="concurrent clients (default 8)")
    add("--seconds", type=float, default=30.0, help="length of the load phase (default 30)")
    add("--replicas", type=int, default=1, help="serve processes on one bucket (default 1)")
    add("--faults", action="store_true", help="also kill S3 mid-load, then SIGTERM replica 0")
    add("--durations", default="1,2,3", help="track lengths to ask for, s (default 1,2,3)")
    add("--model", help="checkpoint directory (default: a tiny random MusicGen, cached)")
    add("--device", default="cpu", help="TUNESMITH_DEVICE of the replicas (default cpu)")
    # small bounds, so a few clients more than they admit show the 503s
    add("--max-queue", type=int, default=2, help="TUNESMITH_MAX_QUEUE per replica (2)")
    add("--max-waiting", type=int, default=1, help="TUNESMITH_MAX_WAITING per replica (1)")
    add("--queue-timeout", type=float, default=10.0, help="TUNESMITH_QUEUE_TIMEOUT, s (10)")
    add("--rate-limit", type=float, help="TUNESMITH_RATE_LIMIT, requests a minute (default off)")
    add("--grace", type=float, default=10.0, help="TUNESMITH_SHUTDOWN_GRACE, s (default 10)")
    add("--outage", type=float, default=5.0, help="seconds S3 stays down (default 5)")
    add("--threads", type=int, help="torch threads per replica (default: CPUs / replicas)")
    add("--seed", type=int, default=0, help="seeds the clients' prompts, lengths and seeds")
    return parser


class Run:
    """One load test: the S3 server, the replicas, and the outcomes of every phase."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.durations = [float(d) for d in args.durations.split(",") if d.strip()]
        self.s3 = SeaweedS3()
        self.replicas: list[Replica] = []
        self.outcomes: list[Outcome] = []
        self.phases: dict[str, dict[str, Any]] = {}
        self.problems: list[str] = []
        self.warm_tracks: list[dict[str, Any]] = []
        self.timings: dict[str, float] = {}
        self.began = time.monotonic()

    def clock(self) -> float:
        return time.monotonic() - self.began

    # -- setup ---------------------------------------------------------------------------------

    def start(self) -> None:
        began = time.monotonic()
        self.s3.start()
        self.s3.create_bucket(BUCKET)
        self.timings["s3_start_s"] = round(time.monotonic() - began, 2)
        settings = {
            "TUNESMITH_STORAGE": "s3",
            "TUNESMITH_S3_BUCKET": BUCKET,
            "TUNESMITH_MODEL": self.model(),
            "TUNESMITH_DEVICE": self.args.device,
            "TUNESMITH_MAX_QUEUE": str(self.args.max_queue),
            "TUNESMITH_MAX_WAITING": str(self.args.max_waiting),
            "TUNESMITH_QUEUE_TIMEOUT": str(self.args.queue_timeout),
            "TUNESMITH_SHUTDOWN_GRACE": str(self.args.grace),
            "TUNESMITH_MAX_DURATION": str(max(30.0, *self.durations)),
            "OMP_NUM_THREADS": str(self.threads),
        }
        if self.args.rate_limit is not None:
            settings["TUNESMITH_RATE_LIMIT"] = str(self.args.rate_limit)
        env = serve_env(self.s3.env(), self.workdir, settings)
        self.replicas = [Replica(i, env, self.workdir) for i in range(self.args.replicas)]
        for replica in self.replicas:
            replica.start()
        began = time.monotonic()
        for replica in self.replicas:
            replica.wait_ready(_STARTUP)
        self.timings["replicas_ready_s"] = round(time.monotonic() - began, 2)
        began = time.monotonic()
        self.warm_up()
        self.timings["warm_up_s"] = round(time.monotonic() - began, 2)

    def warm_up(self) -> None:
        """One short track per replica, so the first decode's one-off costs stay out of the
        load's latencies (the tracks are checked with the rest)."""
        for replica in self.replicas:
            body = {"prompt": "warm up", "duration": min(self.durations), "seed": 0}
            answer = httpx.post(f"{replica.url}/generate", json=body, timeout=120)
            if answer.status_code != 200:
                raise TunesmithError(
                    f"replica {replica.index}'s first track failed: {answer.status_code} "
                    f"{answer.text}\n{replica.log_tail()}"
                )
            self.warm_tracks.append(answer.json())

    @property
    def threads(self) -> int:
        return int(self.args.threads or max(1, (os.cpu_count() or 1) // self.args.replicas))

    def model(self) -> str:
        if self.args.model:
            return str(self.args.model)
        from tunesmith.testing.random_model import cached_random_musicgen

        path, _ = cached_random_musicgen("tiny")
        return str(path)

    def close(self) -> None:
        for replica in self.replicas:
            replica.kill()
        self.s3.stop()

    # -- phases --------------------------------------------------------------------------------

    def load(self, phase: str, during: Callable[[Load], dict[str, Any] | None]) -> None:
        """Run the clients over the live replicas while `during(load)` runs, then record."""
        targets = [r for r in self.replicas if r.alive]
        began = self.clock()
        load = Load(phase, targets, self.args.clients, self.durations, self.clock, self.args.seed)
        with load:
            figures = during(load) or {}
        ended = self.clock()
        self.outcomes += load.outcomes
        self.phases[phase] = {**self._figures(load.outcomes, ended - began), **figures}

    def _figures(self, outcomes: list[Outcome], wall: float) -> dict[str, Any]:
        served = [o for o in outcomes if o.status == 200]
        latencies = [o.seconds for o in served]
        return {
            "seconds": round(wall, 2),
            "sent": len(outcomes),
            "served": len(served),
            "answers": tally(outcomes),
            "p50_s": rounded(percentile(latencies, 0.50)),
            "p99_s": rounded(percentile(latencies, 0.99)),
            "tracks_per_s": round(len(served) / wall, 3) if wall else None,
            "audio_s_per_s": round(sum(o.duration for o in served) / wall, 3) if wall else None,
        }

    def steady(self) -> None:
        self.load("load", lambda load: time.sleep(self.args.seconds))

    def s3_outage(self) -> None:
        from tunesmith.benchmark.loadfaults import s3_outage

        s3_outage(self)

    def sigterm(self) -> None:
        from tunesmith.benchmark.loadfaults import sigterm

        sigterm(self)

    def check_exit(self, replica: Replica, status: int | None, when: str) -> None:
        # uvicorn re-raises the SIGTERM it caught once it has shut down, so the process ends
        # "killed by SIGTERM" (-15) after a clean shutdown; 0 is as good
        if status not in (0, -signal.SIGTERM) or not replica.shut_down_cleanly():
            self.problems.append(
                f"replica {replica.index} ({when}) exited with status {status}, "
                f"not after a clean shutdown:\n{replica.log_tail()}"
            )

    def jobs(self) -> list[dict[str, Any]]:
        """A job submitted on each replica, followed on the next one until it has finished."""
        count = len(self.replicas)
        ran: list[dict[str, Any]] = []
        for a in range(count):
            submit, poll = self.replicas[a], self.replicas[(a + 1) % count]
            body = {"prompt": "jazz trio with brushed drums", "duration": self.durations[0]}
            began = time.monotonic()
            answer = httpx.post(f"{submit.url}/jobs", json={**body, "seed": a}, timeout=60)
            if answer.status_code != 202:
                self.problems.append(f"POST /jobs answered {answer.status_code}: {answer.text}")
                continue
            job = answer.json()
            seen: list[str] = []
            while time.monotonic() - began < 120:
                got = httpx.get(f"{poll.url}/jobs/{job['id']}", timeout=30)
                job = got.json() if got.status_code == 200 else job
                if got.status_code == 200 and (not seen or seen[-1] != job["status"]):
                    seen.append(job["status"])
                if job["status"] in ("succeeded", "failed", "canceled"):
                    break
                time.sleep(0.2)
            ran.append(
                {
                    "id": job["id"],
                    "submitted_on": submit.index,
                    "polled_on": poll.index,
                    "statuses_seen": seen,
                    "status": job["status"],
                    "seconds": round(time.monotonic() - began, 2),
                    "result": job.get("result"),
                }
            )
            if job["status"] != "succeeded":
                self.problems.append(f"job {job['id']} ended {job['status']}: {job.get('error')}")
        return ran

    def finish(self) -> None:
        for replica in self.replicas:
            if replica.alive:
                status, _ = replica.terminate(self.args.grace + 30)
                self.check_exit(replica, status, "at the end")


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole load test; its figures (``problems`` empty when it passed)."""
    from tunesmith.benchmark.machine import describe

    workdir = Path(tempfile.mkdtemp(prefix="tunesmith-loadtest-"))
    test = Run(args, workdir)
    timings = test.timings
    stop = threading.Event()
    try:
        _say("starting S3 and the replicas ...")
        test.start()
        sampler = rss_sampler(test.replicas, stop)
        _say(f"load: {args.clients} clients for {args.seconds:g} s ...")
        test.steady()
        _say("jobs across replicas ...")
        jobs = test.jobs()
        if args.faults:
            _say(f"faults: S3 killed for {args.outage:g} s mid-load ...")
            test.s3_outage()
            _say("faults: SIGTERM to replica 0 mid-load ...")
            test.sigterm()
        test.finish()
        stop.set()
        sampler.join()
        began = time.monotonic()
        machine = describe()  # now that the replicas are gone, they do not slow its reads
        timings["machine_s"] = round(time.monotonic() - began, 2)
        tracks = [expected_track(body, BUCKET) for body in test.warm_tracks]
        served = [o.body for o in test.outcomes if o.status == 200]
        named = [body for body in served if body and body.keys() >= _TRACK_FIELDS]
        if len(named) < len(served):
            test.problems.append(f"{len(served) - len(named)} 200s did not describe a track")
        tracks += [expected_track(body, BUCKET) for body in named]
        tracks += [expected_track(j["result"], BUCKET) for j in jobs if j["result"]]
        began = time.monotonic()
        verification = verify_bucket(test.s3.client(), BUCKET, tracks, [j["id"] for j in jobs])
        timings["verify_s"] = round(time.monotonic() - began, 2)
    finally:
        stop.set()
        test.close()
    problems = test.problems
    errors = [o for o in test.outcomes if o.status is not None and o.status >= 500]
    if n500 := sum(1 for o in errors if o.status == 500):
        problems.append(f"{n500} responses were 500")
    if not_json := sum(1 for o in test.outcomes if o.status is not None and not o.clean):
        problems.append(f"{not_json} responses were not JSON (or an error without its code)")
    if not passed(verification):
        problems.append("storage verification failed: " + json.dumps(
            {k: verification[k] for k in ("lost", "corrupt", "no_record", "orphaned")}
        ))  # fmt: skip
    if problems:  # the replicas' logs say what happened
        _say(f"logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    settings = {**vars(args), "durations": test.durations, "threads": test.threads}
    settings["model_name"] = args.model or "tiny random MusicGen"
    return {
        "settings": settings,
        "machine": machine,
        "phases": test.phases,
        "peak_rss_kb": {str(r.index): r.peak_rss_kb for r in test.replicas},
        "jobs": [{k: v for k, v in j.items() if k != "result"} for j in jobs],
        "verification": verification,
        "timings": timings,
        "problems": problems,
        "passed": not problems,
    }


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.clients < 1 or args.replicas < 1 or args.seconds <= 0:
        _parser().error("--clients and --replicas must be at least 1, --seconds positive")
    for noisy in ("botocore", "httpx", "httpcore"):  # a line per request otherwise
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        figures = run(args)
    except (TunesmithError, RuntimeError, FileNotFoundError) as exc:
        print(f"tunesmith loadtest: could not run: {exc}", flush=True)
        return 2
    summary(figures)
    _say(json.dumps(figures))
    return 0 if figures["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
