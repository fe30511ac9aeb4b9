"""``tunesmith serve``: the HTTP API with the engine in-process, under uvicorn."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from tunesmith.cli.flags import SERVE_SETTINGS, settings_from
from tunesmith.errors import TunesmithError

__all__ = ["loopback", "serve"]

log = logging.getLogger("tunesmith")


def _json_access_log() -> None:
    """One JSON object per request on stderr (`tunesmith.api.observe`), in place of
    uvicorn's own access lines."""
    access = logging.getLogger("tunesmith.access")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    access.propagate = False


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from tunesmith.api import create_app
    from tunesmith.api.server import run_until_stopped
    from tunesmith.engine.checkpoint import checkpoint_dir
    from tunesmith.storage import create_storage

    settings = settings_from(args, SERVE_SETTINGS)
    storage = create_storage(settings)
    storage.check()  # an unusable directory or bucket stops here, before the port opens
    # so does a model this machine has not got and cannot download; a download shows its bar
    for checkpoint in settings.models.values():
        checkpoint_dir(checkpoint)
    app = create_app(settings, storage=storage)
    _json_access_log()
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        access_log=False,
        # past our own grace (below), in-flight requests have failed with a clean 503
        timeout_graceful_shutdown=round(settings.shutdown_grace) + 10,
    )
    if not loopback(settings.host) and not app.state.tunesmith.keys.required:
        log.warning(
            "serving on %s with no API key: anyone who reaches it can spend its compute and "
            "list its tracks (set TUNESMITH_API_KEY or TUNESMITH_API_KEYS_FILE)",
            settings.host,
        )
    state = app.state.tunesmith

    def stop_on_load_failure(server: Any) -> None:
        state.on_load_failure = lambda: setattr(server, "should_exit", True)

    log.info(
        "loading %s (serving %s); http://%s:%d (docs at /docs)",
        settings.default_model,
        ", ".join(settings.models),
        settings.host,
        settings.port,
    )
    # uvicorn stops taking requests; those in flight get TUNESMITH_SHUTDOWN_GRACE to finish
    code = run_until_stopped(
        config,
        on_exit=lambda: state.service.stop(settings.shutdown_grace),
        on_start=stop_on_load_failure,
    )
    if state.load_error is not None:
        raise TunesmithError(state.load_error)
    return code


def loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
