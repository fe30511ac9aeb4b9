"""cdk-nag AwsSolutions: no unacknowledged finding, and every acknowledgment is a real finding
with a written reason (nothing acknowledged in advance, nothing hidden in bulk), whatever region
and account the stack is synthesized for."""

from __future__ import annotations

import pytest

from cdk_synth import APP_RUNS, CLI_RUNS, MODEL_SCENARIOS, SCENARIOS, Synth
from tunesmith_deploy.nag import flatten_reference


@pytest.mark.parametrize("name", CLI_RUNS)
def test_synthesis_passes_the_aws_solutions_checks(synths: dict[str, Synth], name: str) -> None:
    synth = synths[name]
    assert synth.returncode == 0, synth.output[-3000:]
    assert synth.findings == set()
    assert "Traceback" not in synth.output


@pytest.mark.parametrize("name", APP_RUNS)
def test_acknowledged_findings_are_exactly_the_findings(
    synths: dict[str, Synth], name: str
) -> None:
    unacknowledged = synths[name]
    assert unacknowledged.returncode != 0  # the checks ran, and found these
    assert "ValidationFailed" in unacknowledged.output and "Traceback" not in unacknowledged.output
    # what would have been acknowledged (recorded all the same) is exactly what was found
    acknowledged = unacknowledged.acknowledged
    assert unacknowledged.findings == set(acknowledged)
    for (path, finding), reason in acknowledged.items():
        assert len(reason) >= 60 and reason.endswith("."), (path, finding, reason)
    twin = synths.get(name.removesuffix("/unacknowledged"))
    if twin is not None:  # cdk synth made the same deployment for the same region and account
        assert unacknowledged.environment == twin.environment
        assert twin.acknowledged == acknowledged


def test_every_scenario_is_reviewed_with_the_cli_environment_and_without_one() -> None:
    reviewed = {scenario for scenario, region in APP_RUNS.values() if region}
    assert reviewed == set(SCENARIOS) | set(MODEL_SCENARIOS)
    assert None in {region for _, region in APP_RUNS.values()}


def test_no_finding_is_acknowledged_for_a_whole_stack(synths: dict[str, Synth]) -> None:
    for name in CLI_RUNS:
        for path, _ in synths[name].acknowledged:
            assert path.count("/") >= 2, path  # on a resource, never on the stack or the app


def test_finding_ids_flatten_references_as_cdk_nag_does() -> None:
    log_streams = {
        "Fn::Join": [
            "",
            ["arn:", {"Ref": "AWS::Partition"}, ":logs:eu-west-1:111122223333:log-group:/x:*"],
        ]
    }
    assert (
        flatten_reference(log_streams)
        == "arn:<AWS::Partition>:logs:eu-west-1:111122223333:log-group:/x:*"
    )
    tracks = {"Fn::Join": ["", [{"Fn::GetAtt": ["Tracks1", "Arn"]}, "/music-output/*"]]}
    assert flatten_reference(tracks) == "<Tracks1.Arn>/music-output/*"
    assert flatten_reference({"Fn::Sub": "${AWS::AccountId}.dkr"}) == "<AWS::AccountId>.dkr"
    assert flatten_reference("*") == "*"
