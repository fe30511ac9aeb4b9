"""The storage interface every backend implements, and how object keys are made."""

from __future__ import annotations

import re
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass

__all__ = ["KEY_PATTERN", "PREFIX_PATTERN", "Storage", "StoredObject", "StoredTrack", "new_key"]

# What `new_key` produces: an optional prefix of safe path segments, 32 hex chars, an extension.
# A segment never starts with a dot, so "." and ".." (and hidden names) are not keys. Match
# with `fullmatch` (``$`` alone admits a trailing newline).
PREFIX_PATTERN = re.compile(r"(?:[A-Za-z0-9_-][A-Za-z0-9._-]*/)*")
KEY_PATTERN = re.compile(PREFIX_PATTERN.pattern + r"[0-9a-f]{32}\.[a-z0-9]{2,5}")


def new_key(prefix: str, extension: str) -> str:
    """An unguessable object key: ``<prefix><uuid4 hex>.<extension>`` (122 random bits)."""
    return f"{prefix}{uuid.uuid4().hex}.{extension}"


@dataclass(frozen=True)
class StoredTrack:
    """Where a stored object can be found."""

    key: str
    s3_url: str | None  # s3://bucket/key, or None for local storage
    public_url: str  # a URL a client can GET the object from


@dataclass(frozen=True)
class StoredObject:
    """An object a listing found: its key, when it was last written (epoch s), its size."""

    key: str
    modified: float
    size: int


class Storage(ABC):
    """An object store for finished tracks.

    `put` is atomic: either the whole object is stored under `key`, or nothing is (no partial
    object, no temporary file left behind), and it raises `tunesmith.errors.StorageError`.
    """

    name: str

    @abstractmethod
    def put(self, key: str, data: bytes, content_type: str, *, replace: bool = False) -> None:
        """Store `data` under `key` with the given Content-Type, atomically.

        `replace`: the key may hold an older object (a job record being updated), which a
        failed write must leave in place rather than remove."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The object under `key`; `NotFound` when there is none."""

    @abstractmethod
    def list(self, prefix: str) -> list[StoredObject]:
        """Every object whose key starts with `prefix` (a folder such as ``music-output/``)."""

    @abstractmethod
    def locate(self, key: str, *, base_url: str | None = None) -> StoredTrack:
        """The URLs of `key`. `base_url` is where clients reach this server (local storage)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove `key` if present (no error when absent)."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether an object is stored under `key`."""

    def check(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Fail fast at start (`StorageError`) when the backend cannot be used."""
