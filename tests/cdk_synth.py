"""The CDK app synthesized as ``cdk synth`` runs it: ``python3 app.py`` in ``deploy/``, with
``cdk.json``'s context plus ``-c`` values, writing a cloud assembly. Each scenario is
synthesized once per session, all in parallel; Lambda asset bundling (pip) is skipped with
``aws:cdk:bundling-stacks`` (tests/deploy/test_bundling.py runs it for real).

    synths["serverless"]                    the default deployment, findings acknowledged
    synths["serverless/unacknowledged"]     the same with -c acknowledge_findings=false
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
STACK = "Tunesmith"
CDK_CONTEXT: dict[str, Any] = json.loads((DEPLOY / "cdk.json").read_text())["context"]

# scenario -> the -c values it adds to cdk.json's context
SCENARIOS: dict[str, dict[str, Any]] = {
    "serverless": {},
    "realtime": {"variant": "realtime"},
    "async": {"variant": "async"},
    "lambda": {"variant": "lambda"},
    # everything else that can be chosen, given as strings as `cdk deploy -c k=v` gives them
    "options": {
        "variant": "realtime",
        "url_mode": "presigned",
        "retain_bucket": "false",
        "expire_days": "30",
        "api_key": "false",
        "instance_type": "ml.c5.xlarge",
        "api_timeout": "120",
        "throttle_rate": "2",
        "throttle_burst": "4",
        "max_duration": "20",
    },
}


@dataclass
class Synth:
    """One synthesized cloud assembly (or the failure to make it)."""

    outdir: Path
    returncode: int
    output: str

    @cached_property
    def template(self) -> dict[str, Any]:
        assert self.returncode == 0, self.output[-3000:]
        data: dict[str, Any] = json.loads((self.outdir / f"{STACK}.template.json").read_text())
        return data

    def resources(self, kind: str) -> dict[str, dict[str, Any]]:
        """The template's resources of one CloudFormation type, by logical id."""
        return {k: r for k, r in self.template["Resources"].items() if r["Type"] == kind}

    def one(self, kind: str) -> tuple[str, dict[str, Any]]:
        (found,) = self.resources(kind).items()
        return found

    @property
    def findings(self) -> set[tuple[str, str]]:
        """(construct path, finding id) for every cdk-nag finding in the validation report."""
        report = self.outdir / "validation-report.json"
        if not report.exists():
            return set()
        found = set()
        for plugin in json.loads(report.read_text())["pluginReports"]:
            for violation in plugin["violations"]:
                for construct in violation["violatingConstructs"]:
                    path = construct["constructPath"].removesuffix("/Resource")
                    found.add((path, violation["ruleName"]))
        return found

    @property
    def acknowledged(self) -> dict[tuple[str, str], str]:
        """(construct path, finding id) -> the written reason, for every acknowledgment."""
        metadata = json.loads((self.outdir / f"{STACK}.metadata.json").read_text())
        return {
            (path.lstrip("/"), entry["data"]["id"]): entry["data"]["reason"]
            for path, entries in metadata.items()
            for entry in entries
            if entry["type"] == "tunesmith:nag-acknowledged"
        }


def synthesize(outdir: Path, context: dict[str, Any]) -> subprocess.Popen[str]:
    """Start ``python3 app.py`` the way the CDK CLI does (CDK_OUTDIR, CDK_CONTEXT_JSON)."""
    env = {
        **os.environ,
        "CDK_OUTDIR": str(outdir),
        "CDK_CONTEXT_JSON": json.dumps({**CDK_CONTEXT, **context}),
    }
    env.pop("CDK_DEFAULT_ACCOUNT", None)
    env.pop("CDK_DEFAULT_REGION", None)
    return subprocess.Popen(
        [sys.executable, "app.py"],
        cwd=DEPLOY,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.fixture(scope="session")
def synths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Synth]:
    """Every scenario, acknowledged and not, synthesized in parallel."""
    root = tmp_path_factory.mktemp("cdk")
    runs: dict[str, tuple[Path, subprocess.Popen[str]]] = {}
    for name, extra in SCENARIOS.items():
        for suffix, acks in (("", {}), ("/unacknowledged", {"acknowledge_findings": "false"})):
            outdir = root / (name + suffix).replace("/", "-")
            context = {"aws:cdk:bundling-stacks": [], **extra, **acks}
            runs[name + suffix] = (outdir, synthesize(outdir, context))
    results = {}
    for name, (outdir, proc) in runs.items():
        output, _ = proc.communicate(timeout=600)
        results[name] = Synth(outdir, proc.returncode, output)
    return results
