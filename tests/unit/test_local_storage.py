"""LocalStorage: atomic writes, key containment, URLs, start-up checks."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tunesmith.config import Settings
from tunesmith.errors import NotFound, StorageError
from tunesmith.storage import LocalStorage, StoredTrack, create_storage, new_key

HEX = "0123456789abcdef" * 2
DATA = b"RIFF" + bytes(range(256)) * 64


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "root"


@pytest.fixture
def storage(root: Path) -> LocalStorage:
    return LocalStorage(root)


def all_files(directory: Path) -> list[str]:
    """Every file under `directory` (hidden temp files included), relative, sorted."""
    if not directory.exists():
        return []
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if not p.is_dir())


# -- round trip ------------------------------------------------------------------------------------


def test_round_trip(storage: LocalStorage, root: Path) -> None:
    key = new_key("music-output/", "wav")
    assert not storage.exists(key)
    storage.put(key, DATA, "audio/wav")
    assert storage.exists(key)
    path = storage.path_for(key)
    assert path == (root / key).resolve()
    assert path.read_bytes() == DATA
    assert all_files(root) == [key]  # parents created, no temp file left
    assert stat.S_IMODE(path.stat().st_mode) == 0o644

    storage.delete(key)
    assert not storage.exists(key)
    with pytest.raises(NotFound):
        storage.path_for(key)
    storage.delete(key)  # absent: no error


def test_put_replaces_existing_content(storage: LocalStorage) -> None:
    key = new_key("", "wav")
    storage.put(key, b"first", "audio/wav")
    storage.put(key, b"second", "audio/wav")
    assert storage.path_for(key).read_bytes() == b"second"


def test_empty_track_round_trips(storage: LocalStorage) -> None:
    key = new_key("x/", "wav")
    storage.put(key, b"", "audio/wav")
    assert storage.path_for(key).read_bytes() == b""


# -- atomicity: a failed put leaves neither the file nor a temp file -----------------------------


@pytest.mark.parametrize("failing", ["fsync", "replace", "chmod"])
def test_failed_put_leaves_nothing(
    storage: LocalStorage, root: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise OSError(5, "Input/output error")

    key = new_key("music-output/", "wav")
    monkeypatch.setattr(os, failing, boom)
    with pytest.raises(StorageError, match="Input/output error") as info:
        storage.put(key, DATA, "audio/wav")
    monkeypatch.undo()
    assert key in info.value.message
    assert not storage.exists(key)
    assert all_files(root) == []


def test_failed_put_keeps_previous_content(
    storage: LocalStorage, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = new_key("", "wav")
    storage.put(key, b"old", "audio/wav")

    def boom(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(StorageError, match="No space left"):
        storage.put(key, b"new" * 1000, "audio/wav")
    monkeypatch.undo()
    assert storage.path_for(key).read_bytes() == b"old"
    assert all_files(root) == [key]


@contextlib.contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """Cap this process's file size (RLIMIT_FSIZE) so a write really fails part-way (EFBIG).

    Unlike a read-only directory, this stops root too. Keep the block short: it applies to
    every file the process writes.
    """
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old_limit[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)


def test_write_failing_midway_leaves_nothing(storage: LocalStorage, root: Path) -> None:
    storage.check()
    key = new_key("music-output/", "wav")
    big = os.urandom(64 * 1024)
    with file_size_limit(4096), pytest.raises(StorageError, match="too large"):
        storage.put(key, big, "audio/wav")
    assert not storage.exists(key)
    assert all_files(root) == []
    storage.put(key, big, "audio/wav")  # the same write works once the limit is lifted
    assert storage.path_for(key).read_bytes() == big


def test_mkdir_failure_is_a_storage_error(storage: LocalStorage, root: Path) -> None:
    root.mkdir()
    (root / "music-output").write_bytes(b"a file where a directory should be")
    with pytest.raises(StorageError):
        storage.put(new_key("music-output/", "wav"), DATA, "audio/wav")
    assert all_files(root) == ["music-output"]


def test_put_rejects_invalid_keys(storage: LocalStorage, tmp_path: Path) -> None:
    for key in ("../" + HEX + ".wav", "/tmp/" + HEX + ".wav", "notakey.wav", ""):
        with pytest.raises(ValueError, match="invalid storage key"):
            storage.put(key, DATA, "audio/wav")
    assert all_files(tmp_path) == []


# -- containment: no key reaches outside the root -------------------------------------------------


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A valid-looking track stored next to (not inside) the root."""
    target = tmp_path / f"{HEX}.wav"
    target.write_bytes(b"secret")
    return target


