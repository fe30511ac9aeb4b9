"""What the engine does to its own process: threads that end with their work, and memory
given back to the OS after loading."""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["in_passing_thread", "return_freed_memory"]


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
        with open("/proc/self/maps") as maps:
            regions = [line.split()[0] for line in maps if line.rstrip().endswith(".safetensors")]
        for region in regions:
            start, end = (int(part, 16) for part in region.split("-"))
            libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), _MADV_DONTNEED)
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not Linux/glibc: nothing to give back this way
        pass


_MADV_DONTNEED = 4
