"""The ``tunesmith`` command: ``serve``, ``generate``, ``endpoint``, ``download``, ``kernels``,
``bench`` and ``loadtest``.

Flags mirror the ``TUNESMITH_*`` environment variables and win over them. Known failures
(bad settings, a model that cannot be loaded, bad parameters, a bad command line) end with a
one-line message and exit status 2, never a traceback.

flags.py     the settings' flags and the CLI's own error
serve.py     ``serve``
generate.py  ``generate``; output.py its file, progress.py its bar
logs.py      what each command logs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

from tunesmith import __version__
from tunesmith.cli.flags import (
    ENDPOINT_SETTINGS,
    GENERATE_SETTINGS,
    SERVE_SETTINGS,
    UsageError,
    add_setting_flags,
    settings_from,
)
from tunesmith.cli.generate import add_generate
from tunesmith.cli.logs import setup_logging
from tunesmith.cli.serve import loopback, serve
from tunesmith.config import DEFAULT_MODEL
from tunesmith.errors import TunesmithError

__all__ = ["ENDPOINT_SETTINGS", "GENERATE_SETTINGS", "SERVE_SETTINGS", "build_parser", "main"]

DESCRIPTION = (
    "Text to music with Meta's MusicGen: serve an HTTP API and web page that store tracks on "
    "local disk or in S3 (serve), make one track into a file (generate), or run the AWS tiers' "
    "engine (endpoint)."
)

# the names tests and the benchmarks have imported from here
_settings = settings_from
_loopback = loopback


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line like every other error of the command."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _kernels(args: argparse.Namespace) -> int:
    from tunesmith.engine import kernels

    status = kernels.status("cpu")  # builds them into the cache where they are missing
    print(f"kernels: {status.describe()}")
    if status.path != "compiled":
        print(f"fix: {status.fix}", file=sys.stderr)
        return 1 if args.require else 0
    if args.model:
        from tunesmith.engine import MusicGenEngine

        engine = MusicGenEngine(args.model, "cpu", precision=args.precision)
        engine.setup()  # converts the decoder's weights into the store, or finds them there
        engine.close()
        store = engine.decoder.store_path
        print(f"converted weights: {store if store else 'none kept (not a quantized precision)'}")
    return 0


def _endpoint(args: argparse.Namespace) -> int:
    from tunesmith.aws.endpoint import endpoint_settings, serve_endpoint
    from tunesmith.engine.checkpoint import checkpoint_dir

    overrides = {name: getattr(args, name) for name in ENDPOINT_SETTINGS}
    for checkpoint in endpoint_settings(overrides).models.values():
        checkpoint_dir(checkpoint)  # as `serve`: each, before the port opens
    return serve_endpoint(overrides, port=args.port)


def _download(args: argparse.Namespace) -> int:
    from tunesmith.engine import save_model

    output = Path(args.output).expanduser()
    if output.exists() and not output.is_dir():
        raise UsageError(f"{output} is a file: give a directory to save the model in")
    model = args.model or DEFAULT_MODEL
    try:
        path = save_model(model, output)
    except OSError as exc:
        raise UsageError(f"cannot save {model} in {output}: {exc.strerror or exc}") from None
    print(f"saved {model} to {path}; use TUNESMITH_MODEL={path}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from tunesmith.benchmark.run import main as bench_main

    return bench_main(args.bench_args)


def _loadtest(args: argparse.Namespace) -> int:
    from tunesmith.benchmark.loadtest import main as loadtest_main

    return loadtest_main(args.bench_args)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tunesmith", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"tunesmith {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="debug logging, and the libraries' own"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    srv = commands.add_parser("serve", help="run the HTTP API with the engine in-process")
    add_setting_flags(srv, SERVE_SETTINGS)
    srv.set_defaults(run=serve)

    add_generate(commands)

    endpoint = commands.add_parser(
        "endpoint", help="serve SageMaker's container contract (/ping, /invocations)"
    )
    endpoint.add_argument(
        "serve", nargs="?", choices=["serve"], help="ignored (SageMaker runs `IMAGE serve`)"
    )
    endpoint.add_argument("--port", type=int, help="default SAGEMAKER_BIND_TO_PORT, else 8080")
    add_setting_flags(endpoint, ENDPOINT_SETTINGS)
    endpoint.set_defaults(run=_endpoint)

    dl = commands.add_parser("download", help="save a model to a directory for offline use")
    dl.add_argument("--model", help=f"HF model id (default {DEFAULT_MODEL})")
    dl.add_argument("-o", "--output", required=True, help="directory to save it in")
    dl.set_defaults(run=_download)
    kern = commands.add_parser(
        "kernels", help="build the compiled kernels if needed and say which kernels run"
    )
    kern.add_argument(
        "--require", action="store_true", help="exit 1 unless the compiled kernels are usable"
    )
    kern.add_argument(
        "--model",
        help="also convert this checkpoint's decoder at --precision and keep it, so a server "
        "(or an image) starts without converting (TUNESMITH_WEIGHT_CACHE says where)",
    )
    kern.add_argument("--precision", default="int8", help="with --model (default int8)")
    kern.set_defaults(run=_kernels)
    bench = commands.add_parser(
        "bench",
        help="time the engine against transformers generate; --arch small-stereo,medium for "
        "other architectures (`tunesmith bench --help`)",
        add_help=False,
    )
    bench.set_defaults(run=_bench)  # its own flags are parsed by tunesmith.benchmark.run
    loadtest = commands.add_parser(
        "loadtest",
        help="serve under concurrent load and faults on loopback (S3, replicas), then check "
        "every stored object (`tunesmith loadtest --help`)",
        add_help=False,
    )
    loadtest.set_defaults(run=_loadtest)  # its flags: tunesmith.benchmark.loadtest
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command in ("bench", "loadtest"):
        args.bench_args = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    setup_logging(args.command, args.verbose)
    try:
        code: int = args.run(args)
    except TunesmithError as exc:
        # one line whatever the message's source put in it (a library's error may span lines)
        print(f"tunesmith: error: {' '.join(exc.message.split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
