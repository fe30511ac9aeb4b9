"""What each command prints besides its own output.

Servers log at INFO with timestamps. One-shot commands (generate, download, kernels) print
their own lines and bars, and of the logs only tunesmith's warnings; ``-v`` shows everything.
The model libraries' chatter (transformers' config warnings and weight-loading bar,
huggingface_hub's own handler, which printed each warning a second time) is kept out unless
``-v``.
"""

from __future__ import annotations

import logging
import os

__all__ = ["setup_logging"]

STAMPED = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _Plain(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"tunesmith: {record.levelname.lower()}: {record.getMessage()}"


def setup_logging(command: str, verbose: bool) -> None:
    if command in ("bench", "loadtest") or verbose:  # their reports carry their own logs
        logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=STAMPED)
        _one_hub_handler()
        return
    server = command in ("serve", "endpoint")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(STAMPED) if server else _Plain())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("tunesmith").setLevel(logging.INFO if server else logging.WARNING)
    # read when transformers is first imported, which happens later, when a model loads
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "warning" if server else "error")
    from huggingface_hub.utils.tqdm import disable_progress_bars

    disable_progress_bars()  # transformers' "Loading weights" bar follows this switch
    _one_hub_handler().setLevel(logging.WARNING if server else logging.ERROR)


def _one_hub_handler() -> logging.Logger:
    """huggingface_hub's logger, printing through ours only."""
    import huggingface_hub.utils.logging  # noqa: F401 - adds its handler, removed here

    hub = logging.getLogger("huggingface_hub")
    hub.handlers.clear()
    hub.propagate = True
    return hub
