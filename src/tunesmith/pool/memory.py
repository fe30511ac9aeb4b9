"""What a served model costs in memory, estimated from its weight files before it loads.

The estimate is the model's parameters, counted from its ``.safetensors`` headers (no tensor is
read), at the bytes a parameter takes at the served precision: the decoder's at that precision,
the text encoder's and the audio codec's at fp32 (the engine keeps them there). It leaves out
activations, the KV cache and the runtime itself, so a budget should leave room for them. A
checkpoint saved without safetensors is counted by its weight files' size, as stored.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Final

__all__ = ["BYTES_PER_PARAMETER", "weight_bytes"]

BYTES_PER_PARAMETER: Final[dict[str, float]] = {
    "fp32": 4.0,
    "fp16": 2.0,
    "bf16": 2.0,
    "int8": 1.0,
    "int4": 0.5,
}
_DECODER = "decoder."  # the tensors the precision applies to; the rest stay fp32
_HEADER_LIMIT = 100 * 1024 * 1024  # safetensors' own bound on a header


def weight_bytes(directory: Path, precision: str) -> int:
    """Bytes checkpoint `directory` takes loaded at `precision` (``auto`` counts as fp32, the
    CPU's; a loaded engine's own precision replaces it)."""
    per_parameter = BYTES_PER_PARAMETER.get(precision, 4.0)
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        return sum(path.stat().st_size for path in directory.glob("*.bin"))
    total = 0.0
    for path in files:
        for name, count in _parameters(path).items():
            total += count * (per_parameter if name.startswith(_DECODER) else 4.0)
    return int(total)


def _parameters(path: Path) -> dict[str, int]:
    """Each tensor's element count, from a ``.safetensors`` file's JSON header."""
    with path.open("rb") as file:
        (size,) = struct.unpack("<Q", file.read(8))
        if size > _HEADER_LIMIT:
            raise ValueError(f"{path} has no safetensors header")
        header = json.loads(file.read(size))
    counts: dict[str, int] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        count = 1
        for dim in info["shape"]:
            count *= int(dim)
        counts[name] = count
    return counts
