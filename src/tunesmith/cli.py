"""The ``tunesmith`` command: ``serve``, ``generate``, ``endpoint``, ``download``, ``kernels``,
``bench`` and ``loadtest``.

Flags mirror the ``TUNESMITH_*`` environment variables and win over them. Known failures
(bad settings, a model that cannot be loaded, bad parameters) end with a one-line message
and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

from tunesmith import __version__
from tunesmith.config import DEFAULT_MODEL, Settings, load_settings
from tunesmith.errors import TunesmithError
from tunesmith.schema import AudioFormat, Normalization

__all__ = ["main"]

log = logging.getLogger("tunesmith")


def _setting_flags(parser: argparse.ArgumentParser, names: list[str]) -> None:
    """Add ``--name`` flags for the given settings, each defaulting to the environment."""
    helps = {
        "model": f"HF model id or local directory (TUNESMITH_MODEL, default {DEFAULT_MODEL})",
        "device": "auto, cpu or cuda (TUNESMITH_DEVICE)",
        "precision": "auto, fp32, int8 or int4 (CPU), fp16 or bf16 (CUDA) (TUNESMITH_PRECISION)",
        "max_batch": "requests decoded together (TUNESMITH_MAX_BATCH, default 8)",
        "batch_window_ms": "idle wait for concurrent requests, ms (TUNESMITH_BATCH_WINDOW_MS)",
        "storage": "local or s3 (TUNESMITH_STORAGE)",
        "local_dir": "directory for local storage (TUNESMITH_LOCAL_DIR)",
        "s3_bucket": "bucket for s3 storage (TUNESMITH_S3_BUCKET)",
        "s3_prefix": "key prefix (TUNESMITH_S3_PREFIX, default music-output/)",
        "url_mode": "public or presigned (TUNESMITH_URL_MODE)",
        "public_base_url": "URL clients reach this server at (TUNESMITH_PUBLIC_BASE_URL)",
        "host": "bind address (TUNESMITH_HOST, default 127.0.0.1)",
        "port": "port (TUNESMITH_PORT, default 8000)",
        "api_key": "require this key on generate, jobs and tracks (TUNESMITH_API_KEY)",
        "max_duration": "longest track in seconds (TUNESMITH_MAX_DURATION, default 300)",
        "extend_stride": "seconds each window of a long track adds (TUNESMITH_EXTEND_STRIDE, 18)",
        "max_upload_bytes": "largest audio upload (TUNESMITH_MAX_UPLOAD_BYTES, default 10 MiB)",
        "max_queue": "requests admitted at once before 503 (TUNESMITH_MAX_QUEUE)",
        "max_jobs": "jobs queued or running at once before 503 (TUNESMITH_MAX_JOBS, 32)",
        "api_keys_file": "more API keys, one per line (TUNESMITH_API_KEYS_FILE)",
        "protect_metrics": "require a key on /metrics (TUNESMITH_PROTECT_METRICS)",
        "rate_limit": "requests a minute per key or address (TUNESMITH_RATE_LIMIT)",
        "max_waiting": "requests waiting for a slot before 503 (TUNESMITH_MAX_WAITING, 32)",
        "queue_timeout": "seconds a request waits for a slot (TUNESMITH_QUEUE_TIMEOUT, 30)",
        "request_timeout": "seconds a /generate may take before 504 (TUNESMITH_REQUEST_TIMEOUT)",
        "shutdown_grace": "seconds in-flight work gets after SIGTERM (TUNESMITH_SHUTDOWN_GRACE)",
        "job_heartbeat": "seconds between a running job's record writes (TUNESMITH_JOB_HEARTBEAT)",
        "presign_expires": "presigned URL lifetime, seconds (TUNESMITH_PRESIGN_EXPIRES)",
        "max_body_bytes": "request body limit (TUNESMITH_MAX_BODY_BYTES)",
        "max_response_bytes": "largest audio answer (TUNESMITH_MAX_RESPONSE_BYTES, 6 MiB)",
    }
    for name in names:
        parser.add_argument("--" + name.replace("_", "-"), dest=name, help=helps[name])


def _settings(args: argparse.Namespace, names: list[str]) -> Settings:
    return load_settings(**{name: getattr(args, name) for name in names})


SERVE_SETTINGS = [
    "model", "device", "precision", "max_batch", "batch_window_ms",
    "storage", "local_dir", "s3_bucket", "s3_prefix", "url_mode",
    "public_base_url", "host", "port", "api_key", "max_duration", "max_queue",
    "presign_expires", "max_body_bytes", "extend_stride", "max_upload_bytes", "max_jobs",
    "job_heartbeat", "api_keys_file", "protect_metrics", "rate_limit", "max_waiting",
    "queue_timeout", "request_timeout", "shutdown_grace",
]  # fmt: skip


def _json_access_log() -> None:
    """One JSON object per request on stderr (`tunesmith.api.observe`), in place of
    uvicorn's own access lines."""
    access = logging.getLogger("tunesmith.access")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    access.propagate = False


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from tunesmith.api import create_app
    from tunesmith.storage import create_storage

    settings = _settings(args, SERVE_SETTINGS)
    storage = create_storage(settings)
    storage.check()  # an unusable directory or bucket stops here, before the port opens
    app = create_app(settings, storage=storage)
    _json_access_log()
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        access_log=False,
        # past our own grace (below), in-flight requests have failed with a clean 503
        timeout_graceful_shutdown=round(settings.shutdown_grace) + 10,
    )
    if not _loopback(settings.host) and not app.state.tunesmith.keys.required:
        log.warning(
            "serving on %s with no API key: anyone who reaches it can spend its compute and "
            "list its tracks (set TUNESMITH_API_KEY or TUNESMITH_API_KEYS_FILE)",
            settings.host,
        )
    state = app.state.tunesmith
    server = _graceful_server(config, lambda: state.service.stop(settings.shutdown_grace))
    state.on_load_failure = lambda: setattr(server, "should_exit", True)
    log.info(
        "loading %s; http://%s:%d (docs at /docs)", settings.model, settings.host, settings.port
    )
    server.run()
    if state.load_error is not None:
        raise TunesmithError(state.load_error)
    return 0


