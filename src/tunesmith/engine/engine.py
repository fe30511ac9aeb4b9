"""The in-process MusicGen engine: a lifecycle (`setup` loads once) and a `generate` call.

`generate` is thread-safe and blocking: the calling thread tokenizes the prompt and hands the
request to the batch scheduler (`tunesmith.engine.scheduler`), whose one thread encodes the
prompt, steps every in-flight request together, and decodes finished codes to audio with
EnCodec a chunk at a time between steps. Concurrent callers therefore share decode steps, and
no other thread runs the engine's parallel compute (which matters to OpenMP: see the
scheduler). Loading runs in a thread of its own that ends with it, for the same reason. A
track longer than one window, or one that continues given audio, is a sequence of windows
(`tunesmith.engine.musicgen.windows`). Both families (text MusicGen, musicgen-melody) run the same
decoder, scheduler and windows; a family differs only in its conditioning (`EngineParts.
conditioner`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from tunesmith.config import WINDOW_SECONDS
from tunesmith.engine.loader import LoadedModel
from tunesmith.engine.musicgen.windows import Window, plan_windows, run_windows, window_steps
from tunesmith.engine.params import GenerationParams, ProgressCallback, SectionParams, Track
from tunesmith.engine.process import in_passing_thread
from tunesmith.engine.sections import TrackText, section_starts, track_conditioning
from tunesmith.engine.streaming import CodeSink, Producer, stream_audio
from tunesmith.errors import GenerationFailed, ModelNotReady, ModelUnavailable, TunesmithError

if TYPE_CHECKING:
    import torch

    from tunesmith.config import Settings
    from tunesmith.engine.audio.codec import AudioDecoder
    from tunesmith.engine.kernels import KernelStatus
    from tunesmith.engine.musicgen.model import DecodeJob, FastDecoder
    from tunesmith.engine.parts import Conditioner
    from tunesmith.engine.scheduler import BatchScheduler, StepDecoder

__all__ = ["GenerationParams", "MusicGenEngine", "ProgressCallback", "Track", "engine_for"]

log = logging.getLogger(__name__)


class MusicGenEngine:
    """MusicGen text-to-music on one device. Call `setup` once, then `generate` many times.

    `precision` is ``auto`` (fp32 on CPU, fp16 on CUDA), ``fp32``, ``int8`` or ``int4`` (CPU)
    or ``fp16``/``bf16`` (CUDA); up to `max_batch` concurrent requests share each decode step,
    and an idle engine waits `batch_window` seconds for concurrent arrivals to start together.
    Each window of a long track adds `extend_stride` seconds. `step` is how a decode step runs:
    ``eager`` (the dynamic batch, `tunesmith.engine.musicgen.model`), ``cuda-graph`` (a static batch
    replayed as one CUDA graph, `tunesmith.engine.cuda`), ``static`` (that step without the
    graph), or ``auto`` (cuda-graph on CUDA, eager on the CPU).
    """

    def __init__(
        self,
        model: str,
        device: str = "auto",
        *,
        precision: str = "auto",
        max_batch: int = 8,
        batch_window: float = 0.02,
        extend_stride: float = 18.0,
        step: str = "auto",
    ) -> None:
        if not 0 < extend_stride < WINDOW_SECONDS:
            raise ValueError(f"extend_stride must be within the {WINDOW_SECONDS:g} s window")
        self.model_name = model
        self.extend_stride = extend_stride
        self.device_setting = device
        self.precision_setting = precision
        self.max_batch = max_batch
        self.batch_window = batch_window
        self.step_setting = step
        self.step_kind = "eager"  # what runs, once set up (`/healthz` reports it)
        self.load_error: str | None = None
        self.load_seconds: float | None = None  # how long `setup` took, once it succeeded
        self._loaded: LoadedModel | None = None
        self._decoder: FastDecoder | None = None
        self._scheduler: BatchScheduler | None = None
        self._audio: AudioDecoder | None = None
        self._conditioner: Conditioner | None = None
        self.stepper: StepDecoder | None = None  # what the scheduler steps, once set up

    # lifecycle -------------------------------------------------------------------------
    def setup(self) -> None:
        """Load weights, prepare the decoder, start the decode thread (once per process).

        Raises `ModelUnavailable` (or `ConfigError` for an impossible device/precision)."""
        if self._scheduler is not None:
            return
        started = time.monotonic()
        try:
            in_passing_thread(self._setup)
        except TunesmithError as exc:
            self.load_error = exc.message
            raise
        except Exception as exc:  # a crash inside a foreign loader is reported the same way
            self.load_error = f"model {self.model_name!r} could not be loaded: {exc}"
            raise ModelUnavailable(self.load_error) from exc
        self.load_seconds = time.monotonic() - started

    def _setup(self) -> None:
        from tunesmith.engine.parts import assemble

        parts = assemble(
            self.model_name,
            self.device_setting,
            self.precision_setting,
            self.step_setting,
            self.max_batch,
            self.batch_window,
        )
        self._audio, self._decoder = parts.audio, parts.decoder
        self._conditioner = parts.conditioner
        self.stepper, self.step_kind = parts.stepper, parts.step_kind
        self._loaded = parts.loaded
        self._scheduler = parts.scheduler

    def load_in_background(self, on_failure: Callable[[], None] | None = None) -> None:
        """`setup` in a daemon thread, so a server answers (503) while the model loads.

        A failure is logged and kept in `load_error`; `on_failure` is then called."""

        def load() -> None:
            try:
                self.setup()
            except TunesmithError as exc:
                log.error("model could not be loaded: %s", exc.message)
                if on_failure is not None:
                    on_failure()

        threading.Thread(target=load, name="model-loader", daemon=True).start()

    def close(self) -> None:
        """Stop the decode thread; queued requests fail with `ModelNotReady`."""
        if self._scheduler is not None:
            self._scheduler.close()

    @property
    def ready(self) -> bool:
        return self._scheduler is not None

    def check_ready(self) -> None:
        """Raise `ModelNotReady` while loading, `ModelUnavailable` once loading failed."""
        self.loaded  # noqa: B018 - raises until set up

    @property
    def device(self) -> str:
        return str(self.loaded.device)

    @property
    def batch_sizes(self) -> dict[int, int]:
        """How many decode steps ran at each batch size."""
        return dict(self.scheduler.batch_sizes)

    @property
    def loaded(self) -> LoadedModel:
        if self._loaded is None or self._scheduler is None:
            if self.load_error is not None:
                raise ModelUnavailable(self.load_error)
            raise ModelNotReady("the model is still loading", retry_after=10)
        return self._loaded

    @property
    def decoder(self) -> FastDecoder:
        self.loaded  # noqa: B018 - raises until set up
        assert self._decoder is not None
        return self._decoder

    @property
    def scheduler(self) -> BatchScheduler:
        self.loaded  # noqa: B018 - raises until set up
        assert self._scheduler is not None
        return self._scheduler

    @property
    def conditioner(self) -> Conditioner:
        self.loaded  # noqa: B018 - raises until set up
        assert self._conditioner is not None
        return self._conditioner

    @property
    def precision(self) -> str:
        return self.decoder.precision

    @property
    def kernels(self) -> KernelStatus:
        """The kernels the decoder runs (`tunesmith.engine.kernels.status`)."""
        return self.decoder.kernels

    @property
    def max_track_seconds(self) -> float | None:
        """The longest track the model makes: None, any (every family slides the window)."""
        return None

    @property
    def continues_audio(self) -> bool:
        """Whether the model can continue given audio: every family can."""
        return True

    @property
    def sample_rate(self) -> int:
        return self.loaded.sample_rate

    @property
    def channels(self) -> int:
        return self.loaded.audio_channels

    @property
    def follows_melody(self) -> bool:
        """Whether the model conditions on a melody's chroma (musicgen-melody)."""
        return self.loaded.melody

    def frames_for(self, duration: float) -> int:
        return math.ceil(duration * self.loaded.frame_rate)

    @property
    def window_frames(self) -> int:
        """Frames one window holds: 30 s, or fewer where the model has fewer positions."""
        from tunesmith.engine.parts import window_frames

        return window_frames(self.loaded, self.decoder.max_delay)

    def windows_for(
        self, duration: float, prompt_frames: int = 0, sections: Sequence[SectionParams] = ()
    ) -> list[Window]:
        """The windows a `duration` s track takes after `prompt_frames` known frames, one
        starting at each of its `sections` (`tunesmith.engine.sections`)."""
        rate = self.loaded.frame_rate
        stride = min(round(self.extend_stride * rate), self.window_frames - 1)
        total = self.frames_for(duration)
        starts = section_starts(sections, duration, rate)
        return plan_windows(total, prompt_frames, self.window_frames, stride, starts[1:])

    def steps_for(
        self, duration: float, prompt_frames: int = 0, sections: Sequence[SectionParams] = ()
    ) -> int:
        """Decoder steps for a `duration` s track: every window's new frames, plus the
        codebook delay pattern at each window's end."""
        windows = self.windows_for(duration, prompt_frames, sections)
        return window_steps(windows, self.decoder.max_delay)

    # generation ------------------------------------------------------------------------
    def start_job(self, params: GenerationParams) -> DecodeJob:
        """Encode the prompt and prepare a one-window request's decoding state, prefilled,
        without a melody (not yet scheduled; for benchmarks and parity checks, which drive a
        single job)."""
        import torch

        inputs = self.loaded.processor(text=[params.prompt], padding=True, return_tensors="pt")
        decoder = self.decoder

        def start() -> DecodeJob:
            ids, mask = inputs["input_ids"], inputs["attention_mask"]
            conditioning = self.conditioner.track(ids, mask, None, self.sample_rate, False)(0)
            generator = torch.Generator(device=decoder.device)
            generator.manual_seed(params.seed)
            frames = self.frames_for(params.duration)
            return decoder.prime(decoder.open(conditioning, frames, params.sampling, generator))

        try:
            return self.scheduler.call(start)
        except RuntimeError as exc:  # e.g. out of memory allocating the cache
            raise GenerationFailed(f"could not start generation: {exc}") from None

    def encode_prompt_audio(self, samples: npt.NDArray[np.float32]) -> torch.Tensor:
        """EnCodec codes ``(K, frames)`` of `samples` ``(frames, channels)``, at the model's
        rate and channel count (a stereo model's codebooks interleave left and right)."""
        from tunesmith.engine.audio.codec import encode_channels

        encoder, call = self.loaded.model.audio_encoder, self.scheduler.call
        try:
            return call(partial(encode_channels, encoder, samples)).to(self.loaded.device)
        except RuntimeError as exc:
            raise GenerationFailed(f"audio encoding failed: {exc}") from None

    def generate_codes(
        self,
        params: GenerationParams,
        progress: ProgressCallback | None = None,
        prompt: torch.Tensor | None = None,
        sink: CodeSink | None = None,
        cancel: threading.Event | None = None,
        melody: npt.NDArray[np.float32] | None = None,
    ) -> torch.Tensor:
        """The audio codes ``(K, frames)`` for `params`, after the known codes `prompt` (which
        they begin with) if given, following `melody` ``(frames, channels)`` at the model's
        rate (melody models). Blocking; batched with other callers. `sink` gets the frames as
        they become final; `cancel` stops it at the next step (`Canceled`)."""
        import torch

        decoder, call = self.decoder, self.scheduler.call
        known = prompt if prompt is not None else torch.empty(decoder.num_codebooks, 0)
        known = known.to(device=decoder.device, dtype=torch.long)
        windows = self.windows_for(params.duration, known.shape[1], params.sections)
        text = TrackText.of(params, self.loaded.frame_rate)
        tokens = text.tokens(self.loaded.processor)
        track = partial(track_conditioning, self.conditioner, text, tokens, melody)
        try:
            condition = call(partial(track, self.sample_rate, len(windows) > 1))
            generator = torch.Generator(device=decoder.device)
            generator.manual_seed(params.seed)
            return run_windows(
                decoder,
                self.scheduler,
                condition,
                windows,
                params.sampling,
                generator,
                known,
                progress,
                sink,
                cancel,
            )
        except (RuntimeError, ValueError) as exc:  # e.g. out of memory allocating a cache
            raise GenerationFailed(f"generation failed: {exc}") from None

    def decode_audio(self, codes: torch.Tensor, duration: float) -> Track:
        """EnCodec-decode ``(K, frames)`` codes and cut to exactly `duration` seconds (the
        chunks `stream` decodes, all at once)."""
        samples = list(self._stream(lambda sink, halt: sink(codes), duration))
        return Track(np.concatenate(samples), self.sample_rate)

    def stream(
        self,
        params: GenerationParams,
        progress: ProgressCallback | None = None,
        prompt_audio: npt.NDArray[np.float32] | None = None,
        melody: npt.NDArray[np.float32] | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[npt.NDArray[np.float32]]:
        """The track `generate` makes, as samples ``(n, channels)`` a chunk (up to 1 s) at a time
        while it is generated: the first (12 frames) comes after ~15 decode steps, not all of them.
        Setting `cancel` stops it at the next step (`Canceled`), as does closing the iterator."""
        self.check_ready()
        if melody is not None and not self.follows_melody:
            raise ValueError(f"model {self.model_name!r} does not follow melodies")
        prompt = None if prompt_audio is None else self.encode_prompt_audio(prompt_audio)

        def produce(sink: CodeSink, halt: threading.Event) -> None:
            self.generate_codes(params, progress, prompt, sink, halt, melody)

        return self._stream(produce, params.duration, cancel)

    def _stream(
        self, produce: Producer, duration: float, cancel: threading.Event | None = None
    ) -> Iterator[npt.NDArray[np.float32]]:
        assert self._audio is not None
        return stream_audio(
            produce,
            self._audio,
            self.scheduler.call,
            frames=self.frames_for(duration),
            samples=round(duration * self.sample_rate),
            stereo=self.channels == 2,
            cancel=cancel,
        )

    def generate(
        self,
        params: GenerationParams,
        progress: ProgressCallback | None = None,
        prompt_audio: npt.NDArray[np.float32] | None = None,
        melody: npt.NDArray[np.float32] | None = None,
    ) -> Track:
        """Exactly ``params.duration`` seconds of audio; same seed, same audio. With
        `prompt_audio` ``(frames, channels)`` at the model's rate, the track begins with it
        (as the codec reproduces it) and continues it; with `melody` (the same shape), a
        melody model follows its chroma."""
        chunks = list(self.stream(params, progress, prompt_audio, melody))
        return Track(np.concatenate(chunks), self.sample_rate)


def engine_for(settings: Settings, checkpoint: str | None = None) -> MusicGenEngine:
    """The engine for `checkpoint` (default: the settings' first model) with the settings'
    device, precision and batching; not yet set up."""
    return MusicGenEngine(
        checkpoint or settings.default_model,
        settings.device,
        precision=settings.precision,
        max_batch=settings.max_batch,
        batch_window=settings.batch_window_ms / 1000,
        extend_stride=settings.extend_stride,
        step=settings.step,
    )
