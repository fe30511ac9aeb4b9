"""A track's audio while it is made: codes from the batch, decoded a chunk at a time.

`stream_audio` runs the codes' generation in a thread of its own (it blocks on the batch) and
receives each frame as it becomes final, through a queue from the decode thread. It decodes the
frames in the chunks `AudioDecoder.chunk_ends` fixes, each chunk on the compute thread between
two decode steps, and yields their samples. The chunks depend on the track's length alone, not
on timing, so a streamed track is the same samples as the one `MusicGenEngine.generate` makes.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from tunesmith.errors import GenerationFailed

if TYPE_CHECKING:
    import torch

    from tunesmith.engine.audio.codec import AudioDecoder, CodecStream

__all__ = ["CodeSink", "Producer", "stream_audio"]

CodeSink = Callable[["torch.Tensor"], None]
"""Takes the track's next final frames, ``(K, n)``, in order."""
Producer = Callable[[CodeSink, threading.Event], object]
"""Generates the track's codes into the sink; stops (raising) once the event is set."""

_POLL = 0.05  # seconds between looks at the caller's cancel event while waiting for codes


@dataclass(frozen=True)
class _Failed:
    error: BaseException


_END = object()


def stream_audio(
    produce: Producer,
    audio: AudioDecoder,
    call: Callable[[Callable[[], Any]], Any],
    *,
    frames: int,
    samples: int,
    stereo: bool,
    cancel: threading.Event | None = None,
) -> Iterator[npt.NDArray[np.float32]]:
    """The samples ``(n, channels)`` of a `frames` long track, `samples` in all, as `produce`
    makes its codes; `call` runs work on the compute thread. Setting `cancel` stops it (the
    producer raises `Canceled`), and so does closing the iterator."""
    import torch

    codes: queue.Queue[Any] = queue.Queue()
    halt = threading.Event()

    def work() -> None:
        try:
            produce(codes.put, halt)
        except BaseException as exc:  # handed to the consumer, who raises it
            codes.put(_Failed(exc))
            return
        codes.put(_END)

    producer = threading.Thread(target=work, name="tunesmith-codes", daemon=True)
    producer.start()

    def next_codes() -> Any:
        while True:
            if cancel is not None and cancel.is_set():
                halt.set()
            try:
                item = codes.get(timeout=_POLL)
            except queue.Empty:
                continue
            if isinstance(item, _Failed):
                raise item.error
            return item

    ends = audio.chunk_ends(frames) if audio.streams else [frames]
    streams = [audio.stream() for _ in range(2 if stereo else 1)] if audio.streams else []
    pending: list[torch.Tensor] = []
    have = start = sent = 0
    ended = False
    try:
        for end in ends:
            while have < end - start and not ended:
                item = next_codes()
                if item is _END:
                    ended = True
                else:
                    pending.append(item)
                    have += item.shape[1]
            if have < end - start:
                raise GenerationFailed(f"the model produced {start + have} of {frames} frames")
            joined = torch.cat(pending, dim=1)
            chunk, rest = joined[:, : end - start], joined[:, end - start :]
            pending, have, start = [rest], rest.shape[1], end
            if streams:
                out = call(partial(_decode_chunk, streams, chunk))
            else:  # a decoder that cannot run in chunks: the whole track at once
                out = call(partial(_decode_whole, audio, chunk, stereo))
            keep = out[: samples - sent]
            sent += keep.shape[0]
            yield keep
        while not ended:  # the producer's outcome: any error after its last frame
            ended = next_codes() is _END
    except RuntimeError as exc:  # torch's, e.g. out of memory in a chunk
        raise GenerationFailed(f"audio decoding failed: {exc}") from None
    finally:
        halt.set()
        producer.join()
    if sent < samples:
        raise GenerationFailed(f"the model produced {sent} samples, {samples} were needed")


def _halves(codes: torch.Tensor, count: int) -> list[torch.Tensor]:
    """Each channel's codebooks: a stereo model interleaves left and right (L0 R0 L1 R1...)."""
    return [codes[c::count] for c in range(count)]


def _decode_chunk(streams: list[CodecStream], codes: torch.Tensor) -> npt.NDArray[np.float32]:
    import torch

    parts = [s.decode(part) for s, part in zip(streams, _halves(codes, len(streams)), strict=True)]
    joined = torch.cat(parts).float().cpu().numpy()  # (channels, samples)
    return np.ascontiguousarray(joined.T)


def _decode_whole(
    audio: AudioDecoder, codes: torch.Tensor, stereo: bool
) -> npt.NDArray[np.float32]:
    import torch

    parts = [audio.decode(part) for part in _halves(codes, 2 if stereo else 1)]
    return np.ascontiguousarray(torch.cat(parts).float().cpu().numpy().T)
