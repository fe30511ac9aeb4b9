"""``scripts/gpu-check``'s report: the parity and speed tables, the targets, what was skipped or
failed, the verdict and exit status, and one JSON line of every figure."""

from __future__ import annotations

import json
import time

from tunesmith.benchmark.gpu_state import GUIDANCE, GpuState, optional, say
from tunesmith.benchmark.gpu_targets import EAGER_H200, judge

__all__ = ["Report"]


class Report(GpuState):
    """The end of a run."""

    def ok(self) -> bool:
        complete = all(p in self.parity for p in self.gated)
        crashed = [name for name in self.errors if not optional(name)]
        return complete and not self.failed_checks and not crashed

    def report(self, stopped: str | None) -> int:
        say()
        steps = f" ({self.steps} steps)" if self.steps else ""
        say(
            f"== gpu-check: {self.figures.get('model', '?')}, {self.args.duration:g} s clips"
            f"{steps}, guidance {GUIDANCE:g}"
        )
        if self.parity:
            say(
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
                say(
                    f"{precision:<18} {codes:<22} {p['max_diff_over_scale']:>12.1e} "
                    f"{p['forced']['top1_agreement']:>8.2%} {p['forced']['mean_kl']:>9.1e} "
                    f"{floor:>15}  {verdict}"
                )
        if self.speed:
            base = self.speed.get("transformers fp32 x1")
            say(
                f"{'speed (sampled)':<26} {'steps/s':>8} {'ms/step':>8} {'req-steps/s':>11} "
                f"{'end-to-end':>10} {'realtime':>8} {'vs tf fp32':>10} {'H200 eager':>10}"
            )
            for name, s in self.speed.items():
                ratio = s.get("vs_transformers_fp32")
                before = EAGER_H200.get(name)
                say(
                    f"{name:<26} {s['steps_per_second']:>8.1f} {s['ms_per_step']:>8.1f} "
                    f"{s['request_steps_per_second']:>11.0f} {s['seconds']:>9.2f}s "
                    f"{s['realtime']:>7.1f}x {'-' if ratio is None else f'{ratio:.2f}x':>10} "
                    f"{'-' if before is None else f'{before:.0f}':>10}"
                )
            say(
                "steps/s and ms/step: decode steps of the whole batch (transformers: its generate "
                "call); vs tf fp32: end-to-end request-steps/s over transformers fp32's; H200 "
                "eager: request-steps/s of the eager step on an H200 before the graph step"
            )
        for line in judge(self):
            say(line)
        for name, why in self.skipped.items():
            say(f"skipped {name}: {why}")
        for name, why in self.errors.items():
            counts = " (optional: does not fail the check)" if optional(name) else ""
            say(f"error in {name}{counts}: {why[:300]}")
        for check in self.failed_checks:
            say(f"failed: {check}")
        for note in self.notes:
            say(f"note (does not fail the check): {note}")
        if stopped:
            say(stopped)
        code = 0 if self.ok() else 1
        missing = [p for p in self.gated if p not in self.parity]
        if missing:
            say(f"parity not measured for {', '.join(missing)}")
        verdict = "PASS" if code == 0 else "FAIL"
        say(f"gpu-check: {verdict} in {time.monotonic() - self.started:.0f} s")
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
