"""The models a server serves: one engine per configured checkpoint, loaded on first use.

`ModelPool` holds a `ServedModel` per ``TUNESMITH_MODEL`` entry, by its id. The default (the
first) starts loading when the server starts; any other loads when a request first names it.
Work on a model holds a `Lease` for as long as it runs (a request, a job, a stream), and a model
with a lease is never unloaded.

``TUNESMITH_MODEL_MEMORY`` bounds what stays loaded, by each model's estimate
(`tunesmith.pool.memory`): before a load that would pass it, the least recently used loaded
model with no lease is unloaded (its engine closed and dropped, so its memory goes back; it
loads again when next asked for). When only leased models could make room, the load waits: a
request is refused with `Overloaded` (503, Retry-After), a job stays queued until room comes.
A model bigger than the whole budget still loads when nothing else is loaded.

Torch-free: engines are made by a factory (`tunesmith.engine.engine_for`) and only ever
touched through the `Engine` protocol.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from tunesmith.errors import (
    Canceled,
    FieldError,
    InvalidRequest,
    ModelNotReady,
    ModelUnavailable,
    Overloaded,
    TunesmithError,
)
from tunesmith.pool.memory import weight_bytes

if TYPE_CHECKING:
    from tunesmith.config import Settings
    from tunesmith.engine.base import Engine
    from tunesmith.engine.registry import Capabilities

__all__ = ["Lease", "ModelPool", "ServedModel"]

log = logging.getLogger(__name__)

State = Literal["unloaded", "loading", "loaded", "failed"]
RETRY_AFTER = 10  # seconds a refused request is told to wait for a load or for room


@dataclass(eq=False)
class ServedModel:
    """One served model: its id and checkpoint, and its engine while it is loaded."""

    id: str
    checkpoint: str
    default: bool
    engine: Engine | None = None
    owned: bool = True  # made here, so closed here; a given engine is its giver's to close
    state: State = "unloaded"
    load_error: str | None = None
    in_flight: int = 0  # leases held: requests, jobs and streams under way
    last_used: float = 0.0  # monotonic time its last lease ended (or began)
    loaded_once: bool = False
    load_seconds: float | None = None
    memory_bytes: int | None = None  # the estimate, once known
    # what the engine reported when it last loaded: kept while unloaded, for /healthz
    described: dict[str, Any] = field(default_factory=dict)
    capabilities: Capabilities | None = None

    @property
    def loaded(self) -> bool:
        return self.state == "loaded"


class ModelPool:
    """The served models, `settings.models`, loaded on first use within `settings.model_memory`.

    `engines` gives engines for some ids (set up or not; never unloaded here, their giver
    closes them); the others are made by `factory` (default: `engine_for(settings, checkpoint)`).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        engines: Mapping[str, Engine] | None = None,
        factory: Callable[[str], Engine] | None = None,
    ) -> None:
        self.settings = settings
        self.memory_limit = settings.model_memory
        self.models: dict[str, ServedModel] = {}
        for index, (model_id, checkpoint) in enumerate(settings.models.items()):
            self.models[model_id] = ServedModel(model_id, checkpoint, default=index == 0)
        for model_id, engine in (engines or {}).items():
            model = self.models[model_id]
            model.engine, model.owned = engine, False
            if engine.ready:
                self._loaded(model, engine)
        self._factory = factory or self._engine_for
        self._cond = threading.Condition()
        # one load at a time: transformers' loading is not thread-safe (its meta-device init
        # is process-wide), and two loads would only share the same cores anyway
        self._loading = threading.Lock()
        self.on_default_failure: Callable[[], None] | None = None

    def _engine_for(self, checkpoint: str) -> Engine:
        from tunesmith.engine import engine_for

        return engine_for(self.settings, checkpoint)

    # -- finding -----------------------------------------------------------------------------

    @property
    def default(self) -> ServedModel:
        return next(iter(self.models.values()))

    @property
    def ids(self) -> list[str]:
        return list(self.models)

    def get(self, model_id: str | None) -> ServedModel:
        """The model a request names (None: the default); an unknown id is a 422 on ``model``."""
        if model_id is None:
            return self.default
        model = self.models.get(model_id)
        if model is None:
            served = ", ".join(self.models)
            raise InvalidRequest(
                [FieldError("model", f"unknown model {model_id!r}; served: {served}")]
            )
        return model

    def abilities(self, model: ServedModel) -> Capabilities:
        """What `model` can do, from its checkpoint's config (read once; no load needed).
        Raises `ModelUnavailable` when its files cannot be had."""
        if model.capabilities is None:
            from tunesmith.engine.checkpoint import checkpoint_dir
            from tunesmith.engine.registry import capabilities

            directory = checkpoint_dir(model.checkpoint)
            model.capabilities = capabilities(model.checkpoint, directory)
            if model.memory_bytes is None:
                model.memory_bytes = weight_bytes(directory, self.settings.precision)
        return model.capabilities

    def estimate(self, model: ServedModel) -> int:
        """`model` 's memory estimate in bytes (0 when its files cannot be read)."""
        if model.memory_bytes is None:
            try:
                self.abilities(model)
            except TunesmithError:
                return 0
        return model.memory_bytes or 0

    # -- leases --------------------------------------------------------------------------------

    def lease(self, model_id: str | None) -> Lease:
        """Hold `model_id` (None: the default) so it is not unloaded; release when done."""
        model = self.get(model_id)
        with self._cond:
            model.in_flight += 1
            model.last_used = time.monotonic()
        return Lease(self, model)

    def _release(self, model: ServedModel) -> None:
        with self._cond:
            model.in_flight -= 1
            model.last_used = time.monotonic()
            self._cond.notify_all()  # a load waiting for room may go now

    # -- loading -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start loading the default model (`tunesmith serve` and the container at start)."""
        with self._cond:
            if self.default.state == "unloaded":
                self._begin_load(self.default)

    def _begin_load(self, model: ServedModel) -> None:
        """Start loading `model` in a thread, unloading idle models first to make room
        (`Overloaded` when only busy ones could). Called with the lock held."""
        if model.state in ("loading", "loaded"):
            return
        if model.state == "failed":
            raise ModelUnavailable(model.load_error or f"model {model.id!r} could not be loaded")
        victims = self._make_room(model)
        engine = model.engine if model.engine is not None else self._factory(model.checkpoint)
        model.engine, model.state, model.load_error = engine, "loading", None
        threading.Thread(
            target=self._load, args=(model, engine, victims), name=f"load-{model.id}", daemon=True
        ).start()

    def _make_room(self, model: ServedModel) -> list[Engine]:
        """The engines to close so that `model` fits the budget (already marked unloaded)."""
        if self.memory_limit is None:
            return []
        need = self.estimate(model)
        resident = [m for m in self.models.values() if m is not model and m.state != "unloaded"]
        resident = [m for m in resident if m.state != "failed"]
        used = sum(self.estimate(m) for m in resident)
        idle = sorted(
            (m for m in resident if m.loaded and m.owned and m.in_flight == 0),
            key=lambda m: m.last_used,
        )
        chosen: list[ServedModel] = []
        while used + need > self.memory_limit and idle:
            victim = idle.pop(0)
            chosen.append(victim)
            used -= self.estimate(victim)
        if used + need > self.memory_limit and used > 0:
            busy = ", ".join(m.id for m in resident if m not in chosen)
            raise Overloaded(
                f"model {model.id!r} (~{_mb(need)}) does not fit TUNESMITH_MODEL_MEMORY "
                f"({_mb(self.memory_limit)}) beside the models in use ({busy}); try again "
                "when they are idle",
                retry_after=RETRY_AFTER,
            )
        engines = []
        for victim in chosen:
            log.info("unloading %s to make room for %s", victim.id, model.id)
            assert victim.engine is not None
            engines.append(victim.engine)
            victim.engine, victim.state = None, "unloaded"
        return engines

    def _load(self, model: ServedModel, engine: Engine, victims: list[Engine]) -> None:
        with self._loading:
            self._load_now(model, engine, victims)

    def _load_now(self, model: ServedModel, engine: Engine, victims: list[Engine]) -> None:
        for victim in victims:
            victim.close()
        victims.clear()  # the thread's own arguments must not keep them alive
        gc.collect()
        _trim_heap()  # what the unloaded engines held goes back to the OS before loading
        started = time.monotonic()
        try:
            engine.setup()
        except Exception as exc:  # the engine reports TunesmithError; anything else is a crash
            message = exc.message if isinstance(exc, TunesmithError) else str(exc)
            with self._cond:
                model.state, model.load_error = "failed", message
                if model.owned:
                    model.engine = None
                self._cond.notify_all()
            log.error("model %s could not be loaded: %s", model.id, message)
            if model.default and self.on_default_failure is not None:
                self.on_default_failure()
            return
        with self._cond:
            self._loaded(model, engine)
            model.load_seconds = time.monotonic() - started
            self._cond.notify_all()
        log.info("loaded %s in %.1f s", model.id, model.load_seconds)

    def _loaded(self, model: ServedModel, engine: Engine) -> None:
        model.engine, model.state, model.loaded_once = engine, "loaded", True
        model.load_seconds = model.load_seconds or engine.load_seconds
        model.described = {
            "device": engine.device,
            "precision": engine.precision,
            "kernels": engine.kernels.path,
            "step": engine.step_kind,
            "sample_rate": engine.sample_rate,
            "channels": engine.channels,
            "continues_audio": engine.continues_audio,
            "follows_melody": engine.follows_melody,
        }
        try:  # the engine's own precision now decides the estimate (``auto`` resolved)
            from tunesmith.engine.checkpoint import checkpoint_dir

            model.memory_bytes = weight_bytes(checkpoint_dir(model.checkpoint), engine.precision)
        except (TunesmithError, OSError, ValueError):
            pass

    def unload(self, model_id: str) -> bool:
        """Unload `model_id` now if it is loaded, owned here and idle; whether it was."""
        model = self.get(model_id)
        with self._cond:
            if not (model.loaded and model.owned and model.in_flight == 0):
                return False
            engine, model.engine, model.state = model.engine, None, "unloaded"
        assert engine is not None
        engine.close()
        del engine
        gc.collect()
        _trim_heap()
        return True

    def close(self) -> None:
        """Close the engines made here (what still runs on them fails at its next step)."""
        with self._cond:
            engines = [m.engine for m in self.models.values() if m.owned and m.engine is not None]
        for engine in engines:
            engine.close()

    # -- reporting -----------------------------------------------------------------------------

    @property
    def memory_used(self) -> int:
        """The estimates of the models loaded or loading, together."""
        return sum(
            self.estimate(m) for m in self.models.values() if m.state in ("loaded", "loading")
        )


