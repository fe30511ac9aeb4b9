"""The engine's compiled kernels (``csrc/*.c``), built once per machine and loaded with ctypes.

The sources are compiled together with the system C compiler (``$CC``, else ``cc``) on first
use into the user's cache directory (``$XDG_CACHE_HOME/tunesmith``, else
``~/.cache/tunesmith``), as one library keyed by the sources and flags. A library already in
that directory is used without a compiler (the container image builds one there). Where there
is neither, or the build fails, `library` is None and every caller falls back to torch's own
kernels (`tunesmith.engine.attention`, `tunesmith.engine.matvec`).
"""

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

__all__ = ["available", "library"]

log = logging.getLogger(__name__)

_SOURCES = sorted(Path(__file__).with_name("csrc").glob("*.c"))
# qkv, out, job count; per-job arrays of caches, positions, cache lengths, rows; heads, dim, scale
_SELF_ATTENTION: list[type] = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long]
_SELF_ATTENTION += [ctypes.c_void_p] * 4
_SELF_ATTENTION += [ctypes.c_long, ctypes.c_long, ctypes.c_float]
# entry point -> its pointer and integer arguments (each returns 0 on success, else an error code)
_ENTRIES: dict[str, list[type]] = {
    "decode_attention_f32": [ctypes.c_void_p] * 4 + [ctypes.c_long] * 4 + [ctypes.c_float],
    "decode_attention_bf16": [ctypes.c_void_p] * 4 + [ctypes.c_long] * 4 + [ctypes.c_float],
    "self_attention_f32": _SELF_ATTENTION,
    "self_attention_bf16": _SELF_ATTENTION,
    "matvec_f32": [ctypes.c_void_p] * 3 + [ctypes.c_long] * 3,
    "matvec_i8": [ctypes.c_void_p] * 4 + [ctypes.c_long] * 3,
}
_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_tried = False


def _flags() -> list[str]:
    flags = ["-O3", "-ffast-math", "-fopenmp", "-shared", "-fPIC"]
    if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        flags += ["-mavx2", "-mfma"]
    else:  # the portable loops: no fused multiply-add where the vector code would have none
        flags += ["-ffp-contract=off"]
    return flags


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tunesmith"


def _build() -> ctypes.CDLL | None:
    flags = _flags()
    digest = hashlib.sha256(" ".join(flags).encode())
    for source in _SOURCES:
        digest.update(source.name.encode() + source.read_bytes())
    target = _cache_dir() / f"kernels-{digest.hexdigest()[:16]}.so"
    if not target.exists():  # a prebuilt one (the container image has one) needs no compiler
        compiler = shutil.which(os.environ.get("CC", "cc"))
        if compiler is None:
            log.info("no C compiler found: the decoder uses torch's kernels")
            return None
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            built = Path(tmp) / target.name
            command = [compiler, *flags, "-o", str(built), *map(str, _SOURCES), "-lm"]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                log.warning("the decoder's kernels did not compile: %s", done.stderr[-2000:])
                return None
            os.replace(built, target)  # atomic: concurrent builders each install a whole file
    loaded = ctypes.CDLL(str(target))
    for name, argtypes in _ENTRIES.items():
        entry = getattr(loaded, name)
        entry.argtypes = argtypes
        entry.restype = ctypes.c_int
    return loaded


def library() -> ctypes.CDLL | None:
    """The loaded kernels (compiling them on the first call), or None where they can't be had."""
    global _library, _tried
    with _lock:
        if not _tried:
            _tried = True
            try:
                _library = _build()
            except OSError as exc:  # unwritable cache, unloadable library
                log.warning("the decoder's compiled kernels are unavailable: %s", exc)
    return _library


def available() -> bool:
    """Whether the compiled kernels can be used (compiling them on the first call)."""
    return library() is not None
