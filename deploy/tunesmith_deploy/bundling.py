"""Packaging the Lambda function's code without Docker: tunesmith plus what the handler imports.

The function (`tunesmith.aws.lambda_handler`) needs tunesmith's pure-Python source, pydantic,
pydantic-settings, python-multipart (forms with uploads) and boto3 (bundled, not the runtime's
copy, so the API parameters it uses are known to exist) and nothing heavy: no torch, numpy or
transformers. `bundle_lambda` runs ``pip install --target`` for the Lambda's Python version and
platform (manylinux wheels only), so it works on any machine with network access to PyPI; the
versions come from tunesmith's own ``pyproject.toml``, so the function and the package never
drift apart.

`LocalPipBundling` plugs that into CDK asset bundling (``ILocalBundling``); the Docker
``command`` beside it does the same inside the Lambda build image, for machines where local
bundling is turned off.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any, Final

import jsii
from aws_cdk import ILocalBundling

__all__ = [
    "LAMBDA_DEPENDENCIES",
    "REPO_ROOT",
    "LocalPipBundling",
    "bundle_lambda",
    "docker_command",
    "lambda_requirements",
]

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
# Distributions the handler imports, by name; their version ranges come from pyproject.toml.
LAMBDA_DEPENDENCIES: Final = ("pydantic", "pydantic-settings", "python-multipart", "boto3")
_IGNORED: Final = shutil.ignore_patterns("__pycache__", "*.pyc")


def lambda_requirements(pyproject: Path = REPO_ROOT / "pyproject.toml") -> list[str]:
    """The requirement strings of `LAMBDA_DEPENDENCIES` as tunesmith declares them."""
    project = tomllib.loads(pyproject.read_text("utf-8"))["project"]
    declared = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        declared += [item for item in extra if not item.startswith("tunesmith")]
    found: dict[str, str] = {}
    for requirement in declared:
        name = re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower()
        if name in LAMBDA_DEPENDENCIES:
            found.setdefault(name, requirement)
    missing = [name for name in LAMBDA_DEPENDENCIES if name not in found]
    if missing:
        raise ValueError(f"{pyproject} does not declare {', '.join(missing)}")
    return [found[name] for name in LAMBDA_DEPENDENCIES]


def bundle_lambda(
    output_dir: Path,
    *,
    source: Path = REPO_ROOT / "src" / "tunesmith",
    python_version: str = "3.14",
    platform: str = "manylinux2014_x86_64",
    requirements: list[str] | None = None,
) -> None:
    """Fill `output_dir` with the function's code: the dependencies, then tunesmith itself.

    Raises `RuntimeError` with pip's output when the install fails.
    """
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "--no-compile", "--target", str(output_dir), "--implementation", "cp",
        "--python-version", python_version, "--platform", platform, "--only-binary=:all:",
        "--upgrade", *(requirements or lambda_requirements()),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"bundling the Lambda function failed (pip exit {done.returncode}):\n"
            f"{done.stdout}{done.stderr}"
        )
    shutil.copytree(source, output_dir / "tunesmith", ignore=_IGNORED, dirs_exist_ok=True)


def docker_command() -> list[str]:
    """The same bundling inside the Lambda build image (the asset is ``src/``)."""
    pins = " ".join(f"'{r}'" for r in lambda_requirements())
    return [
        "bash",
        "-c",
        f"pip install --no-compile --target /asset-output {pins} && "
        "cp -r /asset-input/tunesmith /asset-output/ && "
        "find /asset-output/tunesmith -name __pycache__ -prune -exec rm -rf {} +",
    ]


@jsii.implements(ILocalBundling)
class LocalPipBundling:
    """CDK local bundling with `bundle_lambda` (no Docker needed)."""

    def __init__(self, python_version: str) -> None:
        self.python_version = python_version

    def try_bundle(self, output_dir: str, options: Any = None) -> bool:
        bundle_lambda(Path(output_dir), python_version=self.python_version)
        return True
