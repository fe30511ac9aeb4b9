"""The CDK app synthesized as ``cdk synth`` makes it: the CDK CLI pinned in deploy/package.json
(installed by ``npm ci``) runs ``python3 app.py`` with cdk.json's context plus ``-c`` values and
the region and account it finds; cdk-nag's report lands in the cloud assembly. Each run happens
once per session, several at a time.

    synths["serverless"]                   cdk synth in us-east-1, account `ACCOUNT`
    synths["serverless@eu-west-1"]         cdk synth in another configured region (`REGIONS`)
    synths["async@cn-north-1"]             cdk synth in China (Beijing), partition aws-cn
    synths["serverless@unconfigured"]      cdk synth with no AWS configuration at all
    synths["serverless/unacknowledged"]    app.py alone with -c acknowledge_findings=false and
                                           the region and account cdk synth gave "serverless"
    synths["serverless@agnostic/unacknowledged"]   the same without a region or account (tokens)
    synths["models"]                       cdk synth of two models (`MODEL_SCENARIOS`), us-east-1

The region and account come as ``aws configure`` leaves them: a temporary HOME holding
``~/.aws/config`` (``region = ...``) and ``~/.aws/credentials`` (fake keys). The CLI asks STS
for the account; `StsStandin` answers on 127.0.0.1 (``AWS_ENDPOINT_URL_STS``), and every node
process of the run loads `NET_GUARD`, which refuses and records any other destination. The CLI
bundles the Lambda function with pip as it does for a deployment (it has no way to skip that);
app.py alone skips it with ``aws:cdk:bundling-stacks``.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property, partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
STACK = "Tunesmith"
CDK_CONTEXT: dict[str, Any] = json.loads((DEPLOY / "cdk.json").read_text())["context"]
CDK = DEPLOY / "node_modules" / ".bin" / "cdk"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))

ACCOUNT = "111122223333"  # what the STS stand-in answers
DEFAULT_REGION = "us-east-1"
REGIONS = (DEFAULT_REGION, "eu-west-1")
ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"  # AWS's documented example keys
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"

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
        "min_instances": "2",
        "max_instances": "6",
        "invocations_target": "3",
        "scale_in_cooldown": "900",
        "scale_out_cooldown": "120",
    },
}
# several models (one endpoint each, or all in the function): tests/deploy/test_models.py;
# synthesized in the default region only
MODELS = "facebook/musicgen-small,facebook/musicgen-melody"
MODEL_SCENARIOS: dict[str, dict[str, Any]] = {
    "models": {"model": MODELS},
    "models-async": {"variant": "async", "model": MODELS},
    "models-lambda": {"variant": "lambda", "model": MODELS},
}
UNACKNOWLEDGED = {"acknowledge_findings": "false"}


def _name(scenario: str, region: str | None) -> str:
    return scenario if region == DEFAULT_REGION else f"{scenario}@{region or 'unconfigured'}"


# run name -> (scenario, the region configured for the CLI; None: none at all)
CLI_RUNS: dict[str, tuple[str, str | None]] = (
    {_name(scenario, region): (scenario, region) for scenario in SCENARIOS for region in REGIONS}
    | {
        "async@cn-north-1": ("async", "cn-north-1"),  # the aws-cn partition (cdk.json targets it)
        "serverless@unconfigured": ("serverless", None),
    }
    | {scenario: (scenario, DEFAULT_REGION) for scenario in MODEL_SCENARIOS}
)
# run name -> (scenario, the region for CDK_DEFAULT_REGION, with ACCOUNT; None: neither), all
# with -c acknowledge_findings=false: every acknowledgment is recorded, none is applied
APP_RUNS: dict[str, tuple[str, str | None]] = {
    f"{scenario}/unacknowledged": (scenario, DEFAULT_REGION)
    for scenario in SCENARIOS | MODEL_SCENARIOS
} | {"serverless@agnostic/unacknowledged": ("serverless", None)}


@dataclass
class Synth:
    """One synthesized cloud assembly (or the failure to make it)."""

    outdir: Path
    returncode: int
    output: str
    region: str | None = None  # the region `aws configure` left, if any
    net_log: Path | None = None  # for a CLI run: where its node processes log what they tried

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
    def environment(self) -> str:
        """The stack's environment in the cloud assembly: ``aws://<account>/<region>``."""
        manifest = json.loads((self.outdir / "manifest.json").read_text())
        environment: str = manifest["artifacts"][STACK]["environment"]
        return environment

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

    @property
    def tried(self) -> list[str]:
        """What the run's node processes tried to reach beyond loopback (refused)."""
        assert self.net_log is not None, "not a CLI run"
        return self.net_log.read_text().splitlines() if self.net_log.exists() else []


