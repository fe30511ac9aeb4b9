"""What the routes share: settings, the track service, the model loader's outcome."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from tunesmith.config import Settings
from tunesmith.errors import TunesmithError
from tunesmith.service import TrackService

__all__ = ["AppState"]

log = logging.getLogger(__name__)


@dataclass
class AppState:
    """What the routes need, kept on ``app.state.tunesmith``."""

    settings: Settings
    service: TrackService
    load_error: str | None = None
    loader: threading.Thread | None = field(default=None, repr=False)
    on_load_failure: Callable[[], None] | None = field(default=None, repr=False)

    def load_model(self) -> None:
        try:
            self.service.engine.setup()
        except TunesmithError as exc:
            self.load_error = exc.message
            log.error("model could not be loaded: %s", exc.message)
        except Exception as exc:  # a crash in a foreign loader must still be reported
            self.load_error = f"model could not be loaded: {exc}"
            log.exception("model could not be loaded")
        if self.load_error is not None and self.on_load_failure is not None:
            self.on_load_failure()
