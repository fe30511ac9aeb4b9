"""``tunesmith loadtest``: a short run with faults and two replicas passes its own check of the
bucket and reports every figure; and that check does find lost, corrupt and orphaned objects."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from endpoint_process import clean_env
from s3server import SeaweedS3
from tunesmith.benchmark.load import Expected, passed, verify_bucket

pytestmark = pytest.mark.s3


def test_a_short_loadtest_with_faults_and_replicas_passes(tiny_model_dir: Path) -> None:
    command = [sys.executable, "-m", "tunesmith.cli", "loadtest", "--model", str(tiny_model_dir)]
    command += ["--clients", "2", "--seconds", "5", "--faults", "--replicas", "2", "--outage", "1"]
    done = subprocess.run(command, env=clean_env(), capture_output=True, text=True, timeout=400)

    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "result: PASS" in done.stdout and "machine:" in done.stdout
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["passed"] and figures["problems"] == []
    check = figures["verification"]
    assert check["tracks"] > 0 and check["whole"] == check["tracks"]
    assert check["lost"] == check["orphaned"] == [] and check["corrupt"] == {}
    assert check["job_records"] == 2
    phases = figures["phases"]
    assert list(phases) == ["load", "s3_outage", "sigterm"]
    load = phases["load"]
    assert load["served"] > 0 and 0 < load["p50_s"] <= load["p99_s"]
    assert set(load["answers"]) <= {"200", "503 overloaded", "429 rate_limited"}
    outage = phases["s3_outage"]
    assert set(outage["recovered_after_s"]) == {"0", "1"}  # both served again, no restart
    assert all(not k.startswith("500") for k in outage["answers"])
    term = phases["sigterm"]
    assert term["exit"] in (0, -15) and term["clean_shutdown"]
    assert "no answer" not in " ".join(term["in_flight_answers"])
    assert all(kb > 0 for kb in figures["peak_rss_kb"].values())
    assert len(figures["peak_rss_kb"]) == 2
    jobs = figures["jobs"]
    assert [(j["submitted_on"], j["polled_on"]) for j in jobs] == [(0, 1), (1, 0)]
    assert all(j["status"] == "succeeded" for j in jobs)
    assert "cpu" in figures["machine"]


def wav(seconds: float) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(round(seconds * 32000), dtype=np.float32), 32000, format="WAV")
    return buffer.getvalue()


def test_the_check_finds_lost_corrupt_and_orphaned_objects(
    s3_server: SeaweedS3, s3_bucket: str
) -> None:
    client = s3_server.client()
    base = f"{s3_server.endpoint_url}/{s3_bucket}/music-output"

    def track(name: str, audio: bytes | None, seconds: float = 1.0) -> Expected:
        key = f"music-output/{name}.wav"
        if audio is not None:
            client.put_object(Bucket=s3_bucket, Key=key, Body=audio)
            record = json.dumps({"audio_key": key}).encode()
            client.put_object(Bucket=s3_bucket, Key=f"music-output/{name}.json", Body=record)
        return Expected(key, f"{base}/{name}.wav", f"{base}/{name}.json", seconds)

    whole = track("whole", wav(1.0))
    assert passed(verify_bucket(client, s3_bucket, [whole], []))

    short = track("short", wav(1.0)[:20000])
    wrong = track("wrong", wav(2.0))
    gone = track("gone", None)
    client.put_object(Bucket=s3_bucket, Key="music-output/nobody.wav", Body=wav(1.0))
    client.put_object(Bucket=s3_bucket, Key="music-jobs/stray.json", Body=b"{}")
    client.put_object(Bucket=s3_bucket, Key="music-output/bare.wav", Body=wav(1.0))
    bare = Expected("music-output/bare.wav", f"{base}/bare.wav", f"{base}/bare.json", 1.0)

    check = verify_bucket(client, s3_bucket, [whole, short, wrong, gone, bare], ["job"])
    assert not passed(check)
    assert check["whole"] == 1
    assert check["lost"] == ["music-output/gone.wav"]
    assert set(check["corrupt"]) == {"music-output/short.wav", "music-output/wrong.wav"}
    assert set(check["no_record"]) == {"music-output/bare.wav"}
    assert check["orphaned"] == ["music-jobs/stray.json", "music-output/nobody.wav"]
    assert check["job_records"] == 0
