"""What the routes share: settings, the track and job services, what to do if loading fails."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from tunesmith.api.auth import ApiKeys, RateLimit
from tunesmith.api.observe import Metrics
from tunesmith.config import Settings
from tunesmith.jobs import JobManager
from tunesmith.service import TrackService

__all__ = ["AppState"]


@dataclass
class AppState:
    """What the routes need, kept on ``app.state.tunesmith``."""

    settings: Settings
    service: TrackService
    jobs: JobManager
    metrics: Metrics
    keys: ApiKeys
    rate: RateLimit
    on_load_failure: Callable[[], None] | None = field(default=None, repr=False)

    @property
    def load_error(self) -> str | None:
        """Why the default model could not be loaded, once it could not."""
        return self.service.models.default.load_error

    def load_failed(self) -> None:
        """Called from the loader thread when the default model cannot be loaded."""
        if self.on_load_failure is not None:
            self.on_load_failure()
