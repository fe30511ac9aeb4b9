"""Building and loading the compiled kernels (``csrc``), and binding the torch operators to them.

Two libraries, built once per machine into the user's cache directory
(``$XDG_CACHE_HOME/tunesmith``, else ``~/.cache/tunesmith``), each keyed by its sources and
flags; one already there is used without a compiler (the container image builds both there):

- the kernels, ``csrc/*.c``, compiled with the system C compiler (``$CC``, else ``cc``) and
  loaded with ctypes;
- the operators (``csrc/ops.cpp``), compiled with the C++ compiler (``$CXX``, else ``c++``)
  against torch's headers and loaded into torch once per process. The TorchScript decoder step
  calls them directly: an operator implemented in Python costs far more a call (and takes the
  GIL). The kernels are bound to them by name, so a rebuilt kernel library (a portable build)
  can be bound in their place.

Whatever stops a build is kept as a `Failure` (what went wrong, and how to fix it) for
`tunesmith.engine.kernels.status` to report.
"""

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils import cpp_extension

__all__ = ["ENTRIES", "Failure", "cache_dir", "failure", "isa", "library"]

log = logging.getLogger(__name__)

CSRC = Path(__file__).with_name("csrc")
_HEADERS = sorted(CSRC.glob("*.h"))  # tunesmith.h, the contract, and the kernels' shared one
_SOURCES = sorted(CSRC.glob("*.c"))
_OPS_SOURCE = CSRC / "ops.cpp"
# qkv, out, job count; per-job arrays of caches, positions, cache lengths, rows; heads, dim, scale
_SELF_ATTENTION: list[type] = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long]
_SELF_ATTENTION += [ctypes.c_void_p] * 4
_SELF_ATTENTION += [ctypes.c_long, ctypes.c_long, ctypes.c_float]
# entry point (csrc/tunesmith.h) -> its pointer and integer arguments; each returns 0 on
# success, else a TS_ERROR_ code
ENTRIES: dict[str, list[type]] = {
    "decode_attention_f32": [ctypes.c_void_p] * 4 + [ctypes.c_long] * 4 + [ctypes.c_float],
    "decode_attention_bf16": [ctypes.c_void_p] * 4 + [ctypes.c_long] * 4 + [ctypes.c_float],
    "self_attention_f32": _SELF_ATTENTION,
    "self_attention_bf16": _SELF_ATTENTION,
    "matvec_f32": [ctypes.c_void_p] * 3 + [ctypes.c_long] * 3 + [ctypes.c_int],
    "matvec_i8": [ctypes.c_void_p] * 4 + [ctypes.c_long] * 3 + [ctypes.c_int],
    "matvec_q4": [ctypes.c_void_p] * 4 + [ctypes.c_long] * 3 + [ctypes.c_int],
    "self_attention_i8": _SELF_ATTENTION,
}
_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_tried = False
_operators: ctypes.CDLL | None = None  # csrc/ops.cpp, loaded into torch once per process
_bound: ctypes.CDLL | None = None  # the kernels the operators call
_failure: "Failure | None" = None


@dataclass(frozen=True)
class Failure:
    """Why the compiled kernels are unavailable, and what would make them available."""

    cause: str
    fix: str


class _BuildError(Exception):
    def __init__(self, cause: str, fix: str) -> None:
        super().__init__(cause)
        self.failure = Failure(cause, fix)


# -ffast-math spelled out: given to the link, -ffast-math or -funsafe-math-optimizations make
# gcc < 13 link crtfastmath.o even into a shared library, which turns on flush-to-zero for
# the whole process when it loads (every float in Python, numpy and torch then loses its
# subnormals).
_FAST_MATH = [
    "-fno-math-errno", "-fno-signed-zeros", "-fno-trapping-math", "-fassociative-math",
    "-freciprocal-math", "-ffinite-math-only", "-fno-rounding-math", "-fno-signaling-nans",
    "-fcx-limited-range", "-fexcess-precision=fast",
]  # fmt: skip


def _flags() -> list[str]:
    flags = ["-O3", *_FAST_MATH, "-fopenmp", "-shared", "-fPIC", f"-I{CSRC}"]
    if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        flags += ["-mavx2", "-mfma", "-mf16c"]  # F16C: int4's float16 scales (every AVX2 CPU)
    else:  # the portable loops: no fused multiply-add where the vector code would have none
        flags += ["-ffp-contract=off"]
    return flags


def _operator_flags() -> list[str]:
    torch_lib = Path(torch.__file__).with_name("lib")
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    flags = [
        "-O2",
        "-std=c++17",
        "-shared",
        "-fPIC",
        f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
        f"-I{CSRC}",
    ]
    flags += [f"-I{path}" for path in cpp_extension.include_paths()]
    return [*flags, f"-L{torch_lib}", f"-Wl,-rpath,{torch_lib}", "-lc10", "-ltorch_cpu"]


