"""``tunesmith generate``: one track to a file, with one progress bar.

Everything the command line can get wrong (the output's directory, its format, a file already
there, the parameters, unreadable inputs, a model this machine has not got) is refused before
the model loads.
"""

from __future__ import annotations

import argparse
import logging
import secrets
from pathlib import Path
from typing import Any, get_args

from tunesmith.cli.flags import GENERATE_SETTINGS, add_setting_flags, settings_from
from tunesmith.cli.output import check_destination, output_format, write_atomically
from tunesmith.errors import TunesmithError
from tunesmith.formats import NAMES
from tunesmith.schema import MAX_SEED, Normalization

__all__ = ["add_generate"]

log = logging.getLogger("tunesmith")


def add_generate(commands: Any) -> None:
    gen = commands.add_parser("generate", help="generate one track to a file")
    gen.add_argument("prompt", help="what the music should sound like")
    gen.add_argument(
        "-d", "--duration", type=float, help="seconds (default 10, or what --bars give)"
    )
    gen.add_argument(
        "-o",
        "--output",
        help="output file; its extension (.wav, .flac, .mp3, .ogg or .opus) sets the format "
        "(default tunesmith-SEED.wav)",
    )
    gen.add_argument("--format", choices=list(NAMES), help="must agree with -o's extension")
    gen.add_argument("-f", "--force", action="store_true", help="replace an existing file")
    gen.add_argument(
        "--normalization",
        choices=list(get_args(Normalization)),
        help="default peak; every strategy stays under -1 dBTP",
    )
    gen.add_argument(
        "--loudness-lufs",
        dest="loudness_lufs",
        type=float,
        help="target for --normalization loudness (default -14)",
    )
    gen.add_argument("--seed", type=int)
    gen.add_argument("--temperature", type=float)
    gen.add_argument("--top-k", dest="top_k", type=int)
    gen.add_argument("--top-p", dest="top_p", type=float)
    gen.add_argument("--guidance-scale", dest="guidance_scale", type=float)
    gen.add_argument(
        "--continue",
        dest="continue_from",
        metavar="FILE",
        help="audio to continue: the track begins with it (its last 30 s at most)",
    )
    gen.add_argument(
        "--continuation-start", dest="continuation_start", type=float, help="seconds into FILE"
    )
    gen.add_argument(
        "--continuation-end", dest="continuation_end", type=float, help="default: FILE's end"
    )
    gen.add_argument("--melody", metavar="FILE", help="a melody to follow (musicgen-melody)")
    _add_producer_flags(gen)
    add_setting_flags(gen, GENERATE_SETTINGS)
    gen.set_defaults(run=generate)


def generate(args: argparse.Namespace) -> int:
    from tunesmith.schema import parse_generate_request
    from tunesmith.uploads import check_uploads

    settings = settings_from(args, GENERATE_SETTINGS)
    fmt = output_format(args.output, args.format)
    # drawn here rather than by the engine, so the default file name is known (and checked)
    seed = args.seed if args.seed is not None else secrets.randbelow(MAX_SEED + 1)
    body: dict[str, Any] = {"prompt": args.prompt, "format": fmt, "seed": seed}
    names = (
        *("duration", "temperature", "top_k", "top_p", "guidance_scale", "normalization"),
        *("loudness_lufs", "continuation_start", "continuation_end", *_PRODUCER),
    )
    for name in names:
        if getattr(args, name) is not None:
            body[name] = getattr(args, name)
    if args.sections:
        body["sections"] = args.sections
    request = parse_generate_request(body, max_duration=settings.max_duration)
    output = Path(args.output).expanduser() if args.output else Path(f"tunesmith-{seed}.{fmt}")
    check_destination(output, args.force)
    files = {name: _read_upload(path) for name, path in _uploads(args).items()}
    check_uploads(request, files)

    from tunesmith.cli.progress import AudioBar
    from tunesmith.engine import engine_for
    from tunesmith.engine.checkpoint import checkpoint_dir
    from tunesmith.render import render
    from tunesmith.uploads import audio_inputs

    checkpoint_dir(settings.default_model)  # offline: said now; downloading: its bar first
    with _logs_above_bars(), AudioBar(request.generation_seconds) as bar:
        engine = engine_for(settings)
        engine.setup()
        if args.verbose:
            log.info(
                "device: %s, precision: %s, kernels: %s",
                engine.loaded.device,
                engine.precision,
                engine.kernels.describe(),
            )
        inputs = audio_inputs(request, files, engine)
        if inputs.continuation is not None:
            bar.begins_with(inputs.continuation.seconds)
        audio = render(engine, request, progress=bar.progress, inputs=inputs)
    write_atomically(output, audio.data, args.force)
    record = audio.record
    print(f"wrote {output} ({record.duration:g} s, {record.sample_rate} Hz, seed {record.seed})")
    found = {k: v for k, v in (record.production or {}).items() if k != "sections"}
    if found:
        print("analysis: " + ", ".join(f"{name} {value}" for name, value in found.items()))
    for warning in record.warnings:
        log.warning("%s", warning)
    return 0


_PRODUCER = ("bpm", "bars", "beats_per_bar", "loop", "key", "fade_out")


def _add_producer_flags(gen: argparse.ArgumentParser) -> None:
    """The producers' fields (`tunesmith.production.request`); bpm and key need rubberband."""
    group = gen.add_argument_group("producer controls")
    group.add_argument("--bpm", type=float, help="the exact tempo (40-240): the audio is stretched")
    group.add_argument("--bars", type=int, help="with --bpm: exactly this many bars long")
    group.add_argument("--beats-per-bar", dest="beats_per_bar", type=int, help="default 4")
    group.add_argument(
        "--loop",
        action="store_true",
        default=None,
        help="with --bpm: a seamless loop (WAV files carry loop points)",
    )
    group.add_argument("--key", help="e.g. 'A minor', 'F# major': shifted to it")
    group.add_argument("--fade-out", dest="fade_out", type=float, help="seconds of fade at the end")
    group.add_argument(
        "--section",
        dest="sections",
        action="append",
        type=_section,
        metavar="PROMPT:LENGTH",
        help="a part of the track, in order (repeat): LENGTH in seconds, or bars as '4bars'",
    )


def _section(value: str) -> dict[str, Any]:
    prompt, sep, length = value.rpartition(":")
    length = length.strip().lower()
    try:
        if sep and prompt.strip() and length.endswith("bars"):
            return {"prompt": prompt.strip(), "bars": int(length.removesuffix("bars"))}
        if sep and prompt.strip():
            return {"prompt": prompt.strip(), "duration": float(length)}
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(
        f"{value!r}: give PROMPT:SECONDS or PROMPT:Nbars, e.g. 'intro:8' or 'drop:4bars'"
    )


def _logs_above_bars() -> Any:
    """Log lines printed above the bar rather than through it (with -v there are many)."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    return logging_redirect_tqdm()


def _uploads(args: argparse.Namespace) -> dict[str, str]:
    given = {"input_audio": args.continue_from, "melody": args.melody}
    return {name: path for name, path in given.items() if path is not None}


def _read_upload(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TunesmithError(f"cannot read {path}: {exc.strerror or exc}") from None
