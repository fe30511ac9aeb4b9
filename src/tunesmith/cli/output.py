"""The file `tunesmith generate` writes: its format, checked before any compute, and written
whole or not at all."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from tunesmith.cli.flags import UsageError
from tunesmith.errors import TunesmithError
from tunesmith.formats import NAMES as FORMATS

__all__ = ["check_destination", "output_format", "write_atomically"]


def output_format(output: str | None, fmt: str | None) -> str:
    """The format to write: ``--format``, else the output's extension, else WAV. A name whose
    extension names another format (or none tunesmith writes) is refused."""
    suffix = Path(output).suffix if output else ""
    extension = suffix.lstrip(".").lower()
    names = ", ".join(f".{name}" for name in FORMATS[:-1]) + f" or .{FORMATS[-1]}"
    if fmt is None:
        if extension and extension not in FORMATS:
            raise UsageError(f"cannot tell which format to write to {output}: name it {names}")
        return extension or "wav"
    if extension and extension != fmt:
        instead = f", or leave --format out to write {extension}" if extension in FORMATS else ""
        raise UsageError(
            f"--format {fmt} disagrees with the name {output}: name it .{fmt}{instead}"
        )
    return fmt


def check_destination(path: Path, force: bool) -> None:
    """Refuse, before the track is made, a file that could not be written or would replace
    one without --force."""
    directory = path.parent
    if path.is_dir():
        raise UsageError(f"{path} is a directory: give a file name")
    if not directory.is_dir():
        raise UsageError(f"cannot write {path}: there is no directory {directory}")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write {path}: the directory {directory} is not writable")
    if path.exists() and not force:
        raise UsageError(f"{path} exists: use --force to replace it")


def write_atomically(path: Path, data: bytes, force: bool) -> None:
    """Write through a temporary file beside `path`, then rename it into place, so an
    interrupted write leaves neither a partial track nor the temporary file."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
    try:
        # 0o666 less the umask: the mode a plain open() would give the file
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        if force:
            os.replace(temporary, path)
        else:
            _link_new(temporary, path)
    except OSError as exc:
        raise TunesmithError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        temporary.unlink(missing_ok=True)


def _link_new(temporary: Path, path: Path) -> None:
    """Put `temporary` at `path` unless a file appeared there meanwhile."""
    try:
        os.link(temporary, path)  # fails, atomically, where a file exists
    except FileExistsError:
        raise UsageError(f"{path} exists: use --force to replace it") from None
    except OSError:  # no hard links on this filesystem: check, then rename
        if path.exists():
            raise UsageError(f"{path} exists: use --force to replace it") from None
        os.replace(temporary, path)
