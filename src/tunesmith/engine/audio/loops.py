"""Loop points in WAV files: the ``smpl`` chunk samplers and DAWs read (a forward loop over
the whole file, repeating forever)."""

from __future__ import annotations

import struct

__all__ = ["loop_points", "with_loop_points"]

_FORWARD = 0


def with_loop_points(wav: bytes, start: int, end: int, sample_rate: int) -> bytes:
    """`wav` (a RIFF/WAVE file) with a ``smpl`` chunk looping frames `start`..`end` (the last
    frame played, inclusive), appended after its chunks, the RIFF size updated."""
    if wav[:4] != b"RIFF" or wav[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE file")
    if not 0 <= start <= end:
        raise ValueError(f"bad loop {start}..{end}")
    period_ns = round(1e9 / sample_rate)
    header = struct.pack("<9I", 0, 0, period_ns, 60, 0, 0, 0, 1, 0)
    loop = struct.pack("<6I", 0, _FORWARD, start, end, 0, 0)
    body = header + loop
    chunk = b"smpl" + struct.pack("<I", len(body)) + body
    if len(wav) % 2:  # chunks start on even offsets
        wav += b"\0"
    out = bytearray(wav + chunk)
    out[4:8] = struct.pack("<I", len(out) - 8)
    return bytes(out)


def loop_points(wav: bytes) -> list[tuple[int, int]]:
    """The ``(start, end)`` frames of each loop a WAV file's ``smpl`` chunk holds."""
    offset, loops = 12, []
    while offset + 8 <= len(wav):
        name, size = wav[offset : offset + 4], struct.unpack("<I", wav[offset + 4 : offset + 8])[0]
        if name == b"smpl":
            count = struct.unpack("<I", wav[offset + 36 : offset + 40])[0]
            for n in range(count):
                at = offset + 44 + 24 * n
                _, _, start, end, _, _ = struct.unpack("<6I", wav[at : at + 24])
                loops.append((start, end))
        offset += 8 + size + size % 2
    return loops