# ---- the pinned CLI ------------------------------------------------------------------------------


def installed_cli_is_current() -> bool:
    """Whether deploy/node_modules holds exactly the packages package-lock.json pins."""
    lock = json.loads((DEPLOY / "package-lock.json").read_text())
    for path, entry in lock["packages"].items():
        if not path:
            continue
        installed = DEPLOY / path / "package.json"
        if (
            not installed.exists()
            or json.loads(installed.read_text())["version"] != entry["version"]
        ):
            return False
    return CDK.exists()


def ensure_cdk_cli() -> Path:
    """``npm ci`` in deploy/ unless node_modules is already current; the CLI's path."""
    # the lock file is locked so that concurrent test sessions do not install over each other
    with open(DEPLOY / "package-lock.json") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not installed_cli_is_current():
            npm = shutil.which("npm")
            if npm is None:
                pytest.fail("npm is needed to install the CDK CLI pinned in deploy/package.json")
            done = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund"],
                cwd=DEPLOY,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            assert done.returncode == 0, done.stdout + done.stderr
            assert installed_cli_is_current()
    return CDK


# ---- STS on loopback, and the guard on everything else -------------------------------------------


@dataclass(frozen=True)
class StsCall:
    action: str
    access_key: str
    region: str  # the region the request was signed for


class StsStandin:
    """An STS endpoint on 127.0.0.1 answering GetCallerIdentity (Query protocol, XML)."""

    def __init__(self, account: str = ACCOUNT) -> None:
        self.account = account
        self.calls: list[StsCall] = []
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                action = form.get("Action", [""])[0]
                scope = re.search(
                    r"Credential=([^/]+)/[^/]+/([^/]+)/sts/", self.headers["Authorization"] or ""
                )
                standin.calls.append(StsCall(action, *(scope.groups() if scope else ("", ""))))
                if action == "GetCallerIdentity" and scope:
                    status, body = 200, standin.identity(scope.group(1))
                else:
                    status, body = 400, standin.error(action)
                self.send_response(status)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def identity(self, access_key: str) -> bytes:
        return (
            '<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
            "<GetCallerIdentityResult>"
            f"<Arn>arn:aws:iam::{self.account}:user/tunesmith-tests</Arn>"
            f"<UserId>AIDA{access_key[4:]}</UserId><Account>{self.account}</Account>"
            "</GetCallerIdentityResult>"
            "<ResponseMetadata><RequestId>tunesmith-tests</RequestId></ResponseMetadata>"
            "</GetCallerIdentityResponse>"
        ).encode()

    @staticmethod
    def error(action: str) -> bytes:
        return (
            '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error>'
            f"<Type>Sender</Type><Code>InvalidAction</Code><Message>{action!r} is not served "
            "by the test stand-in</Message></Error><RequestId>tunesmith-tests</RequestId>"
            "</ErrorResponse>"
        ).encode()

    def __enter__(self) -> StsStandin:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# Loaded into every node process of a test `cdk synth` (NODE_OPTIONS=--require): any connection
# or DNS lookup that is not for loopback fails at once and is written to TUNESMITH_NET_LOG.
NET_GUARD = r"""
"use strict";
const fs = require("fs");
const net = require("net");
const dns = require("dns");
const loopback = (host) =>
  !host || host === "localhost" || host === "::1" || /^(::ffff:)?127\./.test(host);
function refuse(what) {
  fs.appendFileSync(process.env.TUNESMITH_NET_LOG, `${what}\n`);
  return Object.assign(new Error(`${what}: not loopback, refused by the tests`), {
    code: "ENOTFOUND",
  });
}
const connect = net.Socket.prototype.connect;
net.Socket.prototype.connect = function (...args) {
  const [options] = Array.isArray(args[0]) ? args[0] : net._normalizeArgs(args);
  const host = options.host ?? options.hostname;
  if (!options.path && !loopback(host)) {  // a truthy path: a local socket
    const error = refuse(`connect ${host}:${options.port}`);
    process.nextTick(() => this.destroy(error));
    return this;
  }
  return connect.apply(this, args);
};
const lookup = dns.lookup;
dns.lookup = function (hostname, ...rest) {
  if (!loopback(hostname)) {
    const error = refuse(`lookup ${hostname}`);
    process.nextTick(() => rest[rest.length - 1](error));
    return {};
  }
  return lookup.call(this, hostname, ...rest);
};
"""


def aws_home(home: Path, region: str | None) -> Path:
    """A HOME as ``aws configure`` leaves it (config and credentials), or bare (no region)."""
    aws = home / ".aws"
    aws.mkdir(parents=True)
    if region is not None:
        (aws / "config").write_text(f"[default]\nregion = {region}\noutput = json\n")
        (aws / "credentials").write_text(
            f"[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
        )
    return home


