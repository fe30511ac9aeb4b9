"""A real uvicorn server on 127.0.0.1 in a background thread, for HTTP tests; and the API
served that way with local storage (`serve`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from tunesmith.api import create_app
from tunesmith.config import load_settings
from tunesmith.engine import MusicGenEngine
from tunesmith.storage import LocalStorage


class LiveServer:
    """Serve `app` on a free loopback port; use as a context manager."""

    def __init__(self, app: FastAPI) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.base_url = ""

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def stored_files(root: Path) -> list[Path]:
    """Every file under the storage root, temporary ones included."""
    return sorted(p for p in root.rglob("*") if p.is_file())


def track_files(root: Path, track_id: str, fmt: str) -> list[Path]:
    """What storing one track leaves: its audio and its record beside it."""
    return sorted(root / "music-output" / f"{track_id}.{ext}" for ext in (fmt, "json"))


class Api:
    """A running server plus its storage directory."""

    def __init__(self, base_url: str, root: Path) -> None:
        self.base_url = base_url
        self.root = root
        self.app: FastAPI | None = None  # set by `serve_models`, to reach its model pool
        self.client = httpx.Client(base_url=base_url, timeout=120)

    def generate(self, body: Any = None, **kwargs: Any) -> httpx.Response:
        if body is not None:
            kwargs["json"] = body
        return self.client.post("/generate", **kwargs)


@contextmanager
def serve(tmp_path: Path, engine: MusicGenEngine, **settings: Any) -> Iterator[Api]:
    root = tmp_path / "tracks"
    config = load_settings(model=engine.model_name, local_dir=root, **settings)
    app = create_app(config, engine=engine, storage=LocalStorage(root))
    with LiveServer(app) as server:
        yield Api(server.base_url, root)


@contextmanager
def serve_models(tmp_path: Path, checkpoints: list[Path], **settings: Any) -> Iterator[Api]:
    """Serve several checkpoints (the first the default), each loaded by the server itself."""
    root = tmp_path / "tracks"
    names = ",".join(str(path) for path in checkpoints)
    config = load_settings(model=names, device="cpu", local_dir=root, **settings)
    app = create_app(config, storage=LocalStorage(root))
    with LiveServer(app) as server:
        api = Api(server.base_url, root)
        api.app = app
        yield api