def _graceful_server(config: Any, on_exit: Callable[[], None]) -> Any:
    """uvicorn's server, telling the service when SIGTERM (or Ctrl-C) comes: uvicorn stops
    taking requests, and those in flight get TUNESMITH_SHUTDOWN_GRACE seconds to finish."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            on_exit()
            super().handle_exit(sig, frame)

    return Server(config)


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


GENERATE_SETTINGS = ["model", "device", "precision", "max_duration", "extend_stride"]


def _generate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from tunesmith.engine import engine_for
    from tunesmith.render import render
    from tunesmith.schema import parse_generate_request
    from tunesmith.uploads import audio_inputs, check_uploads

    settings = _settings(args, GENERATE_SETTINGS)
    output = Path(args.output) if args.output else None
    fmt = args.format or (output.suffix.lstrip(".").lower() if output and output.suffix else "wav")
    body: dict[str, Any] = {"prompt": args.prompt, "duration": args.duration, "format": fmt}
    names = ("seed", "temperature", "top_k", "top_p", "guidance_scale", "normalization")
    for name in (*names, "loudness_lufs", "continuation_start", "continuation_end"):
        if getattr(args, name) is not None:
            body[name] = getattr(args, name)
    request = parse_generate_request(body, max_duration=settings.max_duration)
    files = {name: _read_upload(path) for name, path in _uploads(args).items()}
    check_uploads(request, files)
    engine = engine_for(settings)
    print(f"loading {settings.model} ...", file=sys.stderr)
    engine.setup()
    if args.verbose:
        print(
            f"device: {engine.loaded.device}, precision: {engine.precision}, "
            f"kernels: {engine.kernels.describe()}",
            file=sys.stderr,
        )
    inputs = audio_inputs(request, files, engine)
    known = 0 if inputs.continuation is None else engine.frames_for(inputs.continuation.seconds)
    # one bar over every window of a long track
    with tqdm(total=engine.steps_for(request.duration, known), unit="step", desc="decoding") as bar:

        def progress(done: int, total: int) -> None:
            bar.update(done - bar.n)

        audio = render(engine, request, progress=progress, inputs=inputs)
    seed = audio.record.seed
    output = output or Path(f"tunesmith-{seed}.{request.format}")
    output.write_bytes(audio.data)
    record = audio.record
    print(f"wrote {output} ({record.duration:g} s, {record.sample_rate} Hz, seed {seed})")
    return 0


def _uploads(args: argparse.Namespace) -> dict[str, str]:
    given = {"input_audio": args.continue_from, "melody": args.melody}
    return {name: path for name, path in given.items() if path is not None}


def _read_upload(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TunesmithError(f"cannot read {path}: {exc.strerror or exc}") from None


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


# `endpoint` listens on --port, else SageMaker's SAGEMAKER_BIND_TO_PORT, else 8080.
ENDPOINT_SETTINGS = [
    "model", "device", "precision", "max_batch", "batch_window_ms", "host", "max_duration",
    "max_queue", "max_body_bytes", "max_response_bytes", "extend_stride", "max_upload_bytes",
]  # fmt: skip


def _endpoint(args: argparse.Namespace) -> int:
    from tunesmith.aws.endpoint import serve_endpoint

    serve_endpoint({name: getattr(args, name) for name in ENDPOINT_SETTINGS}, port=args.port)
    return 0


def _download(args: argparse.Namespace) -> int:
    from tunesmith.engine import save_model

    path = save_model(args.model or DEFAULT_MODEL, Path(args.output))
    print(f"saved {args.model or DEFAULT_MODEL} to {path}; use TUNESMITH_MODEL={path}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from tunesmith.benchmark.run import main as bench_main

    return bench_main(args.bench_args)


def _loadtest(args: argparse.Namespace) -> int:
    from tunesmith.benchmark.loadtest import main as loadtest_main

    return loadtest_main(args.bench_args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tunesmith", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"tunesmith {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP API with the engine in-process")
    _setting_flags(serve, SERVE_SETTINGS)
    serve.set_defaults(run=_serve)

    gen = commands.add_parser("generate", help="generate one track to a file")
    gen.add_argument("prompt", help="what the music should sound like")
    gen.add_argument("-d", "--duration", type=float, default=10.0, help="seconds (default 10)")
    gen.add_argument("-o", "--output", help="output file (.wav, .flac, .mp3, .ogg or .opus)")
    formats = list(get_args(AudioFormat))
    gen.add_argument("--format", choices=formats, help="default: from -o, else wav")
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
    _setting_flags(gen, GENERATE_SETTINGS)
    gen.set_defaults(run=_generate)

    endpoint = commands.add_parser(
        "endpoint", help="serve SageMaker's container contract (/ping, /invocations)"
    )
    endpoint.add_argument(
        "serve", nargs="?", choices=["serve"], help="ignored (SageMaker runs `IMAGE serve`)"
    )
    endpoint.add_argument("--port", type=int, help="default SAGEMAKER_BIND_TO_PORT, else 8080")
    _setting_flags(endpoint, ENDPOINT_SETTINGS)
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
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.run(args)
    except TunesmithError as exc:
        print(f"tunesmith: error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
