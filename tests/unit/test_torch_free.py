"""The API, service and AWS tiers import without torch: a Lambda or a remote-engine API never
loads the model code (`tunesmith.engine.params` holds what they need of the engine)."""

from __future__ import annotations

import subprocess
import sys

MODULES = [
    "tunesmith.api",
    "tunesmith.aws.lambda_handler",
    "tunesmith.aws.endpoint",
    "tunesmith.service",
    "tunesmith.jobs",
    "tunesmith.render",
    "tunesmith.pool",
    "tunesmith.engine",
    "tunesmith.engine.base",
]


def test_the_api_and_aws_tiers_import_without_torch() -> None:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in MODULES)
        + "print(','.join(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "", f"imported: {done.stdout.strip()}"


def test_the_check_can_fail() -> None:
    code = "import sys, tunesmith.engine.musicgen.model; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "True"
