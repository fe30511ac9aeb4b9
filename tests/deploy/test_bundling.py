"""The function's code as `cdk deploy` packages it: pip, no Docker, nothing heavy.

This builds the real bundle (pip downloads the wheels from PyPI) for this machine's Python,
then runs the handler from it in an isolated interpreter that sees the bundle and the
standard library only: what the Lambda runtime has.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from tunesmith_deploy.bundling import LAMBDA_DEPENDENCIES, bundle_lambda, lambda_requirements

HEAVY = ("torch", "numpy", "transformers", "soundfile", "fastapi", "uvicorn")


def test_requirements_come_from_tunesmiths_own_pyproject() -> None:
    requirements = lambda_requirements()
    assert [r.split(">")[0].split("=")[0] for r in requirements] == list(LAMBDA_DEPENDENCIES)
    assert all(any(op in r for op in (">=", "==", "~=")) for r in requirements)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if platform.machine() not in ("x86_64", "aarch64"):
        pytest.skip(f"no manylinux wheels for {platform.machine()}")
    out = tmp_path_factory.mktemp("lambda-bundle")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    bundle_lambda(out, python_version=version, platform=f"manylinux2014_{platform.machine()}")
    return out


def test_the_bundle_holds_the_handler_and_its_dependencies_and_nothing_heavy(
    bundle: Path,
) -> None:
    top = {p.name for p in bundle.iterdir()}
    assert {"tunesmith", "pydantic", "pydantic_core", "pydantic_settings", "python_multipart",
            "boto3"} <= top  # fmt: skip
    assert not top & set(HEAVY)
    assert (bundle / "tunesmith" / "aws" / "lambda_handler.py").is_file()
    assert not list(bundle.rglob("__pycache__"))
    size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    assert size < 60 * 1024 * 1024, f"{size / 2**20:.1f} MiB"  # Lambda allows 250 MB unzipped


def test_the_handler_runs_from_the_bundle_alone(bundle: Path) -> None:
    """A JSON body and a form (python-multipart parses it), each refused for its duration."""
    form = (
        b'--b\r\nContent-Disposition: form-data; name="prompt"\r\n\r\na\r\n'
        b'--b\r\nContent-Disposition: form-data; name="duration"\r\n\r\n99\r\n'
        b'--b\r\nContent-Disposition: form-data; name="input_audio"; filename="a.wav"\r\n'
        b"Content-Type: audio/wav\r\n\r\nRIFF\r\n--b--\r\n"
    )
    script = f"""
import base64, json, sys
sys.path.insert(0, {str(bundle)!r})
from tunesmith.aws.lambda_handler import handler
event = {{"httpMethod": "POST", "resource": "/generate", "path": "/generate",
          "headers": None, "body": '{{"prompt": "a", "duration": 99}}',
          "isBase64Encoded": False, "requestContext": {{"requestId": "r-1"}}}}
form = {{**event, "headers": {{"Content-Type": "multipart/form-data; boundary=b"}},
         "body": base64.b64encode({form!r}).decode(), "isBase64Encoded": True}}
answers = [handler(event, None), handler(form, None)]
import boto3, pydantic_core, python_multipart
print(json.dumps({{
    "status": [answer["statusCode"] for answer in answers],
    "fields": [f["field"] for answer in answers for f in json.loads(answer["body"])["fields"]],
    "outside": sorted({{m.__file__.split("/site-packages/")[0] for m in list(sys.modules.values())
                        if "site-packages" in (getattr(m, "__file__", None) or "")}}),
    "heavy": [m for m in {HEAVY!r} if m in sys.modules],
}}))
"""
    env = {"TUNESMITH_S3_BUCKET": "tracks", "TUNESMITH_ENDPOINT_NAME": "tunesmith-serverless",
           "TUNESMITH_MAX_DURATION": "30", "TUNESMITH_VARIANT": "serverless",
           "AWS_DEFAULT_REGION": "us-east-1", "PATH": "/usr/bin:/bin"}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", script],  # no site-packages: the bundle only
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result == {
        "status": [422, 422], "fields": ["duration", "duration"], "outside": [], "heavy": [],
    }  # fmt: skip
