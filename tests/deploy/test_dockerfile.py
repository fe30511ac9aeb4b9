"""deploy/Dockerfile, checked without a Docker engine: its stages and pins, the build context
the CDK app stages for it, and the very command its SageMaker stage runs."""

from __future__ import annotations

import importlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from cdk_synth import DEPLOY, Synth
from endpoint_process import EndpointProcess
from tunesmith_deploy.config import DeployConfig
from tunesmith_deploy.model_endpoint import engine_image_args

DOCKERFILE = DEPLOY / "Dockerfile"


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def last(self, keyword: str) -> list[str]:
        """An exec-form instruction's argument list (the last one wins, as in Docker)."""
        values = [v for k, v in self.instructions if k == keyword]
        parsed: list[str] = json.loads(values[-1])
        return parsed

    def env(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for keyword, value in self.instructions:
            if keyword == "ENV":
                found.update(re.findall(r"(\w+)=(\S+)", value))
        return found

    def text(self, keyword: str) -> list[str]:
        return [v for k, v in self.instructions if k == keyword]


def parse() -> tuple[list[str], dict[str, Stage]]:
    """The global ARGs and the stages, by name (continuation lines joined)."""
    lines = re.sub(r"\\\n", " ", DOCKERFILE.read_text()).splitlines()
    global_args: list[str] = []
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        if keyword == "FROM":
            base, _, name = rest.partition(" AS ")
            current = stages[name.strip()] = Stage(name.strip(), base.strip())
        elif current is None:
            global_args.append(rest)
        else:
            current.instructions.append((keyword, rest.strip()))
    return global_args, stages


def test_the_stages_and_their_order() -> None:
    global_args, stages = parse()
    assert list(stages) == ["base", "model", "weights", "engine", "lambda", "endpoint"]
    assert list(stages)[-1] == "endpoint"  # a plain `docker build` makes the SageMaker image
    assert global_args == ["BASE_IMAGE=python:3.11-slim-bookworm"]  # a CUDA base can be given
    assert stages["base"].base == "${BASE_IMAGE}"
    assert stages["model"].base == "scratch" and not stages["model"].instructions
    assert {stages[s].base for s in ("weights", "engine")} == {"base"}
    assert {stages[s].base for s in ("lambda", "endpoint")} == {"engine"}


def test_torch_is_pinned_and_installed_before_the_project() -> None:
    _, stages = parse()
    base = stages["base"]
    assert "TORCH_VERSION=2.13.0" in base.text("ARG")
    assert any(
        a.startswith("TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu")
        for a in base.text("ARG")
    )
    assert "TORCH_FIND_LINKS=" in base.text("ARG")  # empty: the index alone
    (torch,) = [r for r in base.text("RUN") if "torch==" in r]
    assert '"torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"' in torch
    assert '${TORCH_FIND_LINKS:+--find-links "${TORCH_FIND_LINKS}"}' in torch
    engine_runs = stages["engine"].text("RUN")
    # torch is already there; boto3 writes the async variant's track records
    assert any(r.startswith('pip install ".[aws]"') for r in engine_runs)
    assert not any("torch" in r.split("&&")[0] for r in engine_runs)


def test_the_cdk_build_arguments_are_the_dockerfiles() -> None:
    _, stages = parse()
    declared = {a.split("=")[0] for s in stages.values() for a in s.text("ARG")}
    for variant in ("serverless", "realtime", "lambda"):
        assert set(engine_image_args(DeployConfig(variant=variant))) <= declared


def test_a_local_checkpoint_replaces_the_download() -> None:
    """`--build-context model=DIR --build-arg MODEL=/opt/model` (scripts/build-image)."""
    _, stages = parse()
    weights, engine = stages["weights"], stages["engine"]
    assert "--from=model / /opt/model/" in weights.text("COPY")
    (fetch,) = weights.text("RUN")
    # a path is checked, an id downloaded, nothing at all left for /opt/ml/model
    assert '"") ;;' in fetch and '/*) test -f "${MODEL}/config.json"' in fetch
    assert fetch.index("/*)") < fetch.index("snapshot_download")
    assert "chmod -R a+rX /opt/model" in fetch  # readable by the endpoint's own user
    assert "--from=weights /opt/model /opt/model" in engine.text("COPY")


def test_the_build_script_passes_only_declared_arguments() -> None:
    global_args, stages = parse()
    declared = {a.split("=")[0] for a in global_args}
    declared |= {a.split("=")[0] for s in stages.values() for a in s.text("ARG")}
    script = (DEPLOY.parent / "scripts/build-image").read_text()
    passed = set(re.findall(r'--build-arg "?(\w+)=', script))
    assert {"BASE_IMAGE", "MODEL", "TORCH_FIND_LINKS", "TORCH_VERSION"} <= passed <= declared
    assert '--build-context "model=' in script and '--target "$target"' in script


def test_the_build_context_is_only_what_the_image_installs(synths: dict[str, Synth]) -> None:
    """The CDK app stages the Docker context (honouring .dockerignore) in the cloud assembly."""
    outdir = synths["serverless"].outdir
    (context,) = [p for p in outdir.glob("asset.*") if (p / "pyproject.toml").exists()]
    files = {str(p.relative_to(context)) for p in context.rglob("*") if p.is_file()}
    # the Dockerfile too: cdk-assets builds from this directory with --file deploy/Dockerfile
    kept = {"pyproject.toml", "README.md", "deploy/Dockerfile", ".dockerignore"}
    assert kept - {".dockerignore"} | {"src/tunesmith/aws/endpoint.py"} <= files
    assert all(f in kept or f.startswith("src/tunesmith/") for f in files), files
    assets = json.loads((outdir / "Tunesmith.assets.json").read_text())["dockerImages"]
    (image,) = assets.values()
    assert image["source"]["dockerFile"] == "deploy/Dockerfile"
    assert image["source"]["dockerBuildTarget"] == "endpoint"
    assert (context / image["source"]["dockerFile"]).read_text() == DOCKERFILE.read_text()
    assert not any("__pycache__" in f or f.endswith(".pyc") for f in files)


def test_the_endpoint_stage_runs_tunesmith_endpoint_serve(tiny_model_dir: Path) -> None:
    _, stages = parse()
    endpoint, engine = stages["endpoint"], stages["engine"]
    entrypoint, command = endpoint.last("ENTRYPOINT"), endpoint.last("CMD")
    assert entrypoint == ["tunesmith", "endpoint"] and command == ["serve"]
    assert endpoint.text("EXPOSE") == ["8080"]
    env = engine.env() | endpoint.env()
    assert env["TUNESMITH_HOST"] == "0.0.0.0" and env["HF_HUB_OFFLINE"] == "1"
    assert env["TUNESMITH_MODEL"] == "${MODEL}"
    # The same command line with the image's environment; tests bind loopback and the tiny model.
    env |= {"TUNESMITH_HOST": "127.0.0.1", "TUNESMITH_MODEL": str(tiny_model_dir), "HOME": "/tmp"}
    env.pop("HF_HOME")
    argv = (*entrypoint[1:], *command)  # `tunesmith` is the console script: python -m tunesmith.cli
    with EndpointProcess(tiny_model_dir, argv=argv, env=env) as running:
        assert httpx.get(f"{running.url}/ping").json()["status"] == "ok"
        answer = httpx.post(
            f"{running.url}/invocations", json={"prompt": "a", "duration": 1}, timeout=60
        )
        assert answer.status_code == 200 and answer.headers["content-type"] == "audio/wav"


def test_the_lambda_stage_runs_the_handler_with_the_runtime_interface_client() -> None:
    _, stages = parse()
    stage = stages["lambda"]
    assert stage.last("ENTRYPOINT") == ["python", "-m", "awslambdaric"]
    (handler,) = stage.last("CMD")
    module, _, name = handler.rpartition(".")
    assert callable(getattr(importlib.import_module(module), name))
    assert stage.env()["HOME"] == "/tmp"  # the function's file system is read-only elsewhere
    assert any("awslambdaric" in r and ".[aws]" in r for r in stage.text("RUN"))


def test_the_engine_image_carries_the_compiled_kernels() -> None:
    _, stages = parse()
    engine = stages["engine"]
    cache = engine.env()["XDG_CACHE_HOME"]  # where the kernels' build looks
    build = [r for r in engine.text("RUN") if "tunesmith kernels" in r]
    assert len(build) == 1
    # compiled (or the build fails) with a compiler that is removed again, readable by the
    # endpoint's own user
    assert "install -y --no-install-recommends gcc g++" in build[0]
    assert build[0].index("tunesmith kernels --require") < build[0].index("purge -y")
    assert f"chmod -R a+rX {cache}" in build[0]
    assert "XDG_CACHE_HOME" not in {**stages["lambda"].env(), **stages["endpoint"].env()}