def cli_environment(home: Path, sts: StsStandin, guard: Path) -> dict[str, str]:
    """The CLI's environment: this one without AWS or CDK settings, plus the test's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CDK_"))}
    return env | {
        "HOME": str(home),
        "CDK_HOME": str(home / ".cdk"),  # the CLI's caches; it ignores HOME for them
        # the temporary HOME would leave jsii (aws-cdk-lib unpacked) and pip with cold caches
        "JSII_RUNTIME_PACKAGE_CACHE_ROOT": os.environ.get(
            "JSII_RUNTIME_PACKAGE_CACHE_ROOT", str(CACHE / "aws" / "jsii" / "package-cache")
        ),
        "PIP_CACHE_DIR": os.environ.get("PIP_CACHE_DIR", str(CACHE / "pip")),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # python3
        # no telemetry, no version check, and STS on loopback: nothing leaves the machine
        "CDK_DISABLE_CLI_TELEMETRY": "true",
        "CDK_DISABLE_VERSION_CHECK": "1",
        "AWS_ENDPOINT_URL_STS": sts.url,
        "NODE_OPTIONS": f"--require {guard}",
        "TUNESMITH_NET_LOG": str(home / "net.log"),
    }


def cdk_synth(outdir: Path, context: dict[str, Any], env: dict[str, str]) -> tuple[int, str]:
    """``cdk synth`` in deploy/ with ``-c`` values, writing the assembly to `outdir`."""
    flags = [f"--context={key}={value}" for key, value in context.items()]
    return _in_deploy(
        [str(CDK), "synth", "--quiet", "--no-notices", "--output", str(outdir), *flags], env
    )


def app_synth(
    outdir: Path, context: dict[str, Any], region: str | None = None, account: str | None = None
) -> tuple[int, str]:
    """``python3 app.py`` as the CDK CLI starts it (CDK_OUTDIR, CDK_CONTEXT_JSON, CDK_DEFAULT_*)."""
    env = {
        **os.environ,
        "CDK_OUTDIR": str(outdir),
        "CDK_CONTEXT_JSON": json.dumps(
            {**CDK_CONTEXT, "aws:cdk:bundling-stacks": [], **context}  # no pip bundling
        ),
    }
    for name, value in (("CDK_DEFAULT_REGION", region), ("CDK_DEFAULT_ACCOUNT", account)):
        env.pop(name, None)
        if value is not None:
            env[name] = value
    return _in_deploy([sys.executable, "app.py"], env)


def _in_deploy(command: list[str], env: dict[str, str]) -> tuple[int, str]:
    """`command` run in deploy/: its exit status and everything it printed."""
    done = subprocess.run(
        command, cwd=DEPLOY, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    return done.returncode, done.stdout + done.stderr


@pytest.fixture(scope="session")
def sts() -> Iterator[StsStandin]:
    with StsStandin() as standin:
        yield standin


@pytest.fixture(scope="session")
def net_guard(tmp_path_factory: pytest.TempPathFactory) -> Path:
    guard = tmp_path_factory.mktemp("net-guard") / "guard.cjs"
    guard.write_text(NET_GUARD)
    return guard


@pytest.fixture(scope="session")
def synths(
    tmp_path_factory: pytest.TempPathFactory, sts: StsStandin, net_guard: Path
) -> dict[str, Synth]:
    """Every run in the module docstring, several at a time."""
    ensure_cdk_cli()
    root = tmp_path_factory.mktemp("cdk")
    runs: dict[str, tuple[Path, Callable[[], tuple[int, str]], str | None, Path | None]] = {}

    for name, (scenario, region) in CLI_RUNS.items():
        home = aws_home(root / f"home-{len(runs)}", region)
        env = cli_environment(home, sts, net_guard)
        outdir = root / f"out-{len(runs)}"
        context = (SCENARIOS | MODEL_SCENARIOS)[scenario]
        run = partial(cdk_synth, outdir, context, env)
        runs[name] = (outdir, run, region, home / "net.log")
    for name, (scenario, region) in APP_RUNS.items():
        outdir = root / f"out-{len(runs)}"
        context = (SCENARIOS | MODEL_SCENARIOS)[scenario] | UNACKNOWLEDGED
        run = partial(app_synth, outdir, context, region, ACCOUNT if region else None)
        runs[name] = (outdir, run, region, None)

    workers = max(4, 2 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {name: pool.submit(run) for name, (_, run, _, _) in runs.items()}
        return {
            name: Synth(outdir, *futures[name].result(), region=region, net_log=net_log)
            for name, (outdir, _, region, net_log) in runs.items()
        }