def cache_dir() -> Path:
    """Where built libraries (and converted weights: `musicgen.model.store`) are kept."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tunesmith"


def _compiled(
    stem: str, compiler_variable: str, compiler: str, flags: list[str], sources: list[Path]
) -> Path:
    """The library of `sources` built with `flags`: from the cache, else compiled into it.

    Raises `_BuildError` naming the cause and the fix."""
    # the cache key: torch, the flags (with the sources' directory) and every source's bytes
    digest = hashlib.sha256(" ".join([torch.__version__, *flags]).encode())
    for source in [*sources, *_HEADERS]:
        digest.update(source.name.encode() + source.read_bytes())
    target = cache_dir() / f"{stem}-{digest.hexdigest()[:16]}.so"
    if target.exists():  # a prebuilt one (the container image has them) needs no compiler
        return target
    name = os.environ.get(compiler_variable, compiler)
    command = shutil.which(name)
    if command is None:
        kind = "C++" if compiler_variable == "CXX" else "C"
        raise _BuildError(
            f"no {kind} compiler: {compiler_variable}={name} is not on PATH",
            "install gcc and g++ (Debian/Ubuntu: apt-get install gcc g++ libc6-dev) or point "
            f"{compiler_variable} at a compiler, then restart; `tunesmith kernels` checks",
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        # sources before the libraries they use
        arguments = [a for a in flags if not a.startswith("-l")]
        arguments += ["-o", str(built), *map(str, sources)]
        arguments += [a for a in flags if a.startswith("-l")] + ["-lm"]
        done = subprocess.run([command, *arguments], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            log.debug("the %s library did not compile: %s", stem, done.stderr)
            raise _BuildError(
                f"{' '.join([command, *arguments])[:200]}... failed: {done.stderr[-1500:]}",
                f"check that {name} works and torch's headers are installed (`tunesmith "
                "kernels` shows the compiler's output), or report the error",
            )
        os.replace(built, target)  # atomic: concurrent builders each install a whole file
    return target


def _load_operators() -> ctypes.CDLL:
    global _operators
    if _operators is None:
        path = _compiled("operators", "CXX", "c++", _operator_flags(), [_OPS_SOURCE])
        _operators = ctypes.CDLL(str(path))  # loading it registers the operators' kernels
        _operators.tunesmith_bind_kernel.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
        _operators.tunesmith_bind_kernel.restype = ctypes.c_int
    return _operators


def _build() -> ctypes.CDLL:
    path = _compiled("kernels", "CC", "cc", _flags(), _SOURCES)
    _load_operators()
    loaded = ctypes.CDLL(str(path))
    for name, argtypes in ENTRIES.items():
        entry = getattr(loaded, name)
        entry.argtypes = argtypes
        entry.restype = ctypes.c_int
    loaded.ts_kernels_isa.argtypes = []
    loaded.ts_kernels_isa.restype = ctypes.c_char_p
    return loaded


def _bind(kernels: ctypes.CDLL | None) -> None:
    """Point the operators at `kernels`' entry points, each by name (None: they refuse to run)."""
    global _bound
    if _operators is None or kernels is _bound:
        return
    for name in ENTRIES:
        address = None if kernels is None else ctypes.cast(getattr(kernels, name), ctypes.c_void_p)
        if _operators.tunesmith_bind_kernel(name.encode(), address) != 0:
            raise OSError(f"the operators library has no kernel named {name}")
    _bound = kernels


def library() -> ctypes.CDLL | None:
    """The loaded kernels, bound to the operators (compiling them on the first call), or None
    where they can't be had."""
    global _library, _tried, _failure
    with _lock:
        if not _tried:
            _tried = True
            _library, _failure = None, None
            try:
                loaded = _build()
                _bind(loaded)
                _library = loaded
            except _BuildError as exc:
                _failure = exc.failure
            except OSError as exc:  # unwritable cache, unloadable library
                _failure = Failure(
                    f"the compiled kernels could not be built or loaded: {exc}",
                    "make $XDG_CACHE_HOME (else ~/.cache) writable, or prebuild the kernels "
                    "there with `tunesmith kernels`",
                )
        _bind(_library)  # (again, where a test swapped `_library`)
    return _library


def failure() -> Failure | None:
    """Why `library` is None (after it was first called), else None."""
    if library() is not None:
        return None
    return _failure or Failure("the compiled kernels are not loaded", "restart the process")


def isa() -> str | None:
    """The instruction set the loaded kernels run on this CPU, or None without them."""
    loaded = library()
    return None if loaded is None else loaded.ts_kernels_isa().decode()
