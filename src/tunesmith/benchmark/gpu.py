"""``scripts/gpu-check``: the engine's CUDA path against transformers on one GPU, and its speed.

How to run it, on a machine with an NVIDIA GPU, a torch built with CUDA and transformers (it
installs nothing: ``scripts/install`` pins the CPU build of torch, which would replace the
CUDA one):

    scripts/gpu-check                    # from a checkout; PYTHON=... picks the interpreter
    PYTHONPATH=src python3 -m tunesmith.benchmark.gpu
    python -m tunesmith.benchmark.gpu    # after `pip install -e . --no-deps` into that env

Options: ``--model DIR`` (a saved checkpoint; default: musicgen-small's architecture with
random weights, built here, nothing downloaded), ``--duration`` (seconds per clip, 10),
``--budget`` (seconds for the whole run, 450). On a machine without CUDA it stops at once
with ``no CUDA device: ...`` on stderr and exit status 3.

What it does, in this order (most important first, so a run cut short by its budget still
answers the question that matters):

1. transformers `generate` at fp32 on the GPU, greedy with guidance 3: the reference scores of
   every step. Their argmax codes are the teacher for the teacher-forced comparisons below;
   transformers' own fp16/bf16 decoder, run teacher-forced on those codes, gives the noise
   floor of half precision.
2. Parity of tunesmith's engine at fp16, then fp32: its greedy loop run free (are the codes the
   same?) and teacher-forced on the reference codes (logit differences at every step).
3. Steps per second: transformers `generate` for one request, then the engine for one request
   and for 8 requests batched through its scheduler (``max_batch=8``), sampled as served
   (top-k 250, guidance 3), timed with ``torch.cuda.synchronize``; fp16 first, then fp32.
4. If time is left: transformers fp16 speed; bf16 parity and speed (informational).

It prints a line per finished step, a table, and last one JSON line with every figure. Exit
status: 0 when fp32 and fp16 parity both passed and nothing of the engine's fp16/fp32 path
failed; 1 when a parity check failed, a step raised, the audio was not finite, or the budget
ran out before both parity checks (transformers' own extra runs and bf16 are reported but do
not count); 2 when torch or transformers cannot be imported; 3 when there is no CUDA device.

Pass criteria (teacher-forced, so every step compares logits over the same codes):

- fp32: max |logit diff| <= 1e-3 x the largest logit. Float32 reordering (other kernels, other
  summation orders) stays orders of magnitude below it; a real bug (a mask, a position, a
  silently halved weight, TF32 left on) does not. The free run must give the same greedy codes,
  or part at a near-tie: at the first differing step both runs have seen the same codes, so
  the reference's top-2 gap there can be at most twice the teacher-forced max difference.
- fp16: top-1 agreement >= 95% with transformers fp32, and max |logit diff| <= 5% of the
  largest logit. fp16 keeps 11 significant bits, so near-ties flip. Where transformers' own
  fp16 decoder does worse, the bar drops to its figures (its agreement less one point, twice
  its max difference): the engine is not asked to beat the model's own half precision.

``--device cpu`` (hidden) runs the same steps on the CPU with the tiny preset, int8 standing
in for fp16: a debugging aid for machines without a GPU.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import signal
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

from tunesmith.benchmark.gpu_engine import EngineRuns
from tunesmith.benchmark.gpu_reference import ReferenceRuns
from tunesmith.benchmark.gpu_report import Report
from tunesmith.benchmark.gpu_state import say

__all__ = ["main"]

NO_CUDA = 3
NOT_INSTALLED = 2


class Stop(BaseException):
    """The run must end now: its budget is spent (the alarm) or it was told to (SIGTERM,
    Ctrl-C). Raised in whatever step is running; not an `Exception`, so no library's
    ``except Exception`` takes it for an error of its own."""


def _no_cuda_reason(torch: Any) -> str | None:
    """Why torch cannot use a CUDA device here, or None when it can."""
    where = f"torch {torch.__version__} at {Path(torch.__file__).parent} ({sys.executable})"
    if torch.version.cuda is None:
        return f"{where} is built without CUDA; set PYTHON to a python whose torch has CUDA"
    if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        shown = "" if visible is None else f", CUDA_VISIBLE_DEVICES={visible!r}"
        return f"{where}, built for CUDA {torch.version.cuda}, sees no GPU{shown}"
    return None


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/gpu-check",
        description="tunesmith's CUDA engine: fp16/fp32 parity with transformers, and speed",
    )
    parser.add_argument("--model", help="model directory (default: random musicgen-small)")
    parser.add_argument("--duration", type=float, help="seconds per clip (10)")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for the run (450)")
    # a debugging aid: the same steps on the CPU with the tiny preset
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help=argparse.SUPPRESS)
    parser.add_argument("--preset", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    cpu = args.device == "cpu"
    if args.duration is None:
        args.duration = 1.0 if cpu else 10.0
    if args.preset is None:
        args.preset = "tiny" if cpu else "small"
    return args


class GpuCheck(ReferenceRuns, EngineRuns, Report):
    """The steps of one run, in order, and every figure they produce."""

    def run(self) -> None:
        self.step("describe", 0, self.describe)
        self.step("build", 0, self.build)
        self.step("reference", 0, self.run_reference, requires=("build",))
        cuda = self.device.type == "cuda"
        for dtype in ("fp16", "bf16") if cuda else ("fp16",):
            self.step(f"baseline {dtype}", 10, partial(self.baseline, dtype), ("reference",))
        for precision in self.gated:
            self.step(
                f"parity {precision}",
                2 * self.need_engine(precision),
                partial(self.run_parity, precision),
                ("reference",),
            )
        tf_ms = self.ms_step.get("transformers fp32", 50.0)
        self.step(
            "speed transformers fp32",
            1.2 * self.steps * tf_ms / 1000 + 5,
            partial(self.transformers_speed, "fp32"),
            ("reference",),
        )
        for precision in self.gated:
            self.step(
                f"speed {precision}",
                self.need_engine(precision) + 6 * self.steps * self.engine_ms(precision) / 1000,
                partial(self.engine_speed, precision),
                ("build",),
            )
        self.step(
            "speed transformers fp16",
            1.5 * self.steps * tf_ms / 1000 + 10,
            partial(self.transformers_speed, "fp16"),
            ("reference",),
        )
        from tunesmith.benchmark import gpu_targets

        half_ms = self.engine_ms(self.half)
        self.step(
            "scaling",
            self.need_engine(self.half) + 2 * sum(gpu_targets.SWEEP) * self.steps * half_ms / 1000,
            partial(gpu_targets.scale, self),
            ("build",),
        )
        stream_steps = 50 * (gpu_targets.STREAM_SECONDS if cuda else self.args.duration)
        self.step(
            "streaming",
            2 * stream_steps * half_ms / 1000 + 10,
            partial(gpu_targets.stream, self),
            ("build",),
        )
        if cuda:
            self.step(
                "speed fp16 eager",
                self.need_engine("fp16") + 20 * self.steps * self.engine_ms("fp16") / 1000,
                partial(self.engine_speed, "fp16", "eager"),
                ("build",),
            )
            self.step(
                "parity bf16",
                2 * self.need_engine("bf16"),
                partial(self.run_parity, "bf16"),
                ("reference",),
            )
            self.step(
                "speed bf16",
                self.need_engine("bf16") + 6 * self.steps * self.engine_ms("bf16") / 1000,
                partial(self.engine_speed, "bf16"),
                ("build",),
            )

    def describe(self) -> None:
        torch = self.torch
        import transformers

        transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        info: dict[str, Any] = {
            "python": sys.executable,
            "torch": torch.__version__,
            "torch_cuda": torch.version.cuda,
            "transformers": transformers.__version__,
        }
        if self.device.type == "cuda":
            info |= self.describe_gpu()
            where = f"{info['gpu']} (compute {info['capability']}, {info['gpu_memory_gb']:.0f} GB)"
        else:
            where = "CPU (debug run: int8 stands in for fp16)"
        self.figures["machine"] = info
        say(
            f"gpu-check on {where}; torch {info['torch']} (CUDA {info['torch_cuda']}), "
            f"transformers {info['transformers']}; budget {self.args.budget:.0f} s"
        )

    def describe_gpu(self) -> dict[str, Any]:
        """The GPU and the matmul settings the figures were measured under."""
        torch = self.torch
        # float32 matmuls exact (no TF32) on both sides, so fp32 parity means fp32; torch's
        # default, set in case the environment changed it
        torch.set_float32_matmul_precision("highest")
        props = torch.cuda.get_device_properties(self.device)
        info: dict[str, Any] = {
            "gpu": torch.cuda.get_device_name(self.device),
            "capability": ".".join(map(str, torch.cuda.get_device_capability(self.device))),
            "gpu_memory_gb": props.total_memory / 1e9,
        }
        matmul = torch.backends.cuda.matmul
        for name in ("fp32_precision", "allow_fp16_reduced_precision_reduction"):
            try:  # torch rejects some mixes of its old and new precision flags
                info[name] = str(getattr(matmul, name))
            except (AttributeError, RuntimeError) as exc:
                info[name] = f"unknown ({exc})"
        return info

    def build(self) -> None:
        if self.args.model:
            self.model_dir = self.args.model
            self.figures["model"] = self.args.model
            return
        from tunesmith.testing.random_model import save_random_musicgen

        start = time.perf_counter()
        preset = self.args.preset
        path = save_random_musicgen(self.workdir / f"musicgen-{preset}-random", preset=preset)
        self.model_dir = str(path)
        self.figures["model"] = f"random {preset}"
        self.figures["build_seconds"] = time.perf_counter() - start
        say(
            f"built musicgen-{preset}'s architecture with random weights "
            f"in {self.figures['build_seconds']:.1f} s"
        )


def _stop(signum: int, frame: FrameType | None) -> None:
    raise Stop("the budget ran out" if signum == signal.SIGALRM else signal.strsignal(signum))


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()  # the budget counts torch's import too
    args = _parse(argv)
    try:
        import torch
    except (ImportError, OSError) as exc:  # OSError: a CUDA build missing its libraries
        print(
            f"gpu-check: {sys.executable} cannot import torch ({exc}); set PYTHON to a python "
            "with torch built for CUDA, and transformers",
            file=sys.stderr,
        )
        return NOT_INSTALLED
    if args.device == "cuda":
        reason = _no_cuda_reason(torch)
        if reason is not None:
            print(f"no CUDA device: {reason}", file=sys.stderr)
            return NO_CUDA
    if importlib.util.find_spec("transformers") is None:
        print(f"gpu-check: {sys.executable} has no transformers; install it there", file=sys.stderr)
        return NOT_INSTALLED
    # before transformers is imported: quiet, offline (nothing is downloaded), no progress bars
    for name, value in (
        ("TRANSFORMERS_VERBOSITY", "error"),
        ("TQDM_DISABLE", "1"),
        ("HF_HUB_OFFLINE", "1"),
        ("TOKENIZERS_PARALLELISM", "false"),
    ):
        os.environ.setdefault(name, value)
    import warnings

    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory(prefix="tunesmith-gpu-check-") as tmp:
        check = GpuCheck(args, torch, Path(tmp), started)
        stopped = None
        handlers = {sig: signal.signal(sig, _stop) for sig in (signal.SIGALRM, signal.SIGTERM)}
        signal.alarm(max(1, math.ceil(check.left())))
        try:
            check.run()
        except (Stop, KeyboardInterrupt) as exc:
            why = str(exc) or "interrupted"
            stopped = f"stopped ({why}, budget {args.budget:.0f} s) in step {check.current!r}"
        finally:
            signal.alarm(0)
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        if stopped is None:  # a step cut short may still hold a decode thread: left to exit
            for engine in check.engines.values():
                engine.close()
        return check.report(stopped)


if __name__ == "__main__":
    raise SystemExit(main())
