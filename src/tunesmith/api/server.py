"""uvicorn run until a signal stops it, for ``tunesmith serve`` and ``tunesmith endpoint``."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

__all__ = ["run_until_stopped"]


def run_until_stopped(
    config: Any,
    on_exit: Callable[[], None] | None = None,
    on_start: Callable[[Any], None] | None = None,
) -> int:
    """Serve `config` (a ``uvicorn.Config``) until SIGINT or SIGTERM and return the exit status
    a shell expects (130 for Ctrl-C). `on_start` gets the server before it runs (to stop it
    early through ``should_exit``); `on_exit` is called as each signal comes.

    uvicorn re-raises the signal once it has shut down, which ends the process the usual way;
    a process that inherited the signal ignored (a background job of a non-interactive shell)
    would instead return 0, so the status is made explicit here.
    """
    import uvicorn

    class Server(uvicorn.Server):
        stopped_by: int | None = None

        def handle_exit(self, sig: int, frame: Any) -> None:
            if self.stopped_by is None:
                self.stopped_by = sig
            if on_exit is not None:
                on_exit()
            super().handle_exit(sig, frame)

    server = Server(config)
    if on_start is not None:
        on_start(server)
    server.run()
    return 0 if server.stopped_by is None else 128 + signal.Signals(server.stopped_by).value
