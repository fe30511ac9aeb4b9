"""How the API tier and the model tier talk: SageMaker's container invocation contract.

The same bytes flow through a real SageMaker endpoint, ``tunesmith endpoint`` run locally and
the tests' stand-in::

    POST /invocations
        Content-Type: application/json           body: a GenerateRequest (the one contract)
                    | multipart/form-data         or its fields as a form, with the uploads
                                                  input_audio and melody (`invocation_body`)
        Accept: audio/wav | audio/flac | ... | */*   optional; picks the format if the body has none
    200 OK
        Content-Type: audio/wav | audio/flac | audio/mpeg | audio/ogg | audio/ogg; codecs=opus
                                                 body: the encoded track
      X-Amzn-SageMaker-Custom-Attributes:
        seed=7&sample_rate=32000&channels=1&duration=10.0&format=wav&model=m
        &generation_seconds=4.2&engine.precision=int8&engine.kernels=compiled&...
        &input_audio.sha256=...&input_audio.start=0.0&input_audio.end=4.0
    4xx / 5xx
        Content-Type: application/json           body: {"error": ..., "message": ..., ...}

Audio travels as encoded bytes, never as JSON lists of floats: a 30 s mono track is 1.9 MB
of WAV, well inside the 4 MB (serverless) and 6 MB (real-time) payload limits. The metadata
rides in the custom-attributes header, which SageMaker forwards verbatim (at most 1024
visible ASCII characters), URL-encoded as a query string: what the API tier needs for the
track's record (`tunesmith.schema.TrackRecord`) that only the engine knows, the engine's
description (``engine.*``) and each upload's hash and the part of it used. The model name is
shortened to fit, then the optional fields dropped from the end.

An asynchronous invocation's answer never reaches the API tier: SageMaker keeps only its body
(the audio, written to S3). So the API tier asks the container to store the track's record
itself, naming where in the request's custom attributes (`RecordDestination`):

      X-Amzn-SageMaker-Custom-Attributes:
        record=s3://bucket/music-output/<id>.json&audio=music-output/<id>/track.wav
        &endpoint=<endpoint name>

The container writes the record there before it answers (a failed write fails the
invocation), so a track SageMaker stored always has its record. This module imports no torch.
"""

from __future__ import annotations

import json
import math
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit

from tunesmith.formats import FORMATS
from tunesmith.schema import AudioFormat, GenerateRequest, InputRecord, TrackRecord
from tunesmith.storage.base import KEY_PATTERN, PREFIX_PATTERN

__all__ = [
    "CUSTOM_ATTRIBUTES_HEADER",
    "JSON_TYPE",
    "MAX_ATTRIBUTES_CHARS",
    "RecordDestination",
    "RenderedTrack",
    "TrackInfo",
    "audio_size_bound",
    "encode_form",
    "invocation_body",
]

