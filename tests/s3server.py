"""A real S3 server for tests: SeaweedFS on loopback (`tunesmith.testing.seaweed`, which
`tunesmith loadtest` starts too), and `FaultyProxy` to cut or lose traffic on purpose.

    with SeaweedS3() as server:           # or server = SeaweedS3().start(); ...; server.stop()
        client = server.client()          # boto3 client with the test credentials
        server.create_bucket("tracks")
        os.environ.update(server.env())   # AWS_ENDPOINT_URL_S3 + credentials + region

The server enforces SigV4 authentication, so presigned URLs are really verified, and grants
anonymous *read* access, so an object's plain URL is fetchable like a public-read bucket's.
Buckets are never auto-created on upload. All data lives in a temporary directory removed by
`stop`.
"""

from __future__ import annotations

import contextlib
import socket
import threading

from tunesmith.testing.seaweed import (
    ACCESS_KEY,
    REGION,
    SECRET_KEY,
    SeaweedS3,
    find_weed,
    free_ports,
)

__all__ = [
    "ACCESS_KEY",
    "REGION",
    "SECRET_KEY",
    "FaultyProxy",
    "SeaweedS3",
    "find_weed",
    "free_ports",
]


class FaultyProxy:
    """A TCP proxy in front of the S3 server that breaks connections on purpose.

    `cut_request_after`: forward at most this many request bytes per connection, then close it
    (an upload cut mid-body). `drop_responses`: forward requests whole but close the connection
    instead of relaying the server's answer (``100 Continue`` still passes), so the server acts
    on a request whose outcome the client never learns.
    """

    def __init__(
        self, upstream_port: int, *, cut_request_after: int | None = None, drop_responses: bool
    ) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.cut_request_after = cut_request_after
        self.drop_responses = drop_responses
        self.forwarded = bytearray()  # every request byte that reached the server
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            threading.Thread(target=self._requests, args=(conn, upstream), daemon=True).start()
            threading.Thread(target=self._responses, args=(upstream, conn), daemon=True).start()

    def _requests(self, conn: socket.socket, upstream: socket.socket) -> None:
        sent = 0
        try:
            while chunk := conn.recv(65536):
                if self.cut_request_after is not None:
                    chunk = chunk[: max(0, self.cut_request_after - sent)]
                upstream.sendall(chunk)
                sent += len(chunk)
                with self._lock:
                    self.forwarded += chunk
                if self.cut_request_after is not None and sent >= self.cut_request_after:
                    break
        except OSError:
            pass
        _close(conn, upstream)

    def _responses(self, upstream: socket.socket, conn: socket.socket) -> None:
        try:
            while chunk := upstream.recv(65536):
                if self.drop_responses and not chunk.startswith(b"HTTP/1.1 100"):
                    break
                conn.sendall(chunk)
        except OSError:
            pass
        _close(conn, upstream)


def _close(*socks: socket.socket) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
