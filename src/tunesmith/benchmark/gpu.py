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
import copy
import importlib.util
import json
import math
import os
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

from tunesmith.benchmark.gpu_targets import EAGER_H200, judge

__all__ = ["main"]

NO_CUDA = 3
NOT_INSTALLED = 2
PROMPT = "upbeat electronic dance music with heavy bass"
GUIDANCE = 3.0
BATCH = 8
FP32_MAX_DIFF = 1e-3  # of the largest reference logit
HALF_AGREEMENT = 0.95
HALF_MAX_DIFF = 0.05  # of the largest reference logit


def _optional(step: str) -> bool:
    """Steps whose failure says nothing about the engine's fp16/fp32 path: transformers' own
    runs beside the reference, and bf16. Reported, but they do not fail the check."""
    return any(mark in step for mark in ("baseline", "speed transformers", "bf16", "eager"))


class Stop(BaseException):
    """The run must end now: its budget is spent (the alarm) or it was told to (SIGTERM,
    Ctrl-C). Raised in whatever step is running; not an `Exception`, so no library's
    ``except Exception`` takes it for an error of its own."""


def _say(line: str = "") -> None:
    print(line, flush=True)


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


class GpuCheck:
    """The steps of one run and every figure they produce."""

    def __init__(self, args: argparse.Namespace, torch: Any, workdir: Path, started: float) -> None:
        self.args = args
        self.started = started  # `time.monotonic` when the run began
        self.torch = torch
        self.workdir = workdir
        self.device = torch.device(args.device)
        cuda = self.device.type == "cuda"
        # on the CPU, int8 is the approximate precision that fp16 is on CUDA
        self.half = "fp16" if cuda else "int8"
        self.gated = [self.half, "fp32"]
        self.figures: dict[str, Any] = {"device": args.device, "duration": args.duration}
        self.parity: dict[str, dict[str, Any]] = {}
        self.speed: dict[str, dict[str, Any]] = {}
        self.baselines: dict[str, Any] = {}  # transformers' half decoders, teacher-forced
        self.errors: dict[str, str] = {}
        self.skipped: dict[str, str] = {}
        self.failed_checks: list[str] = []
        self.notes: list[str] = []  # what went wrong in optional steps
        self.done: set[str] = set()
        self.current = ""
        self.model_dir = ""
        self.engines: dict[str, Any] = {}
        self.reference_model: Any = None
        self.processor: Any = None
        self.reference: Any = None  # (steps, K, V) guided scores
        self.teacher: Any = None  # (K, steps + 1) codes, the delay pattern applied
        self.steps = 0
        self.frames = 0
        self.load_seconds = 10.0
        self.ms_step: dict[str, float] = {}  # measured one-request decode rate

    # -- plumbing ------------------------------------------------------------------------------

    def left(self) -> float:
        return float(self.args.budget - (time.monotonic() - self.started))

    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def now(self) -> float:
        self.sync()
        return time.perf_counter()

    def step(
        self, name: str, need: float, work: Callable[[], None], requires: tuple[str, ...] = ()
    ) -> None:
        """Run `work` as step `name` unless a step it needs did not finish or fewer than `need`
        seconds are left; an error is recorded and reported, and the run goes on."""
        missing = [r for r in requires if r not in self.done]
        if missing:
            self.skipped[name] = f"needs {', '.join(missing)}"
            _say(f"{name}: skipped ({self.skipped[name]})")
            return
        if self.left() < need:
            self.skipped[name] = f"out of time ({self.left():.0f} s left, needs ~{need:.0f})"
            _say(f"{name}: skipped ({self.skipped[name]})")
            return
        self.current = name  # kept if the run is stopped in it, for the report
        try:
            work()
        except Exception as exc:
            self.errors[name] = f"{type(exc).__name__}: {exc}"
            print(f"--- {name} failed:", file=sys.stderr)
            traceback.print_exc()
            _say(f"{name}: FAILED ({self.errors[name][:300]})")
        else:
            self.done.add(name)
        self.current = ""

    def engine_ms(self, precision: str) -> float:
        """An estimate of the engine's ms per step at `precision`, for the time guard."""
        if precision in self.ms_step:
            return self.ms_step[precision]
        known = [v for k, v in self.ms_step.items() if not k.startswith("transformers")]
        return max(known) if known else self.ms_step.get("transformers fp32", 50.0)

    def need_engine(self, precision: str) -> float:
        load = 0.0 if precision in self.engines else 1.5 * self.load_seconds + 5
        return load + 1.2 * self.steps * self.engine_ms(precision) / 1000

    # -- the run -------------------------------------------------------------------------------

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
        _say(
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
        _say(
            f"built musicgen-{preset}'s architecture with random weights "
            f"in {self.figures['build_seconds']:.1f} s"
        )

    # -- transformers --------------------------------------------------------------------------

    def run_reference(self) -> None:
        from tunesmith.benchmark.reference import compare_scores, reference_scores
        from tunesmith.engine.loader import load_model

        torch = self.torch
        start = time.perf_counter()
        loaded = load_model(self.model_dir, self.args.device)
        self.load_seconds = time.perf_counter() - start
        model, self.processor = loaded.model, loaded.processor
        self.reference_model = model
        stereo = loaded.audio_channels == 2
        delays = [k // 2 if stereo else k for k in range(loaded.num_codebooks)]
        self.frames = math.ceil(self.args.duration * loaded.frame_rate)
        self.steps = self.frames + max(delays)
        self.figures |= {"steps": self.steps, "frames": self.frames}
        reference_scores(model, self.processor, PROMPT, 4, GUIDANCE)  # warm-up
        start = self.now()
        scores = reference_scores(model, self.processor, PROMPT, self.steps, GUIDANCE)
        seconds = self.now() - start
        if not bool(torch.isfinite(scores).all()):
            raise RuntimeError("transformers' own fp32 scores are not finite: nothing to compare")
        self.reference = scores
        self.ms_step["transformers fp32"] = 1000 * seconds / self.steps
        # the reference's own greedy codes, as the engine's tokens hold them: (K, steps + 1),
        # the padding token where the delay pattern holds a codebook back
        pad = int(model.decoder.config.pad_token_id)
        positions = torch.arange(self.steps + 1)[None, :]
        delay = torch.tensor(delays)[:, None]
        keep = (positions > delay) & (positions <= delay + self.frames)
        codes = torch.cat([torch.full((len(delays), 1), pad), scores.argmax(-1).T], dim=1)
        self.teacher = torch.where(keep, codes, pad)
        # the teacher-forced forward, checked against generate at fp32 before it serves as
        # the half-precision noise floor
        forced = compare_scores(scores, self.forced_scores(model, torch.float32))
        self.figures["reference"] = {
            "load_seconds": self.load_seconds,
            "greedy_seconds": seconds,
            "ms_per_step": self.ms_step["transformers fp32"],
            "forced_forward_vs_generate": forced.as_dict(),
        }
        _say(
            f"transformers fp32 reference: {self.steps} steps greedy in {seconds:.1f} s "
            f"({self.ms_step['transformers fp32']:.1f} ms/step); its teacher-forced forward "
            f"matches its generate to {forced.max_abs_diff / forced.scale:.1e} x scale"
        )

    def forced_scores(self, model: Any, dtype: Any) -> Any:
        """transformers' decoder (in `dtype`; text encoder fp32, as the engine runs it) over the
        teacher codes in one forward pass: guided scores ``(steps, K, V)``, as `generate` would
        score them (the unconditional row sees a zero, fully masked prompt, as in generate)."""
        torch = self.torch
        inputs = self.processor(text=[PROMPT], padding=True, return_tensors="pt")
        ids, mask = inputs["input_ids"].to(self.device), inputs["attention_mask"].to(self.device)
        codes = self.teacher[:, : self.steps].to(self.device)
        with torch.inference_mode():
            encoded = model.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
            encoded = encoded.to(dtype)
            out = model(
                encoder_outputs=(torch.cat([encoded, torch.zeros_like(encoded)]),),
                attention_mask=torch.cat([mask, torch.zeros_like(mask)]),
                decoder_input_ids=torch.cat([codes, codes]),
            )
        logits = out.logits.float().view(2, codes.shape[0], self.steps, -1)
        guided = logits[1] + (logits[0] - logits[1]) * GUIDANCE
        return guided.transpose(0, 1).cpu()

    def half_copy(self, dtype: Any, whole: bool) -> Any:
        """A copy of the reference model with its decoder (or, `whole`, everything) in `dtype`."""
        model = copy.deepcopy(self.reference_model)
        if whole:
            return model.to(dtype)
        model.decoder.to(dtype)
        if getattr(model, "enc_to_dec_proj", None) is not None:
            model.enc_to_dec_proj.to(dtype)
        return model

    def baseline(self, name: str) -> None:
        from tunesmith.benchmark.reference import compare_scores

        dtype = {"fp16": self.torch.float16, "bf16": self.torch.bfloat16}[name]
        model = self.half_copy(dtype, whole=False)
        result = compare_scores(self.reference, self.forced_scores(model, dtype))
        del model
        self.free_memory()
        self.baselines[name] = result
        _say(
            f"transformers {name} decoder, teacher-forced: top-1 agreement "
            f"{result.top1_agreement:.2%}, max |logit diff| "
            f"{result.max_abs_diff / result.scale:.1e} x scale"
        )

    def transformers_speed(self, name: str) -> None:
        torch = self.torch
        dtype = {"fp32": torch.float32, "fp16": torch.float16}[name]
        model = self.reference_model if name == "fp32" else self.half_copy(dtype, whole=True)
        inputs = self.processor(text=[f"{PROMPT}, take 0"], padding=True, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        sampling = {"do_sample": True, "top_k": 250, "guidance_scale": GUIDANCE}
        with torch.inference_mode():
            if name != "fp32":  # warm-up (the fp32 model warmed up with the reference)
                model.generate(**inputs, **sampling, max_new_tokens=4)
            torch.manual_seed(0)
            start = self.now()
            audio = model.generate(**inputs, **sampling, max_new_tokens=self.steps)
            seconds = self.now() - start
        finite = bool(torch.isfinite(audio).all())
        audio_seconds = audio.shape[-1] / self.reference_model.config.audio_encoder.sampling_rate
        if name != "fp32":
            del model
            self.free_memory()
        result = {
            "requests": 1,
            "steps": self.steps,
            "seconds": seconds,
            "steps_per_second": self.steps / seconds,
            "ms_per_step": 1000 * seconds / self.steps,
            "request_steps_per_second": self.steps / seconds,
            "end_to_end_request_steps_per_second": self.steps / seconds,
            "realtime": audio_seconds / seconds,
            "audio_finite": finite,
        }
        self.ms_step[f"transformers {name}"] = result["ms_per_step"]
        self.speed[f"transformers {name} x1"] = result
        self.relate()
        _say(
            f"transformers {name}, 1 request sampled: {result['steps_per_second']:.1f} steps/s "
            f"({result['ms_per_step']:.1f} ms/step, its EnCodec decode included)"
        )

    # -- the engine ----------------------------------------------------------------------------

    def engine(self, precision: str, step: str | None = None, slots: int = BATCH) -> Any:
        """The engine at `precision`, set up once and kept (GPU memory is plentiful). Its step
        is the served default on CUDA; on the CPU the static step where it runs (fp32), so the
        dry run exercises it too. Other `step` s and `slots` are engines of their own."""
        step = self.default_step(precision) if step is None else step
        key = (
            precision
            if (step, slots) == (self.default_step(precision), BATCH)
            else (f"{precision} {step} x{slots}")
        )
        if key not in self.engines:
            from tunesmith.engine import MusicGenEngine

            start = time.perf_counter()
            engine = MusicGenEngine(
                self.model_dir, self.args.device, precision=precision, max_batch=slots, step=step
            )
            engine.setup()
            self.engines[key] = engine
            seconds = time.perf_counter() - start
            self.figures.setdefault("engine_setup_seconds", {})[key] = seconds
            kernels = engine.kernels.describe()
            _say(
                f"tunesmith engine {key} set up in {seconds:.1f} s, kernels {kernels}, "
                f"step {engine.step_kind}"
            )
        return self.engines[key]

    def default_step(self, precision: str) -> str:
        return "auto" if self.device.type == "cuda" or precision != "fp32" else "static"

    def run_parity(self, precision: str) -> None:
        from tunesmith.benchmark.reference import compare_scores, engine_scores

        engine = self.engine(precision)
        decoder, processor = engine.decoder, engine.loaded.processor
        score = partial(
            engine_scores, decoder, processor, PROMPT, self.frames, GUIDANCE, step=engine.stepper
        )
        start = self.now()
        free, _ = engine.scheduler.call(score)
        seconds = self.now() - start
        self.ms_step.setdefault(precision, 1000 * seconds / self.steps)
        teacher = self.teacher.to(decoder.device)
        forced, _ = engine.scheduler.call(partial(score, teacher=teacher))
        free_cmp = compare_scores(self.reference, free)
        forced_cmp = compare_scores(self.reference, forced)
        passed, rule = self.verdict(precision, free_cmp, forced_cmp)
        gated = precision in self.gated
        if gated and not passed:
            self.failed_checks.append(f"parity {precision}")
        self.parity[precision] = {
            "passed": passed,
            "gated": gated,
            "rule": rule,
            "free": free_cmp.as_dict(),
            "forced": forced_cmp.as_dict(),
            "max_diff_over_scale": forced_cmp.max_abs_diff / forced_cmp.scale,
            "baseline": (
                self.baselines[precision].as_dict() if precision in self.baselines else None
            ),
            "kernels": engine.kernels.describe(),
            "finite": bool(self.torch.isfinite(free).all() and self.torch.isfinite(forced).all()),
        }
        codes = (
            "same greedy codes"
            if free_cmp.codes_equal
            else f"codes differ from step {free_cmp.first_mismatch} "
            f"(reference top-2 gap there {free_cmp.gap_at_mismatch:.1e})"
        )
        verdict = ("PASS" if passed else "FAIL") if gated else "info"
        _say(
            f"parity {precision} vs transformers fp32: {codes}; teacher-forced max |logit diff| "
            f"{forced_cmp.max_abs_diff:.2e} ({forced_cmp.max_abs_diff / forced_cmp.scale:.1e} x "
            f"scale {forced_cmp.scale:.2f}), top-1 agreement {forced_cmp.top1_agreement:.2%}, "
            f"mean KL {forced_cmp.mean_kl:.1e}: {verdict} ({rule})"
        )

    def verdict(self, precision: str, free: Any, forced: Any) -> tuple[bool, str]:
        """Whether `precision`'s comparisons pass, and the rule they were held to."""
        relative = forced.max_abs_diff / forced.scale
        if precision == "fp32":
            # at the first differing step both runs had the same codes, so their scores there
            # are the teacher-forced ones: a tie-break can only flip a gap under 2x the max diff
            gap = free.gap_at_mismatch
            near_tie = free.codes_equal or (gap is not None and gap <= 2 * forced.max_abs_diff)
            rule = f"max|diff| <= {FP32_MAX_DIFF:g} x scale, greedy codes equal or split at a tie"
            return relative <= FP32_MAX_DIFF and near_tie, rule
        agreement, max_diff = HALF_AGREEMENT, HALF_MAX_DIFF
        baseline = self.baselines.get(precision)
        if baseline is not None:  # not asked to beat transformers' own half precision
            agreement = min(agreement, baseline.top1_agreement - 0.01)
            max_diff = max(max_diff, 2 * baseline.max_abs_diff / baseline.scale)
        rule = f"top-1 >= {agreement:.1%}, max|diff| <= {max_diff:.3g} x scale"
        return forced.top1_agreement >= agreement and relative <= max_diff, rule

    def engine_speed(self, precision: str, step: str | None = None) -> None:
        """One request, then `BATCH` together, on the served step (or on `step`, for
        comparison: then named with it, and not gated)."""
        from tunesmith.engine import GenerationParams

        torch = self.torch
        engine = self.engine(precision, step)
        label = precision if step is None else f"{precision} {step}"
        # warm-up: the whole path once (audio included), then a batch of the timed size
        warm = engine.generate(GenerationParams(PROMPT, 1.0, seed=99))
        finite = bool(torch.isfinite(torch.from_numpy(warm.samples)).all())
        self.check_audio(f"speed {label} warm-up", finite, warm.duration, 1.0)
        short = [GenerationParams(f"{PROMPT}, take {i}", 0.2, seed=i) for i in range(BATCH)]
        self.serve(engine, short)
        requests = [
            GenerationParams(f"{PROMPT}, take {i}", self.args.duration, seed=i)
            for i in range(BATCH)
        ]
        one = self.serve(engine, requests[:1])
        if step is None:
            self.ms_step[precision] = one["ms_per_step"]
        batch = self.serve(engine, requests)
        # request 0 alone and in the batch: same prompt and seed
        same = bool(torch.equal(one.pop("codes")[0], batch.pop("codes")[0]))
        one["same_codes_as_in_batch"] = batch["same_codes_as_in_batch"] = same
        one["step"] = batch["step"] = engine.step_kind
        if step is None and not same:
            self.failed_checks.append(f"speed {label}: a request's codes changed in a batch")
        self.speed[f"tunesmith {label} x1"] = one
        self.speed[f"tunesmith {label} x{BATCH}"] = batch
        self.relate()
        for result in (one, batch):
            n = result["requests"]
            wanted = n * self.args.duration
            self.check_audio(f"speed {label} x{n}", result["audio_finite"], result["audio"], wanted)
            _say(
                f"tunesmith {label}, {n} request{'s' if n > 1 else ''} sampled: "
                f"{result['steps_per_second']:.1f} steps/s ({result['ms_per_step']:.1f} ms/step"
                + (f", {result['request_steps_per_second']:.0f} request-steps/s" if n > 1 else "")
                + f"), end to end {result['seconds']:.2f} s, realtime x{result['realtime']:.1f}"
                + (
                    f", {result['steps_at_full_batch']} of {result['steps']} steps at batch {n}"
                    if n > 1
                    else ""
                )
                + (
                    f", peak GPU memory {result['peak_gpu_mb']:.0f} MB"
                    if "peak_gpu_mb" in result
                    else ""
                )
            )

    def relate(self) -> None:
        """Each speed's end-to-end throughput over transformers fp32's, once that is known."""
        base = self.speed.get("transformers fp32 x1")
        if base is None:
            return
        for result in self.speed.values():
            result["vs_transformers_fp32"] = (
                result["end_to_end_request_steps_per_second"]
                / base["end_to_end_request_steps_per_second"]
            )

    def serve(self, engine: Any, requests: list[Any]) -> dict[str, Any]:
        """`requests` as the service runs them: prompts encoded, decoded together in the
        scheduler's batch, then EnCodec; timed in stages."""
        torch = self.torch
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        sizes = dict(engine.scheduler.batch_sizes)
        start = self.now()
        jobs = [engine.start_job(p) for p in requests]
        encoded = self.now()
        tickets = [engine.scheduler.submit(job) for job in jobs]
        for ticket in tickets:
            ticket.wait()
        decoded = self.now()
        codes = [engine.decoder.codes(job) for job in jobs]
        tracks = [engine.decode_audio(c, p.duration) for c, p in zip(codes, requests, strict=True)]
        end = self.now()
        n, steps = len(requests), jobs[0].steps
        after = engine.scheduler.batch_sizes
        decode = decoded - encoded
        result: dict[str, Any] = {
            "requests": n,
            "steps": steps,
            "seconds": end - start,
            "encode_seconds": encoded - start,
            "decode_seconds": decode,
            "audio_seconds": end - decoded,
            "steps_per_second": steps / decode,
            "ms_per_step": 1000 * decode / steps,
            "request_steps_per_second": n * steps / decode,
            "end_to_end_request_steps_per_second": n * steps / (end - start),
            "audio": sum(t.duration for t in tracks),
            "realtime": sum(t.duration for t in tracks) / (end - start),
            "steps_at_full_batch": after.get(n, 0) - sizes.get(n, 0),
            "audio_finite": all(
                bool(torch.isfinite(torch.from_numpy(t.samples)).all()) for t in tracks
            ),
            "codes": codes,
        }
        if cuda:
            result["peak_gpu_mb"] = torch.cuda.max_memory_allocated(self.device) / 1e6
        return result

    def check_audio(self, name: str, finite: bool, seconds: float, wanted: float) -> None:
        """Record a failed check where audio came out non-finite or of the wrong length."""
        into = self.notes if _optional(name) else self.failed_checks
        if not finite:
            into.append(f"{name}: audio not finite")
        if abs(seconds - wanted) > 1e-3:
            into.append(f"{name}: {seconds:.3f} s of audio, {wanted:g} s wanted")

    def free_memory(self) -> None:
        import gc

        gc.collect()
        if self.device.type == "cuda":
            self.torch.cuda.empty_cache()

    # -- the report ----------------------------------------------------------------------------

    def ok(self) -> bool:
        complete = all(p in self.parity for p in self.gated)
        crashed = [name for name in self.errors if not _optional(name)]
        return complete and not self.failed_checks and not crashed

    def report(self, stopped: str | None) -> int:
        _say()
        steps = f" ({self.steps} steps)" if self.steps else ""
        _say(
            f"== gpu-check: {self.figures.get('model', '?')}, {self.args.duration:g} s clips"
            f"{steps}, guidance {GUIDANCE:g}"
        )
        if self.parity:
            _say(
                f"{'parity vs tf fp32':<18} {'free-run codes':<22} {'max|d|/scale':>12} "
                f"{'top-1':>8} {'mean KL':>9} {'tf same dtype':>15}  verdict"
            )
            for precision, p in self.parity.items():
                free = p["free"]
                codes = "equal" if free["codes_equal"] else f"differ at {free['first_mismatch']}"
                base = p["baseline"]
                floor = (
                    f"{base['top1_agreement']:.2%} {base['max_abs_diff'] / base['scale']:.0e}"
                    if base
                    else "-"
                )
                verdict = ("PASS" if p["passed"] else "FAIL") if p["gated"] else "info"
                _say(
                    f"{precision:<18} {codes:<22} {p['max_diff_over_scale']:>12.1e} "
                    f"{p['forced']['top1_agreement']:>8.2%} {p['forced']['mean_kl']:>9.1e} "
                    f"{floor:>15}  {verdict}"
                )
        if self.speed:
            base = self.speed.get("transformers fp32 x1")
            _say(
                f"{'speed (sampled)':<26} {'steps/s':>8} {'ms/step':>8} {'req-steps/s':>11} "
                f"{'end-to-end':>10} {'realtime':>8} {'vs tf fp32':>10} {'H200 eager':>10}"
            )
            for name, s in self.speed.items():
                ratio = s.get("vs_transformers_fp32")
                before = EAGER_H200.get(name)
                _say(
                    f"{name:<26} {s['steps_per_second']:>8.1f} {s['ms_per_step']:>8.1f} "
                    f"{s['request_steps_per_second']:>11.0f} {s['seconds']:>9.2f}s "
                    f"{s['realtime']:>7.1f}x {'-' if ratio is None else f'{ratio:.2f}x':>10} "
                    f"{'-' if before is None else f'{before:.0f}':>10}"
                )
            _say(
                "steps/s and ms/step: decode steps of the whole batch (transformers: its generate "
                "call); vs tf fp32: end-to-end request-steps/s over transformers fp32's; H200 "
                "eager: request-steps/s of the eager step on an H200 before the graph step"
            )
        for line in judge(self):
            _say(line)
        for name, why in self.skipped.items():
            _say(f"skipped {name}: {why}")
        for name, why in self.errors.items():
            counts = " (optional: does not fail the check)" if _optional(name) else ""
            _say(f"error in {name}{counts}: {why[:300]}")
        for check in self.failed_checks:
            _say(f"failed: {check}")
        for note in self.notes:
            _say(f"note (does not fail the check): {note}")
        if stopped:
            _say(stopped)
        code = 0 if self.ok() else 1
        missing = [p for p in self.gated if p not in self.parity]
        if missing:
            _say(f"parity not measured for {', '.join(missing)}")
        verdict = "PASS" if code == 0 else "FAIL"
        _say(f"gpu-check: {verdict} in {time.monotonic() - self.started:.0f} s")
        self.figures |= {
            "parity": self.parity,
            "speed": self.speed,
            "ms_per_step": self.ms_step,
            "errors": self.errors,
            "skipped": self.skipped,
            "failed_checks": self.failed_checks,
            "notes": self.notes,
            "stopped": stopped,
            "passed": code == 0,
            "exit_status": code,
            "seconds": time.monotonic() - self.started,
        }
        print(json.dumps(self.figures, default=str), flush=True)
        return code


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
