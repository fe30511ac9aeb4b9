"""A stand-in for the Hugging Face Hub on 127.0.0.1, serving one directory as one model repo.

It answers what `huggingface_hub` asks while finding and downloading a snapshot: the model's
info, its file tree, and each file's metadata (HEAD) and bytes (GET, sent in slow chunks, so a
download lasts long enough to draw its progress bar). Point ``HF_ENDPOINT`` at `url`.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import unquote, urlparse

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    """Serve `directory` as the model repo `repo`; use as a context manager."""

    def __init__(self, repo: str, directory: Path, chunk_delay: float = 0.03) -> None:
        self.repo = repo
        self.files = {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}
        self.chunk_delay = chunk_delay
        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                hub.answer(self, body=False)

            def do_GET(self) -> None:
                hub.answer(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, handler: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlparse(handler.path).path)
        self.requests.append(f"{handler.command} {path}")
        api = f"/api/models/{self.repo}"
        if path in (api, f"{api}/revision/main", f"{api}/revision/{COMMIT}"):
            siblings = [{"rfilename": name} for name in self.files]
            self.json(handler, {"id": self.repo, "sha": COMMIT, "siblings": siblings}, body)
        elif path.startswith(f"{api}/tree/"):
            tree = [
                {"type": "file", "path": name, "size": len(data), "oid": _blob_id(data)}
                for name, data in self.files.items()
            ]
            self.json(handler, tree, body)
        elif path.startswith(f"/{self.repo}/resolve/"):
            name = path.rsplit("/", 1)[1]
            if name not in self.files:
                self.send(handler, 404, b"", {"X-Error-Code": "EntryNotFound"}, body)
                return
            data = self.files[name]
            headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{_blob_id(data)}"'}
            self.send(handler, 200, data, headers, body, slow=True)
        else:
            self.send(handler, 404, b"{}", {"X-Error-Code": "RepoNotFound"}, body)

    def json(self, handler: BaseHTTPRequestHandler, value: object, body: bool) -> None:
        data = json.dumps(value).encode()
        self.send(handler, 200, data, {"Content-Type": "application/json"}, body)

    def send(
        self,
        handler: BaseHTTPRequestHandler,
        status: int,
        data: bytes,
        headers: dict[str, str],
        body: bool,
        slow: bool = False,
    ) -> None:
        handler.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(data))}.items():
            handler.send_header(name, value)
        handler.end_headers()
        if not body:
            return
        step = 16 * 1024 if slow else len(data) or 1
        for start in range(0, len(data), step):
            handler.wfile.write(data[start : start + step])
            handler.wfile.flush()
            if slow:
                time.sleep(self.chunk_delay)


def _blob_id(data: bytes) -> str:
    """git's object id for a blob, as the Hub reports for a file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
