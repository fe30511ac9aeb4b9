"""Single-query attention over the decode cache: a small C kernel, compiled once per machine.

torch's general attention kernel reads a one-query float32 cache at about half the memory
bandwidth on the 2-core AVX2 CPU, and late in a long track the cache is as many bytes per step
as the int8 weights. ``csrc/decode_attention.c`` reads each cached value once. It is compiled
with the system C compiler (``$CC``, else ``cc``) on first use into the user's cache directory
(``$XDG_CACHE_HOME/tunesmith``, else ``~/.cache/tunesmith``), keyed by source and flags, and
registered as the torch operator ``tunesmith::decode_attention`` so the TorchScript decoder
step can call it. A library already in that directory is used without a compiler (the
container image builds one there). Where there is neither, or the build fails, `available` is
False and the decoder uses `F.scaled_dot_product_attention` (the same result up to float
rounding, and up to 2x slower late in a long track).
"""

import ctypes
import hashlib
import logging
import math
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

__all__ = ["available", "decode_attention"]

log = logging.getLogger(__name__)

_MAX_HEAD_DIM = 256  # the kernel keeps one head's sums on its stack
_SOURCE = Path(__file__).with_name("csrc") / "decode_attention.c"
_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_tried = False


def _flags() -> list[str]:
    flags = ["-O3", "-ffast-math", "-fopenmp", "-shared", "-fPIC"]
    if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        flags += ["-mavx2", "-mfma"]
    return flags


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tunesmith"


def _build() -> ctypes.CDLL | None:
    source = _SOURCE.read_bytes()
    flags = _flags()
    key = hashlib.sha256(source + " ".join(flags).encode()).hexdigest()[:16]
    target = _cache_dir() / f"decode_attention-{key}.so"
    if not target.exists():  # a prebuilt one (the container image has one) needs no compiler
        compiler = shutil.which(os.environ.get("CC", "cc"))
        if compiler is None:
            log.info("no C compiler found: decode attention uses torch's kernel")
            return None
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            built = Path(tmp) / target.name
            command = [compiler, *flags, "-o", str(built), str(_SOURCE), "-lm"]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                log.warning("decode attention kernel did not compile: %s", done.stderr[-2000:])
                return None
            os.replace(built, target)  # atomic: concurrent builders each install a whole file
    library = ctypes.CDLL(str(target))
    for entry in (library.decode_attention_f32, library.decode_attention_bf16):
        entry.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_long] * 4 + [ctypes.c_float]
        entry.restype = ctypes.c_int
    return library


def _load() -> ctypes.CDLL | None:
    global _library, _tried
    with _lock:
        if not _tried:
            _tried = True
            try:
                _library = _build()
            except OSError as exc:  # unwritable cache, unloadable library
                log.warning("decode attention kernel unavailable: %s", exc)
    return _library


def available() -> bool:
    """Whether the compiled kernel can be used (compiling it on the first call)."""
    return _load() is not None


@torch.library.custom_op("tunesmith::decode_attention", mutates_args=())
def decode_attention(query: torch.Tensor, cache: torch.Tensor, length: int) -> torch.Tensor:
    """``query`` ``(rows, H, hd)`` attends over ``cache[0/1, :, :, :length]`` (keys/values of a
    contiguous ``(2, rows, H, T, hd)`` float32 or bfloat16 CPU cache); returns float32
    ``(rows, H, hd)``."""
    library = _load()
    entries = {torch.float32: "decode_attention_f32", torch.bfloat16: "decode_attention_bf16"}
    if library is None or cache.dtype not in entries or not cache.is_contiguous():
        raise RuntimeError(
            "decode_attention needs the compiled kernel and a contiguous float32 or bfloat16 cache"
        )
    if not 0 < length <= cache.shape[3] or query.shape != cache.shape[1:3] + cache.shape[4:]:
        raise ValueError(f"bad shapes: query {tuple(query.shape)}, cache {tuple(cache.shape)}")
    if query.shape[-1] > _MAX_HEAD_DIM:
        raise ValueError(f"head size {query.shape[-1]} is above {_MAX_HEAD_DIM}")
    query = query.contiguous().float()
    out = torch.empty_like(query)
    _, rows, heads, steps, dim = cache.shape
    failed = getattr(library, entries[cache.dtype])(
        query.data_ptr(),
        cache.data_ptr(),
        cache[1].data_ptr(),
        out.data_ptr(),
        rows * heads,
        length,
        steps * dim,
        dim,
        1.0 / math.sqrt(dim),
    )
    if failed:
        raise MemoryError("decode_attention could not allocate its scores")
    return out
