"""Where a checkpoint's files are: a local directory, the Hugging Face cache, or a download.

`checkpoint_dir` turns a model name into a directory before anything loads from it, so
`from_pretrained` only ever reads local files. The Hub is asked once, with no retries: an
offline machine learns at once (not after huggingface_hub's minute of backoff) that the model
is missing, with a message saying what to do. A download shows one progress bar for all its
files, in bytes, with the speed and the time left.
"""

from __future__ import annotations

import io
import shutil
import sys
import threading
from pathlib import Path
from typing import Any, ClassVar

from tqdm import tqdm

from tunesmith.errors import ModelUnavailable

__all__ = ["HUB_FILES", "checkpoint_dir", "copy_checkpoint", "offline_fix"]

# config, generation config, processor and tokenizer files, beside the weights chosen below
HUB_FILES = ["*.json", "*.model", "*.txt"]

# a name already found or fetched in this process: the server's early check and its loader
# thread, or `generate` and its engine, ask the Hub once
_found: dict[str, Path] = {}
_lock = threading.Lock()


def offline_fix(model: str) -> str:
    """What to do when `model` cannot be had on this machine."""
    return (
        f"On a machine with network, run `tunesmith download --model {model} --output DIR`, "
        "copy DIR here and set TUNESMITH_MODEL=DIR (or --model DIR). To try tunesmith without "
        "weights, save a random tiny model (its music is noise): `python -m "
        "tunesmith.testing.random_model ./tiny-musicgen`, then set "
        "TUNESMITH_MODEL=./tiny-musicgen."
    )


CHOOSE = (
    "Set TUNESMITH_MODEL (or --model) to a MusicGen checkpoint on the Hub, such as "
    "facebook/musicgen-small, or to a directory saved with `tunesmith download`."
)


def looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or Path(name).exists()


def checkpoint_dir(name: str) -> Path:
    """The directory holding checkpoint `name`: a hub id or a `save_pretrained` directory.

    A hub id is taken from the local cache when the Hub cannot be reached, and downloaded (or
    brought up to date) when it can. Raises `ModelUnavailable` naming the model and the fix."""
    if looks_like_path(name):
        directory = Path(name).expanduser()
        if not (directory / "config.json").is_file():
            raise ModelUnavailable(
                f"model directory {str(directory)!r} has no config.json: it is not a saved "
                "MusicGen model. " + offline_fix("facebook/musicgen-small")
            )
        return directory
    with _lock:
        if name not in _found:
            _found[name] = _from_hub(name)
        return _found[name]


def _from_hub(name: str) -> Path:
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    cached = _cached(name)
    if constants.HF_HUB_OFFLINE:
        return _or_fail(cached, name, "HF_HUB_OFFLINE is set", offline_fix(name))
    try:
        info = HfApi().model_info(name, timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except GatedRepoError:
        why = "it is gated on the Hugging Face Hub: accept its terms there and log in"
        return _or_fail(cached, name, why + " (`hf auth login`)", CHOOSE)
    except RepositoryNotFoundError:
        why = "the Hugging Face Hub has no such model (or it is private: log in)"
        return _or_fail(cached, name, why, CHOOSE)
    except Exception as exc:  # offline, refused, timed out, the Hub failing: the cache decides
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        why = f"the Hugging Face Hub ({constants.ENDPOINT}) cannot be reached: {detail}"
        return _or_fail(cached, name, why, offline_fix(name))
    files = [sibling.rfilename for sibling in info.siblings or []]
    weights = "*.safetensors" if any(f.endswith(".safetensors") for f in files) else "*.bin"
    return _download(name, [*HUB_FILES, weights])


def _cached(name: str) -> Path | None:
    """The cache's snapshot of `name` with its weights, if it has one (no network)."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        config = try_to_load_from_cache(name, "config.json")
    except HFValidationError:
        raise ModelUnavailable(
            f"model {name!r} is neither a directory nor a Hugging Face model id. " + CHOOSE
        ) from None
    if not isinstance(config, str):
        return None
    directory = Path(config).parent
    if any(directory.glob("*.safetensors")) or any(directory.glob("*.bin")):
        return directory
    return None


def _or_fail(cached: Path | None, name: str, why: str, fix: str) -> Path:
    if cached is None:
        raise ModelUnavailable(f"model {name} is not on this machine and {why}. {fix}")
    return cached


def _download(name: str, patterns: list[str]) -> Path:
    from huggingface_hub import snapshot_download

    bar = _bar_for(name)
    try:
        # by branch, not the commit just seen: the cache then records the branch, which is what
        # an offline start looks up
        path = snapshot_download(name, allow_patterns=patterns, tqdm_class=bar)
    except Exception as exc:  # the network or the disk failed part-way; a rerun resumes
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelUnavailable(
            f"downloading model {name} failed: {detail}. Run the command again to resume."
        ) from None
    finally:
        for shown in bar.shown:  # huggingface_hub leaves its bars open
            shown.close()
    return Path(str(path))


class _Nowhere(io.StringIO):
    def write(self, text: str) -> int:
        return len(text)


def _bar_for(name: str) -> Any:
    """A tqdm class for `snapshot_download` that draws one of the bars it makes.

    huggingface_hub feeds every file into a bar of bytes written against their known total,
    beside one of network bytes and one counting files: only the first is drawn, under our
    own description, and only half a second in (a snapshot already whole draws nothing)."""

    class DownloadBar(tqdm):  # type: ignore[misc]  # tqdm has no type stubs here
        shown: ClassVar[list[Any]] = []

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.pop("name", None)
            drawn = kwargs.get("unit") == "B" and "total_fmt" in str(kwargs.get("bar_format"))
            kwargs.update(
                desc=f"downloading {name}",
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}B/{total_fmt}B "
                "[{rate_fmt}, {remaining} left]",
                file=sys.stderr if drawn else _Nowhere(),
                position=0 if drawn else None,
                delay=0.5,
            )
            super().__init__(*args, **kwargs)
            if drawn:
                self.shown.append(self)

        def refresh(self, *args: Any, **kwargs: Any) -> None:
            # called as each file starts: wait until every file has added its size to the total
            if self.n and self._time() >= self.start_t + self.delay:
                super().refresh(*args, **kwargs)

        def set_description(self, desc: str | None = None, refresh: bool | None = True) -> None:
            pass  # keep naming the model, not "Reconstruction complete"

        def set_description_str(self, desc: str | None = None, refresh: bool | None = True) -> None:
            pass

        def set_postfix_str(self, s: str = "", refresh: bool | None = True) -> None:
            pass  # the rate is in the bar's own format

    return DownloadBar


def copy_checkpoint(source: Path, output: Path) -> None:
    """Copy a checkpoint's files (the cache's links resolved) into `output`; raises OSError."""
    output.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        target = output / path.name
        if path.is_file() and not (target.exists() and target.samefile(path)):
            shutil.copyfile(path, target)