@pytest.mark.parametrize(
    "key",
    [
        f"../{HEX}.wav",
        f"music-output/../../{HEX}.wav",
        f"./../{HEX}.wav",
        f"%2e%2e/{HEX}.wav",
        f"..%2f{HEX}.wav",
        f"..\\{HEX}.wav",
        f"{HEX}.wav\n",
        "",
        "music-output/",
    ],
)
def test_traversal_keys_are_not_found(
    storage: LocalStorage, root: Path, outside: Path, key: str
) -> None:
    root.mkdir()
    with pytest.raises(NotFound):
        storage.path_for(key)
    assert not storage.exists(key)
    storage.delete(key)
    assert outside.read_bytes() == b"secret"


def test_absolute_key_is_not_found(storage: LocalStorage, root: Path, outside: Path) -> None:
    root.mkdir()
    with pytest.raises(NotFound):
        storage.path_for(str(outside))
    storage.delete(str(outside))
    assert outside.exists()


def test_symlinked_directory_out_of_root_is_not_found(
    storage: LocalStorage, root: Path, outside: Path
) -> None:
    root.mkdir()
    (root / "link").symlink_to(outside.parent, target_is_directory=True)
    key = f"link/{HEX}.wav"
    assert (root / key).read_bytes() == b"secret"  # the escape is real on disk...
    with pytest.raises(NotFound):  # ...and refused by the storage
        storage.path_for(key)
    assert not storage.exists(key)
    storage.delete(key)
    assert outside.exists()
    with pytest.raises(ValueError):
        storage.put(key, b"overwrite", "audio/wav")
    assert outside.read_bytes() == b"secret"


def test_symlinked_file_out_of_root_is_not_found(
    storage: LocalStorage, root: Path, outside: Path
) -> None:
    root.mkdir()
    (root / f"{HEX}.wav").symlink_to(outside)
    with pytest.raises(NotFound):
        storage.path_for(f"{HEX}.wav")


def test_symlink_inside_root_is_served(storage: LocalStorage, root: Path) -> None:
    key = new_key("real/", "wav")
    storage.put(key, DATA, "audio/wav")
    (root / "alias").symlink_to(root / "real", target_is_directory=True)
    alias_key = key.replace("real/", "alias/")
    assert storage.path_for(alias_key).read_bytes() == DATA


def test_symlink_loop_is_not_found(storage: LocalStorage, root: Path) -> None:
    root.mkdir()
    (root / "loop").symlink_to(root / "loop")
    with pytest.raises(NotFound):
        storage.path_for(f"loop/{HEX}.wav")


def test_directory_or_missing_key_is_not_found(storage: LocalStorage, root: Path) -> None:
    (root / f"{HEX}.wav").mkdir(parents=True)
    with pytest.raises(NotFound):
        storage.path_for(f"{HEX}.wav")
    with pytest.raises(NotFound, match="no stored file"):
        storage.path_for(new_key("music-output/", "wav"))


# -- URLs ------------------------------------------------------------------------------------------


def test_locate_builds_files_url(storage: LocalStorage) -> None:
    key = new_key("music-output/", "wav")
    track = storage.locate(key, base_url="http://127.0.0.1:8000/")
    assert track == StoredTrack(
        key=key, s3_url=None, public_url=f"http://127.0.0.1:8000/files/{key}"
    )
    behind_proxy = storage.locate(key, base_url="https://example.org/tunesmith")
    assert behind_proxy.public_url == f"https://example.org/tunesmith/files/{key}"


def test_locate_needs_base_url(storage: LocalStorage) -> None:
    with pytest.raises(ValueError, match="base_url"):
        storage.locate(new_key("", "wav"))


# -- start-up check and factory -------------------------------------------------------------------


def test_check_creates_root(storage: LocalStorage, root: Path) -> None:
    storage.check()
    assert root.is_dir()
    assert all_files(root) == []  # the probe file is gone


def test_check_fails_when_root_is_unusable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    for bad_root in (blocker, blocker / "sub"):
        with pytest.raises(StorageError, match="not writable") as info:
            LocalStorage(bad_root).check()
        assert str(bad_root) in info.value.message


def test_create_storage_local(tmp_path: Path) -> None:
    storage = create_storage(Settings(storage="local", local_dir=tmp_path / "out"))
    assert isinstance(storage, LocalStorage)
    assert storage.root == tmp_path / "out"
    assert storage.name == "local"


def test_get_and_list(storage: LocalStorage, root: Path) -> None:
    first, second = new_key("music-output/", "json"), new_key("music-output/", "wav")
    storage.put(first, b"{}", "application/json")
    storage.put(second, b"RIFF", "audio/wav")
    (root / "music-output" / ".tmp-x.part").write_bytes(b"half")  # a write in progress
    storage.put(new_key("music-jobs/", "json"), b"{}", "application/json")

    listed = {item.key: item.size for item in storage.list("music-output/")}

    assert listed == {first: 2, second: 4}
    assert storage.get(second) == b"RIFF"
    assert storage.list("nothing-here/") == []
    with pytest.raises(NotFound):
        storage.get(new_key("music-output/", "wav"))
    with pytest.raises(ValueError):
        storage.list("../")
