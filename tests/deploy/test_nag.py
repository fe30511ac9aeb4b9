"""cdk-nag AwsSolutions: no unacknowledged finding, and every acknowledgment is a real finding
with a written reason (nothing acknowledged in advance, nothing hidden in bulk)."""

from __future__ import annotations

import pytest

from cdk_synth import SCENARIOS, Synth


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_synthesis_passes_the_aws_solutions_checks(synths: dict[str, Synth], scenario: str) -> None:
    synth = synths[scenario]
    assert synth.returncode == 0, synth.output[-3000:]
    assert synth.findings == set()
    assert "Traceback" not in synth.output


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_acknowledged_findings_are_exactly_the_findings(
    synths: dict[str, Synth], scenario: str
) -> None:
    unacknowledged = synths[f"{scenario}/unacknowledged"]
    assert unacknowledged.returncode != 0  # the checks ran, and found these
    assert "ValidationFailed" in unacknowledged.output and "Traceback" not in unacknowledged.output
    acknowledged = synths[scenario].acknowledged
    assert unacknowledged.findings == set(acknowledged)
    for (path, finding), reason in acknowledged.items():
        assert len(reason) >= 60 and reason.endswith("."), (path, finding, reason)


def test_no_finding_is_acknowledged_for_a_whole_stack(synths: dict[str, Synth]) -> None:
    for scenario in SCENARIOS:
        for path, _ in synths[scenario].acknowledged:
            assert path.count("/") >= 2, path  # on a resource, never on the stack or the app
