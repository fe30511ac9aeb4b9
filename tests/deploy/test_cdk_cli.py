"""`cdk synth` through the CDK CLI pinned in deploy/package.json, configured as `aws configure`
leaves a machine: the region and account reach the app, every variant passes cdk-nag in every
region (tests/deploy/test_nag.py), and nothing leaves loopback (tests/cdk_synth.py)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from cdk_synth import (
    ACCESS_KEY,
    ACCOUNT,
    CDK,
    CLI_RUNS,
    DEFAULT_REGION,
    DEPLOY,
    MODEL_SCENARIOS,
    SCENARIOS,
    StsStandin,
    Synth,
    ensure_cdk_cli,
)
from tunesmith_deploy.config import DeployConfig
from tunesmith_deploy.nag import flatten_reference

README = DEPLOY.parent / "README.md"


def pinned() -> str:
    version: str = json.loads((DEPLOY / "package.json").read_text())["devDependencies"]["aws-cdk"]
    return version


def test_the_cli_is_pinned_to_one_2x_release_and_locked() -> None:
    version = pinned()
    assert re.fullmatch(r"2\.\d+\.\d+", version), version  # exact: no range, no tag
    lock = json.loads((DEPLOY / "package-lock.json").read_text())
    assert lock["packages"][""]["devDependencies"] == {"aws-cdk": version}
    assert lock["packages"]["node_modules/aws-cdk"]["version"] == version
    assert lock["packages"]["node_modules/aws-cdk"]["integrity"].startswith("sha512-")


def test_the_installed_cli_is_the_pinned_one() -> None:
    ensure_cdk_cli()
    done = subprocess.run(
        [str(CDK), "--version"], cwd=DEPLOY, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == pinned()


def test_the_readme_asks_for_the_node_the_cli_needs() -> None:
    lock = json.loads((DEPLOY / "package-lock.json").read_text())
    engines = lock["packages"]["node_modules/aws-cdk"]["engines"]  # the CLI's package.json's
    lowest = re.fullmatch(r">=\s*(\d+)\.\d+\.\d+", engines["node"])
    assert lowest, engines
    section = README.read_text().split("## Deploying to AWS", 1)[1].split("\n## ", 1)[0]
    (stated,) = re.findall(r"Node\.js (\d+) or newer", section)
    assert stated == lowest.group(1)
    assert "npm ci" in section and "deploy/package.json" in section


@pytest.mark.parametrize("name", CLI_RUNS)
def test_the_configured_region_and_account_reach_the_app(
    synths: dict[str, Synth], name: str
) -> None:
    synth = synths[name]
    scenario, region = CLI_RUNS[name]
    assert synth.returncode == 0, synth.output[-3000:]  # the CLI read the assembly the app wrote
    account = ACCOUNT if region else "unknown-account"  # no credentials: no account
    assert synth.environment == f"aws://{account}/{region or DEFAULT_REGION}"
    config = DeployConfig.from_context((SCENARIOS | MODEL_SCENARIOS)[scenario].get)
    if not config.uses_sagemaker:
        return
    # each model role's log streams, issue 13's finding: in the stack's region, acknowledged
    logs = [
        flatten_reference(statement["Resource"])
        for logical_id, policy in synth.resources("AWS::IAM::Policy").items()
        if logical_id.startswith("Model") and "ExecutionRole" in logical_id
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if "logs:PutLogEvents" in statement["Action"]
    ]
    where = f"{region}:{ACCOUNT}" if region else f"{DEFAULT_REGION}:<AWS::AccountId>"
    expected = {}
    for index, (model, name) in enumerate(config.endpoint_names.items()):
        construct = "Model" if index == 0 else f"Model-{model}"
        arn = f"arn:<AWS::Partition>:logs:{where}:log-group:/aws/sagemaker/Endpoints/{name}"
        expected[f"Tunesmith/{construct}/ExecutionRole/DefaultPolicy"] = f"{arn}:log-stream:*"
    assert sorted(logs) == sorted(expected.values())
    for policy, arn in expected.items():
        assert (policy, f"AwsSolutions-IAM5[Resource::{arn}]") in synth.acknowledged
    assert synth.findings == set()


def test_the_cli_asked_sts_on_loopback_with_the_configured_keys(
    synths: dict[str, Synth], sts: StsStandin
) -> None:
    configured = [name for name, (_, region) in CLI_RUNS.items() if region]
    assert all(synths[name].returncode == 0 for name in configured)
    assert {call.action for call in sts.calls} == {"GetCallerIdentity"}
    assert {call.access_key for call in sts.calls} == {ACCESS_KEY}
    regions = {region for _, region in CLI_RUNS.values() if region}
    assert {call.region for call in sts.calls} == regions  # signed for the configured one
    assert len(sts.calls) >= len(configured)


def test_no_cli_run_reached_beyond_loopback(synths: dict[str, Synth]) -> None:
    for name in CLI_RUNS:
        assert synths[name].net_log is not None
        assert synths[name].tried == [], name


def test_the_guard_refuses_and_records_what_is_not_loopback(
    tmp_path: Path, net_guard: Path, sts: StsStandin
) -> None:
    log = tmp_path / "net.log"
    script = f"""
const http = require("http");
const tryGet = (url) => new Promise((done) => {{
  http.get(url, (answer) => {{ answer.resume(); done(`answered ${{answer.statusCode}}`); }})
    .on("error", (error) => done(`failed ${{error.code}}`));
}});
(async () => {{
  for (const url of ["http://192.0.2.1/", "http://example.com/", "{sts.url}/"]) {{
    console.log(await tryGet(url));
  }}
  require("dns").lookup("example.org", (error) => console.log(`lookup ${{error && error.code}}`));
}})();
"""
    done = subprocess.run(
        ["node", "--require", str(net_guard), "-e", script],
        env={"PATH": "/usr/bin:/bin", "TUNESMITH_NET_LOG": str(log)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    # the stand-in answers a GET it does not serve with 501: it was reached, and only it
    assert done.stdout.splitlines() == [
        "failed ENOTFOUND",
        "failed ENOTFOUND",
        "answered 501",
        "lookup ENOTFOUND",
    ]
    assert log.read_text().splitlines() == [
        "connect 192.0.2.1:80",
        "connect example.com:80",
        "lookup example.org",
    ]


def test_cdk_synth_bundles_the_function_with_pip(synths: dict[str, Synth]) -> None:
    synth = synths["serverless"]
    handler = Path("tunesmith", "aws", "lambda_handler.py")
    (bundle,) = [p for p in synth.outdir.glob("asset.*") if (p / handler).exists()]
    top = {p.name for p in bundle.iterdir()}
    assert {"tunesmith", "pydantic", "pydantic_settings", "boto3"} <= top
    assert not {"torch", "numpy", "transformers"} & top
