"""``scripts/gpu-check``'s engine side: tunesmith's engines (one per precision, step and batch
size), parity with the reference through the step the engine serves, and speed as served."""

from __future__ import annotations

import time
from functools import partial
from typing import Any

from tunesmith.benchmark.gpu_state import BATCH, GUIDANCE, PROMPT, GpuState, say

__all__ = ["EngineRuns"]

FP32_MAX_DIFF = 1e-3  # of the largest reference logit
HALF_AGREEMENT = 0.95
HALF_MAX_DIFF = 0.05  # of the largest reference logit


class EngineRuns(GpuState):
    """The steps that run tunesmith's engine."""

    def engine(self, precision: str, step: str | None = None, slots: int = BATCH) -> Any:
        """The engine at `precision`, set up once and kept (GPU memory is plentiful). Its step
        is the served default on CUDA; on the CPU the static step where it runs (fp32), so the
        dry run exercises it too. Other `step` s and `slots` are engines of their own."""
        default = self.default_step(precision)
        step = default if step is None else step
        key = precision if (step, slots) == (default, BATCH) else f"{precision} {step} x{slots}"
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
            say(
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
        say(
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
            say(
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