CUSTOM_ATTRIBUTES_HEADER: Final = "X-Amzn-SageMaker-Custom-Attributes"
MAX_ATTRIBUTES_CHARS: Final = 1024
JSON_TYPE: Final = "application/json"
_WAV_HEADER_BYTES: Final = 44
_REQUIRED: Final = ("seed", "sample_rate", "channels", "duration", "format", "model")
_ENGINE: Final = "engine."
_PRODUCTION: Final = "production."
_BUCKET: Final = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_AUDIO_KEY: Final = re.compile(PREFIX_PATTERN.pattern + r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_ENDPOINT_NAME: Final = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")


@dataclass(frozen=True)
class TrackInfo:
    """What the model tier reports about a track it rendered.

    `engine` describes the engine (`tunesmith.render.engine_description`: version, precision,
    kernels...), `inputs` each upload it conditioned on; both are empty from an older
    container, and `generation_seconds` None."""

    seed: int
    sample_rate: int
    channels: int
    duration: float
    format: AudioFormat
    model: str
    engine: Mapping[str, str] = field(default_factory=dict)
    generation_seconds: float | None = None
    inputs: Mapping[str, InputRecord] = field(default_factory=dict)
    # what bpm/key analysis found (numbers and key names; the section map follows the request)
    production: Mapping[str, float | int | str] = field(default_factory=dict)

    @classmethod
    def from_record(cls, record: TrackRecord) -> TrackInfo:
        """What of a rendered track's record the model tier reports."""
        return cls(
            seed=record.seed,
            sample_rate=record.sample_rate,
            channels=record.channels,
            duration=record.duration,
            format=record.format,
            model=record.model,
            engine=dict(record.engine),
            generation_seconds=record.generation_seconds,
            inputs=dict(record.inputs),
            production={
                name: value
                for name, value in (record.production or {}).items()
                if isinstance(value, float | int | str) and not isinstance(value, bool)
            },
        )

    def to_attributes(self) -> str:
        """The custom-attributes header value; a model name too long to fit is shortened, and
        optional fields are left out (the least needed first) while even ``...`` cannot fit."""
        head = urlencode(
            {
                "seed": self.seed,
                "sample_rate": self.sample_rate,
                "channels": self.channels,
                "duration": repr(self.duration),
                "format": self.format,
            }
        )
        # most needed first: what was conditioned on, then the engine, then the timing
        optional = [
            [(f"{name}.sha256", used.sha256), (f"{name}.start", repr(used.start)),
             (f"{name}.end", repr(used.end))]
            for name, used in self.inputs.items()
        ]  # fmt: skip
        optional += [[(_PRODUCTION + key, str(value)) for key, value in self.production.items()]]
        optional += [[(_ENGINE + key, value)] for key, value in self.engine.items()]
        if self.generation_seconds is not None:
            optional.append([("generation_seconds", repr(self.generation_seconds))])
        while True:
            pairs = [pair for group in optional for pair in group]
            fixed = "&".join(filter(None, [head, urlencode(pairs)]))
            if len(fixed) + len("&model=...") <= MAX_ATTRIBUTES_CHARS or not optional:
                break
            optional.pop()
        name = self.model
        for keep in range(len(name), 0, -1):  # keep the tail: the name, not its directory
            shown = name if keep == len(name) else "..." + name[-keep:]
            value = f"{fixed}&{urlencode({'model': shown})}"
            if len(value) <= MAX_ATTRIBUTES_CHARS:
                return value
        return f"{fixed}&model=..."

    @classmethod
    def from_attributes(cls, value: str | None) -> TrackInfo:
        """Parse a custom-attributes header value; `ValueError` names what is missing or wrong.

        Fields it does not know are ignored (a newer container may report more)."""
        if not value:
            raise ValueError("the response carries no track metadata (custom attributes)")
        fields = dict(parse_qsl(value, keep_blank_values=True))
        missing = sorted(set(_REQUIRED) - set(fields))
        if missing:
            raise ValueError(f"the track metadata lacks {', '.join(missing)}")
        fmt = fields["format"]
        if fmt not in FORMATS:
            raise ValueError(f"the track metadata names an unknown format {fmt!r}")
        try:
            seed, rate, channels, duration = (
                int(fields["seed"]),
                int(fields["sample_rate"]),
                int(fields["channels"]),
                float(fields["duration"]),
            )
            spent = fields.get("generation_seconds")
            generation_seconds = None if spent is None else float(spent)
            inputs = {
                key.removesuffix(".sha256"): InputRecord(
                    sha256=digest,
                    start=float(fields[key.replace(".sha256", ".start")]),
                    end=float(fields[key.replace(".sha256", ".end")]),
                )
                for key, digest in fields.items()
                if key.endswith(".sha256")
            }
        except (ValueError, KeyError):
            raise ValueError(f"the track metadata is malformed: {value[:200]!r}") from None
        if seed < 0 or rate <= 0 or channels <= 0 or not math.isfinite(duration) or duration <= 0:
            raise ValueError(f"the track metadata is out of range: {value[:200]!r}")
        engine = {k.removeprefix(_ENGINE): v for k, v in fields.items() if k.startswith(_ENGINE)}
        production = {
            k.removeprefix(_PRODUCTION): _scalar(v)
            for k, v in fields.items()
            if k.startswith(_PRODUCTION)
        }
        return cls(
            seed,
            rate,
            channels,
            duration,
            fmt,
            fields["model"],
            engine=engine,
            generation_seconds=generation_seconds,
            inputs=inputs,
            production=production,
        )


def _scalar(value: str) -> float | int | str:
    """A reported analysis value as it was: an integer, a number, or text (a key's name)."""
    for kind in (int, float):
        try:
            number = kind(value)
        except ValueError:
            continue
        if math.isfinite(number):
            return number
    return value


@dataclass(frozen=True)
class RecordDestination:
    """Where the container stores a track's record itself: `key` (``<prefix><id>.json``) in
    `bucket`, describing the audio SageMaker writes to `audio_key`, rendered by `endpoint`."""

    bucket: str
    key: str
    audio_key: str
    endpoint: str

    def __post_init__(self) -> None:
        if not _BUCKET.fullmatch(self.bucket):
            raise ValueError(f"not an S3 bucket name: {self.bucket[:80]!r}")
        if not KEY_PATTERN.fullmatch(self.key) or not self.key.endswith(".json"):
            raise ValueError(f"not a track record's key (<prefix><id>.json): {self.key[:120]!r}")
        if not _AUDIO_KEY.fullmatch(self.audio_key):
            raise ValueError(f"not an object key: {self.audio_key[:120]!r}")
        if not _ENDPOINT_NAME.fullmatch(self.endpoint):
            raise ValueError(f"not a SageMaker endpoint name: {self.endpoint[:80]!r}")

    @property
    def id(self) -> str:
        """The track's id: the record key's name."""
        return self.key.rsplit("/", 1)[-1].removesuffix(".json")

    def to_attributes(self) -> str:
        """The custom-attributes header value that carries it (well under 1024 characters)."""
        return urlencode(
            {
                "record": f"s3://{self.bucket}/{self.key}",
                "audio": self.audio_key,
                "endpoint": self.endpoint,
            }
        )

    @classmethod
    def from_attributes(cls, value: str | None) -> RecordDestination | None:
        """The destination a request's custom attributes name; None when they name none (a
        synchronous request: the answer's header carries the record's parts instead).
        `ValueError` names what is malformed."""
        fields = dict(parse_qsl(value or "", keep_blank_values=True))
        if "record" not in fields:
            return None
        where = urlsplit(fields["record"])
        if where.scheme != "s3" or where.query or where.fragment:
            raise ValueError(f"the record's destination is not an s3:// URI: {value!r:.200}")
        return cls(
            where.netloc,
            where.path.removeprefix("/"),
            fields.get("audio", ""),
            fields.get("endpoint", ""),
        )

    def record(self, rendered: TrackRecord) -> TrackRecord:
        """`rendered`'s record as stored here: its id, its audio's key and the endpoint."""
        return rendered.model_copy(
            update={
                "id": self.id,
                "audio_key": self.audio_key,
                "engine": {**rendered.engine, "endpoint": self.endpoint},
            }
        )


def invocation_body(request: GenerateRequest, files: Mapping[str, bytes]) -> tuple[bytes, str]:
    """The body and content type that ask the model tier for `request`: JSON, or a form when
    there are uploads. Only the fields the caller set travel, plus the format (so the answer's
    format is known) and the seed when one was chosen: the model tier applies the defaults, and
    ``continuation_start`` given or not means what it meant to the caller."""
    fields = request.model_dump(mode="json", exclude_unset=True) | {"format": request.format}
    if request.seed is not None:
        fields["seed"] = request.seed
    if not files:
        return json.dumps(fields, ensure_ascii=False).encode(), JSON_TYPE
    text = {name: _form_value(value) for name, value in fields.items() if value is not None}
    return encode_form(text, files)


def _form_value(value: object) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def encode_form(fields: Mapping[str, str], files: Mapping[str, bytes]) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body (RFC 7578) of text `fields` and `files`, and its content
    type; `tunesmith.uploads.parse_form` reads it back."""
    while True:  # a boundary that occurs in no part
        boundary = f"tunesmith-{secrets.token_hex(16)}"
        marker = boundary.encode()
        if not any(marker in data for data in files.values()) and not any(
            boundary in text for text in fields.values()
        ):
            break
    parts: list[bytes] = []
    for name, text in fields.items():
        parts.append(_part(marker, f'name="{name}"', text.encode()))
    for name, data in files.items():
        disposition = f'name="{name}"; filename="{name}"\r\nContent-Type: application/octet-stream'
        parts.append(_part(marker, disposition, data))
    body = b"".join(parts) + b"--" + marker + b"--\r\n"
    return body, f"multipart/form-data; boundary={boundary}"


def _part(marker: bytes, disposition: str, data: bytes) -> bytes:
    head = f"Content-Disposition: form-data; {disposition}\r\n\r\n".encode()
    return b"--" + marker + b"\r\n" + head + data + b"\r\n"


@dataclass(frozen=True)
class RenderedTrack:
    """An encoded track as the model tier returns it."""

    audio: bytes
    content_type: str
    info: TrackInfo


def audio_size_bound(fmt: AudioFormat, frames: int, channels: int, sample_rate: int) -> int:
    """The most bytes `frames` x `channels` of `sample_rate` audio can take encoded as `fmt`.

    WAV is exact: a 44-byte header plus 2 bytes per sample. FLAC is usually far smaller, but
    incompressible audio is stored verbatim, so the bound is the PCM size plus frame headers
    (a few bytes per block of at most 1024 frames) and the metadata blocks.

    MP3 has a hard ceiling: 320 kbit/s for MPEG-1 rates (32 kHz and up, 1152-frame packets),
    160 kbit/s below (576-frame packets), whatever the channels; the bound allows that for
    every packet, a few more for the encoder's delay, padding and info frame, and tags.
    Opus's ceiling is 510 kbit/s per stream (mono or coupled stereo is one stream; more
    channels take at most one each), whatever the rate; Ogg pages add at most 29 bytes per
    packet (2.5 ms at the shortest) and a lacing byte per 255.
    Vorbis has no format ceiling, but libsndfile encodes it in VBR at a moderate quality, and
    even its highest quality stays well under 16-bit PCM's rate (several times under at
    libsndfile's); the bound is the PCM size plus 1 % for Ogg pages and the headers.
    Full-scale noise, the hardest input, checks both in the tests.
    """
    if frames < 0 or channels < 1 or sample_rate < 1:
        raise ValueError("frames must be >= 0, channels and sample_rate >= 1")
    pcm = frames * channels * 2
    if fmt == "wav":
        return _WAV_HEADER_BYTES + pcm
    if fmt == "flac":
        return pcm + 32 * math.ceil(frames / 1024) + 8192
    if fmt == "mp3":
        mpeg1 = sample_rate >= 32000
        packet_frames = 1152 if mpeg1 else 576
        packet_bytes = (packet_frames * (320_000 if mpeg1 else 160_000)) // (8 * sample_rate) + 1
        return (math.ceil(frames / packet_frames) + 8) * packet_bytes + 8192
    if fmt == "opus":
        seconds = frames / sample_rate
        streams = 1 if channels <= 2 else channels
        payload = math.ceil(seconds * 510_000 / 8) * streams
        return payload + payload // 255 + math.ceil(seconds * 400) * 29 + 8192
    return pcm + pcm // 100 + 8192
