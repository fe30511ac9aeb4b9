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
    loader: threading.Thread | None = field(default=None, repr=False)
    on_load_failure: Callable[[], None] | None = field(default=None, repr=False)

    @property
    def load_error(self) -> str | None:
        return self.service.engine.load_error

    def load_model(self) -> None:
        """Load the engine (in the loader thread); a failure is logged and kept for /healthz."""
        try:
            self.service.engine.setup()
        except TunesmithError as exc:
            log.error("model could not be loaded: %s", exc.message)
            if self.on_load_failure is not None:
                self.on_load_failure()
