"""The fault phases of `tunesmith loadtest`: S3 killed mid-load, and SIGTERM to a replica."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from tunesmith.benchmark.load import Load, tally
from tunesmith.benchmark.loadtest import rounded

if TYPE_CHECKING:
    from tunesmith.benchmark.loadtest import Run

__all__ = ["s3_outage", "sigterm"]

_RECOVERY = 60.0  # seconds the replicas get to serve again once S3 is back


def s3_outage(self: Run) -> None:
    """S3 killed mid-load for ``--outage`` seconds: what the replicas answered meanwhile, and
    how soon each served a track again once it was back."""
    lead = max(2.0, self.args.seconds / 4)

    def during(load: Load) -> dict[str, Any]:
        began = self.clock()
        time.sleep(lead)
        killed = self.clock()
        self.s3.kill()
        time.sleep(self.args.outage)
        restarted = self.clock()
        self.s3.restart()
        ready = self.clock()
        recovered: dict[int, float] = {}
        deadline = time.monotonic() + _RECOVERY
        while time.monotonic() < deadline and len(recovered) < len(load.targets):
            for o in load.snapshot():
                if o.status == 200 and o.sent >= ready and o.replica not in recovered:
                    recovered[o.replica] = round(o.answered - ready, 2)
            time.sleep(0.2)
        time.sleep(1.0)
        for replica in load.targets:
            if replica.index not in recovered:
                self.problems.append(
                    f"replica {replica.index} served no track within {_RECOVERY:g} s "
                    "of S3 coming back"
                )
        down = [o for o in load.snapshot() if killed <= o.sent < ready]
        return {
            "killed_after_s": round(killed - began, 2),
            "down_s": round(ready - killed, 2),
            "restart_s": round(ready - restarted, 2),
            "answers_while_down": tally(down),
            "recovered_after_s": {str(k): v for k, v in sorted(recovered.items())},
        }

    self.load("s3_outage", during)


def sigterm(self: Run) -> None:
    """SIGTERM to replica 0 mid-load: its in-flight requests must finish within the grace
    period, and it must exit after a clean shutdown."""
    victim = self.replicas[0]
    lead = max(2.0, self.args.seconds / 4)
    grace = self.args.grace

    def during(load: Load) -> dict[str, Any]:
        began = self.clock()
        time.sleep(lead)
        signals.append(self.clock())
        status, took = victim.terminate(grace + 30)
        time.sleep(1.0)
        return {
            "signaled_after_s": round(signals[0] - began, 2),
            "exit": status,
            "exit_s": round(took, 2),
        }

    signals: list[float] = []

    self.load("sigterm", during)
    figures = self.phases["sigterm"]
    signaled = signals[0]
    mine = [o for o in self.outcomes if o.phase == "sigterm" and o.replica == victim.index]
    held = [o for o in mine if o.sent < signaled < o.answered]
    figures["in_flight"] = len(held)
    figures["in_flight_answers"] = tally(held)
    figures["in_flight_done_after_s"] = rounded(
        max((o.answered - signaled for o in held), default=None)
    )
    figures["after_signal_answers"] = tally(o for o in mine if o.sent >= signaled)
    figures["clean_shutdown"] = victim.shut_down_cleanly()
    dropped = [o for o in held if o.status is None]
    late = [o for o in held if o.status == 200 and o.answered - signaled > grace + 1]
    if dropped:
        self.problems.append(f"{len(dropped)} requests in flight at SIGTERM got no answer")
    if late:
        self.problems.append(f"{len(late)} in-flight requests ended past the grace period")
    self.check_exit(victim, figures["exit"], "SIGTERM mid-load")
