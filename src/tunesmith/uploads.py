"""Requests that carry audio: ``multipart/form-data`` bodies and the checks on their uploads.

Every tier parses a form here (the local API, the SageMaker container, the Lambda), so a form
means the same everywhere: the fields are `GenerateRequest` 's, given as strings, plus the
files ``input_audio`` (audio to continue) and ``melody`` (a melody to follow). `parse_form`
needs nothing beyond the standard library and python-multipart, so the API tier can check a
form without the audio stack; `prepare_audio` then decodes the uploads (numpy, libsndfile),
before any compute, and refuses each bad one with the field it came in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tunesmith.errors import FieldError, InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from tunesmith.schema import DurationLimit, GenerateRequest, parse_generate_request

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from tunesmith.engine.base import Engine

__all__ = [
    "MAX_PROMPT_SECONDS",
    "MULTIPART",
    "UPLOAD_FIELDS",
    "AudioInput",
    "AudioInputs",
    "Form",
    "audio_inputs",
    "check_abilities",
    "check_uploads",
    "is_form",
    "parse_form",
    "parse_generate_form",
    "prepare_audio",
]

MULTIPART = "multipart/form-data"
UPLOAD_FIELDS = ("input_audio", "melody")
MAX_PROMPT_SECONDS = 30.0  # one window: the most audio the model can take as context


@dataclass(frozen=True)
class Form:
    """A parsed form: text fields by name, and the uploaded files' bytes by field name."""

    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)


def is_form(content_type: str | None) -> bool:
    return (content_type or "").split(";")[0].strip().lower() == MULTIPART


def parse_form(body: bytes, content_type: str) -> Form:
    """Parse a ``multipart/form-data`` body (the whole body, already size-checked)."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if kind.lower() != MULTIPART.encode() or not boundary:
        raise UnsupportedMediaType(
            [FieldError("body", "expected multipart/form-data with a boundary")]
        )
    parts: list[tuple[bytes, bytearray]] = []
    header = {"field": b"", "value": b""}
    disposition = [b""]

    def on_part_begin() -> None:
        disposition[0] = b""
        parts.append((b"", bytearray()))

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header["value"] += data[start:end]

    def on_header_end() -> None:
        if header["field"].lower() == b"content-disposition":
            disposition[0] = header["value"]
        header["field"], header["value"] = b"", b""

    def on_headers_finished() -> None:
        _, params = parse_options_header(disposition[0])
        parts[-1] = (params.get(b"name", b""), parts[-1][1])

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1][1].extend(data[start:end])

    callbacks: Any = {
        "on_part_begin": on_part_begin,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished,
        "on_part_data": on_part_data,
    }
    parser = MultipartParser(boundary, callbacks)
    try:
        parser.write(body)
        parser.finalize()
    except Exception as exc:  # python-multipart raises its own parse errors
        problem = FieldError("body", f"malformed multipart/form-data: {exc}")
        raise InvalidRequest([problem]) from None
    return _collect(parts)


def _collect(parts: list[tuple[bytes, bytearray]]) -> Form:
    form = Form()
    problems = []
    for raw_name, data in parts:
        name = raw_name.decode("utf-8", "replace")
        if not name:
            problems.append(FieldError("body", "a form part has no name"))
        elif name in form.fields or name in form.files:
            problems.append(FieldError(name, "given more than once"))
        elif name in UPLOAD_FIELDS:
            form.files[name] = bytes(data)
        else:
            try:
                form.fields[name] = data.decode("utf-8")
            except UnicodeDecodeError:
                problems.append(FieldError(name, "is not UTF-8 text"))
    if problems:
        raise InvalidRequest(problems)
    return form


_OPTIONAL = frozenset(
    name for name, info in GenerateRequest.model_fields.items() if not info.is_required()
)


def parse_generate_form(
    body: bytes,
    content_type: str,
    *,
    max_duration: float | DurationLimit,
    max_upload_bytes: int,
    models: Sequence[str] = (),
) -> tuple[GenerateRequest, dict[str, bytes]]:
    """A form body as a validated request and its uploads (each within `max_upload_bytes`);
    `models` as `parse_generate_request` takes them."""
    form = parse_form(body, content_type)
    for name, data in form.files.items():
        if len(data) > max_upload_bytes:
            raise PayloadTooLarge(max_upload_bytes, field=name)
        if not data:
            raise InvalidRequest([FieldError(name, "the upload is empty")])
    # a form cannot say null: an empty optional field (seed, continuation_end) is not given
    fields = {k: v for k, v in form.fields.items() if v.strip() or k not in _OPTIONAL}
    request = parse_generate_request(fields, max_duration=max_duration, form=True, models=models)
    check_uploads(request, form.files)
    return request, form.files


def check_uploads(request: GenerateRequest, files: dict[str, bytes]) -> None:
    """The request's fields agree with the files it came with."""
    if request.continues and "input_audio" not in files:
        raise InvalidRequest([FieldError("continuation_start", "needs an input_audio upload")])
    if request.source_track is not None and "input_audio" not in files:
        raise InvalidRequest([FieldError("source_track", "needs an input_audio upload")])


@dataclass(frozen=True)
class AudioInput:
    """An upload decoded to the model's rate and channels: the part of it that is used."""

    samples: npt.NDArray[np.float32]  # (frames, channels)
    sample_rate: int
    sha256: str  # of the uploaded bytes, for the track's record
    start: float  # seconds into the upload where the used part begins
    end: float

    @property
    def seconds(self) -> float:
        return float(self.samples.shape[0] / self.sample_rate)


