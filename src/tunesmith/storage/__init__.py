"""Where finished tracks go: local disk or S3-compatible object storage.

`create_storage` picks the backend from `Settings.storage`. Importing this package never imports
boto3; `S3Storage` needs it (the ``[aws]`` extra) only when one is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tunesmith.errors import ConfigError
from tunesmith.storage.base import KEY_PATTERN, Storage, StoredObject, StoredTrack, new_key
from tunesmith.storage.local import LocalStorage
from tunesmith.storage.s3 import S3Storage

if TYPE_CHECKING:
    from tunesmith.config import Settings

__all__ = [
    "KEY_PATTERN",
    "LocalStorage",
    "S3Storage",
    "Storage",
    "StoredObject",
    "StoredTrack",
    "create_storage",
    "new_key",
]


def create_storage(settings: Settings) -> Storage:
    """The storage backend `settings` select (``TUNESMITH_STORAGE``); no I/O happens here.

    Call `Storage.check` at start to fail fast on an unusable directory or bucket.
    """
    if settings.storage == "s3":
        if not settings.s3_bucket:
            raise ConfigError("TUNESMITH_S3_BUCKET is required when TUNESMITH_STORAGE=s3")
        return S3Storage(
            settings.s3_bucket,
            url_mode=settings.url_mode,
            presign_expires=settings.presign_expires,
        )
    return LocalStorage(settings.local_dir)