class Lease:
    """A hold on one model for one piece of work (a context manager; `release` once)."""

    def __init__(self, pool: ModelPool, model: ServedModel) -> None:
        self.pool = pool
        self.model = model
        self._released = False

    def ready(self) -> Engine:
        """The model's engine if it is loaded; else start loading it and raise `ModelNotReady`
        (503, Retry-After), `Overloaded` when there is no room yet, or `ModelUnavailable`
        when it could not be loaded."""
        pool, model = self.pool, self.model
        with pool._cond:
            if model.loaded and model.engine is not None:
                return model.engine
            pool._begin_load(model)
        raise ModelNotReady(f"model {model.id!r} is loading", retry_after=RETRY_AFTER)

    def wait(self, cancel: threading.Event | None = None) -> Engine:
        """The model's engine, loading it first and waiting for room if need be (a job's way);
        `Canceled` when `cancel` is set first, `ModelUnavailable` if it cannot be loaded."""
        pool, model = self.pool, self.model
        with pool._cond:
            while True:
                if model.loaded and model.engine is not None:
                    return model.engine
                if cancel is not None and cancel.is_set():
                    raise Canceled(f"canceled while model {model.id!r} loaded")
                if model.state in ("unloaded", "failed"):
                    # no room yet: a lease ending makes some, and wakes this to look again
                    with contextlib.suppress(Overloaded):
                        pool._begin_load(model)
                pool._cond.wait(0.1)

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.pool._release(self.model)

    def __enter__(self) -> Lease:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _mb(size: int) -> str:
    return f"{size / 1e6:,.0f} MB" if size >= 1e6 else f"{size:,} bytes"


def _trim_heap() -> None:
    from tunesmith.engine.process import trim_heap

    trim_heap()
