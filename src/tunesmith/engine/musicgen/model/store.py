"""Converted decoder weights kept on disk, so a process starts without converting them again.

Quantizing musicgen-small's decoder to int8 or int4 reads ~1.4 GB of float32 weights and takes
seconds; SageMaker Serverless and the Lambda variant would pay that at every cold start. A
`WeightStore` hands the decoder each converted tensor by name: from the store's file when it
has it (a safetensors file, memory-mapped: nothing is copied, and pages are read only when a
step first touches them), else computed from the checkpoint and written to the file at the
end, atomically, for the next process.

The file is keyed by what its contents depend on: the checkpoint's weight files (names, sizes,
modification times and safetensors headers), the precision, the kernels' packed layouts and
`FORMAT`. It lives in ``$TUNESMITH_WEIGHT_CACHE``, else the kernels' cache directory
(``$XDG_CACHE_HOME/tunesmith/weights``); an unwritable directory only costs the next start its
conversion (logged once), never a failure.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

__all__ = ["FORMAT", "WeightStore", "checkpoint_files", "store_directory"]

log = logging.getLogger(__name__)

# bumped whenever what the decoder stores under a name changes meaning
FORMAT = 1


def store_directory() -> Path:
    """Where converted weights are kept: ``$TUNESMITH_WEIGHT_CACHE``, else ``weights`` in the
    kernels' cache directory."""
    configured = os.environ.get("TUNESMITH_WEIGHT_CACHE")
    if configured:
        return Path(configured).expanduser()
    from tunesmith.engine.kernels.build import cache_dir

    return cache_dir() / "weights"


def checkpoint_files(directory: Path) -> list[Path]:
    """The safetensors files holding a checkpoint directory's weights (empty: none)."""
    return sorted(directory.glob("*.safetensors"))


def _header(path: Path) -> bytes:
    """A safetensors file's JSON header: every tensor's name, dtype, shape and offsets."""
    with path.open("rb") as file:
        size = int.from_bytes(file.read(8), "little")
        return file.read(min(size, 100 << 20))


def _key(files: list[Path], precision: str, layout: dict[str, int]) -> str:
    digest = hashlib.sha256(json.dumps([FORMAT, precision, sorted(layout.items())]).encode())
    for path in files:
        status = path.stat()
        digest.update(f"{path.name} {status.st_size} {status.st_mtime_ns}".encode())
        digest.update(_header(path))
    return digest.hexdigest()[:20]


class WeightStore:
    """Converted tensors by name: read mapped from `path` where it exists, else computed and
    written there by `save`. With `path` None nothing is kept (every tensor is computed)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._mapped: dict[str, torch.Tensor] = {}
        self._computed: dict[str, torch.Tensor] = {}
        if path is not None and path.is_file():
            try:
                self._mapped = _read_mapped(path)
            except Exception as exc:  # truncated, foreign, another version's: convert again
                log.warning("converted weights %s unreadable (%s): converting again", path, exc)

    @classmethod
    def for_checkpoint(
        cls, directory: Path | None, precision: str, layout: dict[str, int]
    ) -> WeightStore:
        """The store for a checkpoint directory's weights at `precision` with the kernels'
        `layout` constants; one that keeps nothing where the checkpoint has no safetensors."""
        files = checkpoint_files(directory) if directory is not None else []
        if not files:
            return cls(None)
        name = f"{directory.name if directory else 'model'}-{precision}-"
        return cls(store_directory() / f"{name}{_key(files, precision, layout)}.safetensors")

    @property
    def hit(self) -> bool:
        """Whether the tensors come from an existing file."""
        return bool(self._mapped)

    def get(
        self, name: str, make: Callable[[], dict[str, torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        """The tensors stored under `name` (``name.part`` each), computed by `make` where the
        file has none under it."""
        prefix = f"{name}."
        found = {k[len(prefix) :]: v for k, v in self._mapped.items() if k.startswith(prefix)}
        if found:
            return found
        made = make()
        for part, tensor in made.items():
            self._computed[prefix + part] = tensor
        return made

    def save(self) -> None:
        """Write what was computed to the store's file (atomically), if it had none."""
        if self.path is None or self.hit or not self._computed:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(
                dir=self.path.parent, suffix=".tmp", delete=False
            ) as tmp:
                temporary = Path(tmp.name)
            try:
                _write(temporary, self._computed)
                temporary.chmod(0o644)  # an image's store, built as root, is read by its user
                os.replace(temporary, self.path)  # concurrent writers each install a whole file
            finally:
                temporary.unlink(missing_ok=True)
        except OSError as exc:
            log.warning(
                "could not keep the converted weights in %s (%s); the next start converts them "
                "again (set TUNESMITH_WEIGHT_CACHE to a writable directory)",
                self.path.parent,
                exc,
            )
        self._computed = {}


# the safetensors names of the dtypes the decoder stores
_DTYPES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.int32: "I32",
    torch.int64: "I64",
}


def _write(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """`tensors` as a safetensors file, one tensor at a time: safetensors' own `save_file`
    builds the whole file in memory first, which doubles a first start's peak (musicgen-medium
    int8: +1.5 GB)."""
    header: dict[str, object] = {"__metadata__": {"format": str(FORMAT)}}
    offset = 0
    for name, tensor in tensors.items():
        size = tensor.numel() * tensor.element_size()
        header[name] = {
            "dtype": _DTYPES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned
    with path.open("wb") as file:
        file.write(len(encoded).to_bytes(8, "little") + encoded)
        for tensor in tensors.values():
            flat = tensor.detach().contiguous().view(-1).view(torch.uint8)
            file.write(flat.numpy().data)


def _read_mapped(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as file:
        if (file.metadata() or {}).get("format") != str(FORMAT):
            raise ValueError(f"not format {FORMAT}")
        return {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118
