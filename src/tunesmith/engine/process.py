"""What the engine does to its own process: threads that end with their work, and memory
given back to the OS after loading."""

from __future__ import annotations

import mmap
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["drop_file_pages", "in_passing_thread", "return_freed_memory", "trim_heap"]


def in_passing_thread(work: Callable[[], None]) -> None:
    """`work()` in a new thread that ends with it (raising its error here).

    The OpenMP team a thread starts lives as long as the thread; loading's must not outlive it.
    """
    errors: list[BaseException] = []

    def target() -> None:
        try:
            work()
        except BaseException as exc:  # raised again in the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=target, name="tunesmith-load")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def return_freed_memory() -> None:
    """Give memory that loading used and no longer needs back to the OS (Linux, glibc).

    transformers maps the checkpoint file; every page read while converting weights stays
    resident while the mapping lives, even when nothing uses it any more. ``MADV_DONTNEED``
    drops those clean file pages; a page still in use (fp32 weights, the text encoder) is read
    back on its next touch, so this changes what is resident, never what is computed. glibc
    also keeps freed heap until `malloc_trim`.
    """
    import ctypes
    import gc

    gc.collect()
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        for start, end in _safetensors_regions():
            libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), _MADV_DONTNEED)
    except (OSError, AttributeError):  # not Linux/glibc: nothing to give back this way
        pass
    trim_heap()


_MADV_DONTNEED = 4


def drop_file_pages(tensors: list[torch.Tensor]) -> None:
    """Drop the resident pages of `tensors` that are views of a mapped ``.safetensors`` file
    (transformers maps the checkpoint): converting the decoder tensor by tensor, each float32
    weight then leaves memory once converted instead of all of them staying until the end.

    Only whole pages inside a tensor that lie in such a mapping are dropped (clean file pages,
    read back on a later touch); anything else is left alone."""
    import ctypes

    regions = _safetensors_regions()
    if not regions:
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return
    for tensor in tensors:
        start = tensor.data_ptr()
        end = start + tensor.numel() * tensor.element_size()
        if not any(low <= start and end <= high for low, high in regions):
            continue
        first, last = -(-start // _PAGE) * _PAGE, end // _PAGE * _PAGE
        if last > first:
            libc.madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), _MADV_DONTNEED)


def _safetensors_regions() -> list[tuple[int, int]]:
    """The address ranges where ``.safetensors`` files are mapped (Linux), else none."""
    try:
        with open("/proc/self/maps") as maps:
            lines = [line.split()[0] for line in maps if line.rstrip().endswith(".safetensors")]
    except OSError:
        return []
    return [(int(a, 16), int(b, 16)) for a, b in (line.split("-") for line in lines)]


_PAGE = mmap.PAGESIZE


def trim_heap() -> None:
    """Hand the heap's free pages back to the OS now (glibc): loading runs in a thread of its
    own, and the temporaries a conversion frees in that thread's arena stay resident until
    trimmed (musicgen-medium int8 held 2.3 GB of them at its peak)."""
    import contextlib
    import ctypes

    with contextlib.suppress(OSError, AttributeError):  # not glibc: its allocator decides
        ctypes.CDLL("libc.so.6").malloc_trim(0)
