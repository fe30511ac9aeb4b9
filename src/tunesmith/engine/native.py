"""The engine's compiled kernels (``csrc``) and the torch operators that call them.

Two libraries, built once per machine into the user's cache directory
(``$XDG_CACHE_HOME/tunesmith``, else ``~/.cache/tunesmith``), each keyed by its sources and
flags; one already there is used without a compiler (the container image builds both there):

- the kernels, ``csrc/*.c``, compiled with the system C compiler (``$CC``, else ``cc``) and
  loaded with ctypes;
- the operators ``tunesmith::matvec``, ``tunesmith::folded_attention``,
  ``tunesmith::decode_attention`` and ``tunesmith::self_attention``, ``csrc/ops.cpp``, compiled
  with the C++ compiler (``$CXX``, else ``c++``) against torch's headers and loaded into torch
  once per process. The TorchScript decoder step calls them directly: an operator implemented
  in Python cost ~20 us a call (and the GIL) where these take ~4 us, over ~190 calls a step.
  The kernels are bound to them by address, so a rebuilt kernel library (a portable build) can
  be bound in its place.

The operators' schemas are defined here at import, so the decoder scripts whether or not the
libraries build. Where either is missing, `library` is None and every caller uses torch's
own kernels (`tunesmith.engine.attention`, `tunesmith.engine.matvec`).
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
from torch.utils import cpp_extension

__all__ = ["available", "library"]

log = logging.getLogger(__name__)

_CSRC = Path(__file__).with_name("csrc")
_SOURCES = sorted(_CSRC.glob("*.c"))
_OPS_SOURCE = _CSRC / "ops.cpp"
# qkv, out, job count; per-job arrays of caches, positions, cache lengths, rows; heads, dim, scale
_SELF_ATTENTION: list[type] = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long]
_SELF_ATTENTION += [ctypes.c_void_p] * 4
_SELF_ATTENTION += [ctypes.c_long, ctypes.c_long, ctypes.c_float]
# entry point -> its pointer and integer arguments (each returns 0 on success, else an error
# code); csrc/ops.cpp binds them in this order
_ENTRIES: dict[str, list[type]] = {
    "decode_attention_f32": [ctypes.c_void_p] * 4 + [ctypes.c_long] * 4 + [ctypes.c_float],
    "decode_attention_bf16": [ctypes.c_void_p] * 4 + [ctypes.c_long] * 4 + [ctypes.c_float],
    "self_attention_f32": _SELF_ATTENTION,
    "self_attention_bf16": _SELF_ATTENTION,
    "matvec_f32": [ctypes.c_void_p] * 3 + [ctypes.c_long] * 3 + [ctypes.c_int],
    "matvec_i8": [ctypes.c_void_p] * 4 + [ctypes.c_long] * 3 + [ctypes.c_int],
    "self_attention_i8": _SELF_ATTENTION,
}
# the operators' schemas: their CPU kernels are csrc/ops.cpp's
_SCHEMAS = (
    "matvec(Tensor x, Tensor weight, Tensor? scale, int activation=0, Tensor? norm_weight=None,"
    " Tensor? norm_bias=None, Tensor? residual=None) -> Tensor",
    "folded_attention(Tensor x, Tensor a, Tensor? a_scale, Tensor b, Tensor? b_scale, int layer,"
    " int heads, Tensor norm_weight, Tensor norm_bias) -> Tensor",
    "decode_attention(Tensor query, Tensor cache, int length) -> Tensor",
    "self_attention(Tensor qkv, Tensor(a!)[] caches, int[] ts, int layer) -> Tensor",
)
_definitions = torch.library.Library("tunesmith", "DEF")  # type: ignore[no-untyped-call]
for _schema in _SCHEMAS:
    _definitions.define(_schema)  # type: ignore[no-untyped-call]

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_tried = False
_operators: ctypes.CDLL | None = None  # csrc/ops.cpp, loaded into torch once per process
_bound: ctypes.CDLL | None = None  # the kernels the operators call


def _flags() -> list[str]:
    flags = ["-O3", "-ffast-math", "-fopenmp", "-shared", "-fPIC"]
    if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        flags += ["-mavx2", "-mfma"]
    else:  # the portable loops: no fused multiply-add where the vector code would have none
        flags += ["-ffp-contract=off"]
    return flags


def _operator_flags() -> list[str]:
    torch_lib = Path(torch.__file__).with_name("lib")
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    flags = ["-O2", "-std=c++17", "-shared", "-fPIC", f"-D_GLIBCXX_USE_CXX11_ABI={abi}"]
    flags += [f"-I{path}" for path in cpp_extension.include_paths()]
    return [*flags, f"-L{torch_lib}", f"-Wl,-rpath,{torch_lib}", "-lc10", "-ltorch_cpu"]


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tunesmith"


def _compiled(
    stem: str, compiler_variable: str, compiler: str, flags: list[str], sources: list[Path]
) -> Path | None:
    """The library of `sources` built with `flags`: from the cache, else compiled into it."""
    digest = hashlib.sha256(" ".join([torch.__version__, *flags]).encode())
    for source in sources:
        digest.update(source.name.encode() + source.read_bytes())
    target = _cache_dir() / f"{stem}-{digest.hexdigest()[:16]}.so"
    if target.exists():  # a prebuilt one (the container image has them) needs no compiler
        return target
    command = shutil.which(os.environ.get(compiler_variable, compiler))
    if command is None:
        log.info("no %s compiler found: the decoder uses torch's kernels", compiler)
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        # sources before the libraries they use
        arguments = [a for a in flags if not a.startswith("-l")]
        arguments += ["-o", str(built), *map(str, sources)]
        arguments += [a for a in flags if a.startswith("-l")] + ["-lm"]
        done = subprocess.run([command, *arguments], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            log.warning("the decoder's %s did not compile: %s", stem, done.stderr[-2000:])
            return None
        os.replace(built, target)  # atomic: concurrent builders each install a whole file
    return target


def _load_operators() -> ctypes.CDLL | None:
    global _operators
    if _operators is None:
        path = _compiled("operators", "CXX", "c++", _operator_flags(), [_OPS_SOURCE])
        if path is None:
            return None
        _operators = ctypes.CDLL(str(path))  # loading it registers the operators' kernels
        _operators.tunesmith_bind_kernels.argtypes = [ctypes.c_void_p]
        _operators.tunesmith_bind_kernels.restype = None
    return _operators


def _build() -> ctypes.CDLL | None:
    path = _compiled("kernels", "CC", "cc", _flags(), _SOURCES)
    if path is None or _load_operators() is None:
        return None
    loaded = ctypes.CDLL(str(path))
    for name, argtypes in _ENTRIES.items():
        entry = getattr(loaded, name)
        entry.argtypes = argtypes
        entry.restype = ctypes.c_int
    return loaded


def _bind(kernels: ctypes.CDLL | None) -> None:
    """Point the operators at `kernels`' entry points (None: they refuse to run)."""
    global _bound
    if _operators is None or kernels is _bound:
        return
    table = None
    if kernels is not None:
        addresses = [ctypes.cast(getattr(kernels, n), ctypes.c_void_p).value for n in _ENTRIES]
        table = (ctypes.c_void_p * len(addresses))(*addresses)
    _operators.tunesmith_bind_kernels(table)
    _bound = kernels


def library() -> ctypes.CDLL | None:
    """The loaded kernels, bound to the operators (compiling them on the first call), or None
    where they can't be had."""
    global _library, _tried
    with _lock:
        if not _tried:
            _tried = True
            try:
                _library = _build()
            except OSError as exc:  # unwritable cache, unloadable library
                log.warning("the decoder's compiled kernels are unavailable: %s", exc)
        _bind(_library)  # (again, where a test swapped `_library`)
    return _library


def available() -> bool:
    """Whether the compiled kernels can be used (compiling them on the first call)."""
    return library() is not None
