"""The HTTP API (FastAPI): `create_app` builds it."""

from tunesmith.api.app import AppState, create_app

__all__ = ["AppState", "create_app"]
