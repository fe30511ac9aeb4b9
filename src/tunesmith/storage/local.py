"""Local-disk storage: tracks are files under one root directory, served by ``GET /files/{key}``.

Writes are atomic: the bytes go to a temporary file in the destination directory, are fsynced,
and are renamed over the final name with `os.replace`, so a reader sees either the whole file or
no file. Keys are validated and resolved so that no key (``../x``, an absolute path, a symlink
pointing out of the root) can reach a file outside the root.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from urllib.parse import quote

from tunesmith.errors import NotFound, StorageError
from tunesmith.storage.base import KEY_PATTERN, PREFIX_PATTERN, Storage, StoredObject, StoredTrack

__all__ = ["LocalStorage"]

_TEMP_PREFIX = ".tmp-"
_FILE_MODE = 0o644


class LocalStorage(Storage):
    """Stores each track as ``<root>/<key>``."""

    name = "local"

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalStorage(root={str(self.root)!r})"

    # -- key resolution ------------------------------------------------------------------------

    def _resolve(self, key: str) -> Path | None:
        """The file `key` names inside the root, or None when the key is invalid or escapes it."""
        if not KEY_PATTERN.fullmatch(key):
            return None
        if any(part in (".", "..") for part in key.split("/")):
            return None
        try:
            root = self.root.resolve()
            path = (root / key).resolve()
        except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python < 3.13)
            return None
        if path == root or not path.is_relative_to(root):
            return None
        return path

    def path_for(self, key: str) -> Path:
        """The file stored under `key`, for serving it; `NotFound` if invalid or missing."""
        path = self._resolve(key)
        if path is None or not path.is_file():
            raise NotFound(f"no stored file under key {key!r}")
        return path

    # -- Storage interface ---------------------------------------------------------------------

    def put(self, key: str, data: bytes, content_type: str, *, replace: bool = False) -> None:
        """Write `data` to ``<root>/<key>`` atomically (temp file, fsync, rename): a failed
        write leaves any older file under the key as it was.

        `content_type` is not stored: the file extension carries it. Raises `ValueError` for a
        key that is not a valid storage key, `StorageError` when the write fails (no partial
        file and no temporary file are left behind).
        """
        path = self._resolve(key)
        if path is None:
            raise ValueError(f"invalid storage key {key!r}")
        tmp_name: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=_TEMP_PREFIX, suffix=".part")
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp_name, _FILE_MODE)
            os.replace(tmp_name, path)
            tmp_name = None
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise StorageError(f"could not write {key!r} under {self.root}: {reason}") from exc
        finally:
            if tmp_name is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp_name)
        _fsync_dir(path.parent)

    def locate(self, key: str, *, base_url: str | None = None) -> StoredTrack:
        """``public_url`` is ``{base_url}/files/{key}``; local tracks have no ``s3_url``."""
        if base_url is None:
            raise ValueError("local storage needs base_url (where clients reach this server)")
        return StoredTrack(
            key=key, s3_url=None, public_url=f"{base_url.rstrip('/')}/files/{quote(key)}"
        )

    def delete(self, key: str) -> None:
        """Remove the file under `key`; invalid or absent keys are a no-op."""
        path = self._resolve(key)
        if path is None:
            return
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise StorageError(f"could not delete {key!r} under {self.root}: {reason}") from exc

    def get(self, key: str) -> bytes:
        """The bytes of the file under `key`; `NotFound` if invalid or missing."""
        path = self.path_for(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:  # removed since `path_for` looked
            raise NotFound(f"no stored file under key {key!r}") from None
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise StorageError(f"could not read {key!r} under {self.root}: {reason}") from exc

    def list(self, prefix: str) -> list[StoredObject]:
        """The files directly in the folder `prefix` names (temporary files left out)."""
        if not PREFIX_PATTERN.fullmatch(prefix):
            raise ValueError(f"invalid storage prefix {prefix!r}")
        found = []
        try:
            with os.scandir(self.root / prefix) as entries:
                for entry in entries:
                    key = prefix + entry.name
                    if not KEY_PATTERN.fullmatch(key) or not entry.is_file(follow_symlinks=False):
                        continue
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:  # removed while listing
                        continue
                    found.append(StoredObject(key, info.st_mtime, info.st_size))
        except FileNotFoundError:
            return []
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise StorageError(f"could not list {prefix!r} under {self.root}: {reason}") from exc
        return found

    def exists(self, key: str) -> bool:
        """Whether a file is stored under `key` (False for invalid keys)."""
        path = self._resolve(key)
        return path is not None and path.is_file()

    def check(self) -> None:
        """Create the root directory and prove it is writable by writing a probe file."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=self.root, prefix=_TEMP_PREFIX, suffix=".probe")
            try:
                os.write(fd, b"ok")
            finally:
                os.close(fd)
                os.unlink(probe)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise StorageError(
                f"local storage directory {self.root} is not writable: {reason}"
            ) from exc


def _fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable; best effort (the data is already in place)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
