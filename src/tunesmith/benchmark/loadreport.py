"""The summary `tunesmith loadtest` prints: settings, a line per phase, the faults, the check
of the bucket and what went wrong; the figures themselves follow it as one JSON line."""

from __future__ import annotations

from typing import Any

__all__ = ["fmt", "say", "summary"]


def say(line: str = "") -> None:
    print(line, flush=True)


def fmt(value: float | None) -> str:
    return f"{value:7.2f}" if value is not None else f"{'-':>7}"


def summary(figures: dict[str, Any]) -> None:
    """Print `figures` (what `tunesmith.benchmark.loadtest.run` returns) for people."""
    args, machine = figures["settings"], figures["machine"]
    say(
        f"tunesmith loadtest: {args['clients']} clients, {args['seconds']:g} s, "
        f"{args['replicas']} replica(s){', faults' if args['faults'] else ''}; "
        f"tracks of {args['durations']} s"
    )
    say(
        f"machine: {machine['cpu']}, {machine['cores']} CPUs, torch "
        f"{machine['torch_cpu_capability']}, memory read {machine['memory_read_gbps']:.1f} "
        "GB/s (shared and noisy: figures move between runs)"
    )
    say(
        f"server: max_queue {args['max_queue']}, max_waiting {args['max_waiting']}, queue_timeout "
        f"{args['queue_timeout']:g} s, rate_limit {args['rate_limit'] or 'off'}, grace "
        f"{args['grace']:g} s, {args['threads']} torch thread(s) each, model {args['model_name']}"
    )
    say()
    say(f"{'phase':<10} {'wall s':>7} {'sent':>5} {'200':>5} {'p50 s':>7} {'p99 s':>7} "
         f"{'tracks/s':>8} {'audio s/s':>9}  other answers")  # fmt: skip
    for name, phase in figures["phases"].items():
        others = ", ".join(f"{k}: {v}" for k, v in phase["answers"].items() if k != "200")
        say(
            f"{name:<10} {phase['seconds']:7.1f} {phase['sent']:5d} {phase['served']:5d} "
            f"{fmt(phase['p50_s'])} {fmt(phase['p99_s'])} {phase['tracks_per_s']:8.2f} "
            f"{phase['audio_s_per_s']:9.2f}  {others or '-'}"
        )
    rss = ", ".join(f"replica {i}: {kb / 1024:.0f} MiB" for i, kb in figures["peak_rss_kb"].items())
    say(f"peak RSS (VmHWM): {rss}")
    for job in figures["jobs"]:
        say(
            f"job {job['id'][:8]}: POST on replica {job['submitted_on']}, GET on replica "
            f"{job['polled_on']}: {' -> '.join(job['statuses_seen'])} in {job['seconds']:.1f} s"
        )
    if "s3_outage" in figures["phases"]:
        out = figures["phases"]["s3_outage"]
        answers = ", ".join(f"{k}: {v}" for k, v in out["answers_while_down"].items()) or "none"
        back = ", ".join(f"replica {k} {v:.1f} s" for k, v in out["recovered_after_s"].items())
        say(
            f"S3 outage: killed {out['killed_after_s']:.1f} s into the phase, back "
            f"{out['down_s']:.1f} s later (restart {out['restart_s']:.1f} s); sent meanwhile: "
            f"{answers}; first track after it was back: {back or 'none'}"
        )
    if "sigterm" in figures["phases"]:
        term = figures["phases"]["sigterm"]
        held = ", ".join(f"{k}: {v}" for k, v in term["in_flight_answers"].items()) or "-"
        after = ", ".join(f"{k}: {v}" for k, v in term["after_signal_answers"].items()) or "-"
        say(
            f"SIGTERM to replica 0 {term['signaled_after_s']:.1f} s into the phase: "
            f"{term['in_flight']} in flight "
            f"({held}), the last done {fmt(term['in_flight_done_after_s']).strip()} s after; "
            f"exit status {term['exit']} after {term['exit_s']:.1f} s (clean shutdown: "
            f"{term['clean_shutdown']}); sent after it: {after}"
        )
    v = figures["verification"]
    say(
        f"storage: {v['tracks']} tracks answered (warm-up and jobs included), {v['whole']} "
        "whole (audio of the right length, record beside it); "
        f"lost {len(v['lost'])}, corrupt {len(v['corrupt'])}, no record {len(v['no_record'])}, "
        f"orphaned {len(v['orphaned'])}; {v['job_records']} job records; "
        f"{v['objects']} objects in the bucket"
    )
    t = figures["timings"]
    steps = {"s3_start_s": "S3 start", "replicas_ready_s": "replicas ready",
             "warm_up_s": "warm-up", "verify_s": "check of the bucket"}  # fmt: skip
    say("time: " + ", ".join(f"{name} {t[key]:.1f} s" for key, name in steps.items() if key in t))
    for problem in figures["problems"]:
        say(f"PROBLEM: {problem}")
    say(f"result: {'PASS' if not figures['problems'] else 'FAIL'}")
