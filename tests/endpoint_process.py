"""``tunesmith endpoint`` as SageMaker runs it: a real process, ``serve`` argument included.

    with EndpointProcess(model_dir, env={"TUNESMITH_MAX_DURATION": "20"}) as endpoint:
        httpx.post(f"{endpoint.url}/invocations", ...)

It listens on 127.0.0.1 at the port given in ``SAGEMAKER_BIND_TO_PORT`` (SageMaker's variable),
and is stopped with SIGINT; `output` holds what it printed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx

from s3server import free_ports

__all__ = ["EndpointProcess", "clean_env"]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without TUNESMITH_* and SAGEMAKER_* settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TUNESMITH_", "SAGEMAKER_"))}
    return {**env, **extra}


class EndpointProcess:
    """One ``tunesmith endpoint serve`` process on a free loopback port.

    `argv` is the ``tunesmith`` command line (run as ``python -m tunesmith.cli``); `env` adds to
    (or overrides) the variables that point it at `model` and the port.
    """

    def __init__(
        self,
        model: Path | str,
        *,
        argv: tuple[str, ...] = ("endpoint", "serve"),
        env: dict[str, str] | None = None,
        startup_timeout: float = 120,
    ) -> None:
        self.port = free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [sys.executable, "-m", "tunesmith.cli", *argv]
        defaults = {
            "TUNESMITH_MODEL": str(model),
            "TUNESMITH_DEVICE": "cpu",
            "SAGEMAKER_BIND_TO_PORT": str(self.port),
        }
        self.env = clean_env(**(defaults | (env or {})))
        self.startup_timeout = startup_timeout
        self.output = ""
        self.returncode: int | None = None
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> EndpointProcess:
        self._proc = subprocess.Popen(
            self.command,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self._proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"tunesmith endpoint exited at start:\n{self.output}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"tunesmith endpoint never became healthy:\n{self.output}")
            try:
                if httpx.get(f"{self.url}/ping", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)

    def stop(self) -> int:
        """Stop with SIGINT (as ``docker stop`` would, gracefully) and return the exit status."""
        proc, self._proc = self._proc, None
        if proc is None:
            return self.returncode or 0
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        self.output += out or ""
        self.returncode = proc.returncode
        return proc.returncode

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
