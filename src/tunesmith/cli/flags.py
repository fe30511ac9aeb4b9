"""Command-line flags that mirror the ``TUNESMITH_*`` settings, and the CLI's own error."""

from __future__ import annotations

import argparse

from tunesmith.config import DEFAULT_MODEL, Settings, load_settings
from tunesmith.errors import TunesmithError

__all__ = [
    "ENDPOINT_SETTINGS",
    "GENERATE_SETTINGS",
    "SERVE_SETTINGS",
    "UsageError",
    "add_setting_flags",
    "settings_from",
]


class UsageError(TunesmithError):
    """The command line asks for something impossible (an output path, a flag's value)."""

    code = "usage_error"


HELPS = {
    "model": "HF model id or local directory; several comma-separated, the first the default "
    f"(TUNESMITH_MODEL, default {DEFAULT_MODEL})",
    "model_memory": "memory the loaded models may take, e.g. 6GB; past it the least recently "
    "used idle one is unloaded (TUNESMITH_MODEL_MEMORY)",
    "device": "auto, cpu or cuda (TUNESMITH_DEVICE)",
    "precision": "auto, fp32, int8 or int4 (CPU), fp16 or bf16 (CUDA) (TUNESMITH_PRECISION)",
    "max_batch": "requests decoded together (TUNESMITH_MAX_BATCH, default 8)",
    "step": "auto, eager or cuda-graph: how a decode step runs (TUNESMITH_STEP)",
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

SERVE_SETTINGS = [
    "model", "model_memory", "device", "precision", "max_batch", "step", "batch_window_ms",
    "storage", "local_dir", "s3_bucket", "s3_prefix", "url_mode",
    "public_base_url", "host", "port", "api_key", "max_duration", "max_queue",
    "presign_expires", "max_body_bytes", "extend_stride", "max_upload_bytes", "max_jobs",
    "job_heartbeat", "api_keys_file", "protect_metrics", "rate_limit", "max_waiting",
    "queue_timeout", "request_timeout", "shutdown_grace",
]  # fmt: skip

GENERATE_SETTINGS = ["model", "device", "precision", "max_duration", "extend_stride"]

# `endpoint` listens on --port, else SageMaker's SAGEMAKER_BIND_TO_PORT, else 8080.
ENDPOINT_SETTINGS = [
    "model", "model_memory", "device", "precision", "max_batch", "step", "batch_window_ms", "host",
    "max_duration", "max_queue", "max_body_bytes", "max_response_bytes", "extend_stride",
    "max_upload_bytes",
]  # fmt: skip


def add_setting_flags(parser: argparse.ArgumentParser, names: list[str]) -> None:
    """Add ``--name`` flags for the given settings, each defaulting to the environment."""
    for name in names:
        parser.add_argument("--" + name.replace("_", "-"), dest=name, help=HELPS[name])


def settings_from(args: argparse.Namespace, names: list[str]) -> Settings:
    return load_settings(**{name: getattr(args, name) for name in names})