@dataclass(frozen=True)
class AudioInputs:
    """The audio a request conditions on, if any."""

    continuation: AudioInput | None = None
    melody: AudioInput | None = None

    @property
    def uploads(self) -> list[str]:
        """The upload fields these came from."""
        pairs = (("input_audio", self.continuation), ("melody", self.melody))
        return [name for name, given in pairs if given is not None]


def audio_inputs(
    request: GenerateRequest, files: dict[str, bytes], engine: Engine, *, model: str | None = None
) -> AudioInputs:
    """`prepare_audio` for the loaded `engine` (its rate and abilities; until it is loaded
    they raise `ModelNotReady`); `model` is its id, for the messages."""
    return prepare_audio(
        request,
        files,
        sample_rate=engine.sample_rate,
        channels=engine.channels,
        melody=engine.follows_melody,
        continuation=engine.continues_audio,
        max_seconds=engine.max_track_seconds,
        model=model,
    )


def check_abilities(
    request: GenerateRequest,
    uploads: Collection[str],
    *,
    melody: bool,
    continuation: bool,
    max_seconds: float | None = None,
    model: str | None = None,
) -> None:
    """The request asks only what its model can do: a track no longer than `max_seconds`
    (None: any), audio to continue only if it `continuation`, a melody only if it follows
    `melody` s, bpm or key only where Rubber Band is installed. `uploads` names the files it
    came with; `model` is the model's id."""
    if request.needs_rubberband is not None:
        from tunesmith.production import rubberband

        rubberband.require(request.needs_rubberband)
    which = f"model {model!r}" if model else "this server's model"
    if max_seconds is not None and request.duration > max_seconds + 1e-9:
        raise InvalidRequest(
            [FieldError("duration", f"must be at most {max_seconds:g} seconds for {which}")]
        )
    if "input_audio" in uploads and not continuation:
        raise InvalidRequest([FieldError("input_audio", f"{which} does not continue audio")])
    if "melody" in uploads and not melody:
        fix = (
            "name a melody model in 'model' (GET /models lists them)"
            if model
            else "serve a musicgen-melody checkpoint (TUNESMITH_MODEL=facebook/musicgen-melody)"
        )
        raise InvalidRequest([FieldError("melody", f"{which} does not follow melodies: {fix}")])


def prepare_audio(
    request: GenerateRequest,
    files: dict[str, bytes],
    *,
    sample_rate: int,
    channels: int,
    melody: bool,
    continuation: bool = True,
    max_seconds: float | None = None,
    model: str | None = None,
) -> AudioInputs:
    """Decode and check a request's uploads for a model of `sample_rate` and `channels`
    (`check_abilities` for the rest; `model` names it in the messages). Raises
    `InvalidRequest` naming the field."""
    check_uploads(request, files)
    check_abilities(
        request,
        files,
        melody=melody,
        continuation=continuation,
        max_seconds=max_seconds,
        model=model,
    )
    prompt = None
    if "input_audio" in files:
        prompt = _continuation(request, files["input_audio"], sample_rate, channels)
        if request.duration <= prompt.seconds + 1e-9:
            raise InvalidRequest(
                [
                    FieldError(
                        "duration",
                        f"must be longer than the audio it continues ({prompt.seconds:g} s)",
                    )
                ]
            )
    tune = None
    if "melody" in files:
        samples, seconds, digest = _decode("melody", files["melody"], sample_rate, channels)
        used = samples[: round(MAX_PROMPT_SECONDS * sample_rate)]
        tune = AudioInput(used, sample_rate, digest, 0.0, min(seconds, MAX_PROMPT_SECONDS))
    return AudioInputs(prompt, tune)


def _decode(
    name: str, data: bytes, sample_rate: int, channels: int
) -> tuple[npt.NDArray[np.float32], float, str]:
    from tunesmith.engine.audio import read_audio

    try:
        samples, seconds = read_audio(data, sample_rate, channels)
    except ValueError as exc:
        raise InvalidRequest([FieldError(name, str(exc))]) from None
    return samples, seconds, hashlib.sha256(data).hexdigest()


def _continuation(
    request: GenerateRequest, data: bytes, sample_rate: int, channels: int
) -> AudioInput:
    """The upload's part from continuation_start to continuation_end, its last 30 s at most."""
    samples, seconds, digest = _decode("input_audio", data, sample_rate, channels)
    start, end = request.continuation_start, request.continuation_end
    if start >= seconds:
        raise InvalidRequest(
            [FieldError("continuation_start", f"is past the end of input_audio ({seconds:g} s)")]
        )
    if end is not None and end > seconds + 1e-6:
        raise InvalidRequest(
            [FieldError("continuation_end", f"is past the end of input_audio ({seconds:g} s)")]
        )
    end = seconds if end is None else end
    start = max(start, end - MAX_PROMPT_SECONDS)
    first, last = round(start * sample_rate), min(round(end * sample_rate), samples.shape[0])
    if last - first < sample_rate // 50:  # less than a frame of the codec
        raise InvalidRequest([FieldError("input_audio", "the part to continue is too short")])
    return AudioInput(samples[first:last], sample_rate, digest, start, end)
