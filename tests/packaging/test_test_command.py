"""`scripts/test`, the README's test command, as CI runs it: its control flow, with the tools it
calls (pytest, ruff, mypy) replaced by stand-ins that record their calls and fail on demand."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYTEST = "python -m pytest -n 2 --dist loadgroup"
TOOL = """#!/usr/bin/env bash
echo "$(basename "$0")${*:+ $*}" >> "$CALLS"
case "$(basename "$0") $*" in *"$FAIL"*) exit 1 ;; esac
"""


def run_test_command(tmp_path: Path, fail: str, *args: str) -> tuple[int, list[str]]:
    checkout = tmp_path / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts/test", checkout / "scripts/test")
    (checkout / "scripts/install").write_text("#!/usr/bin/env bash\n")  # installing is not tested
    bin_dir = checkout / ".venv/bin"
    bin_dir.mkdir(parents=True)
    for tool in ("python", "ruff", "mypy"):
        (bin_dir / tool).write_text(TOOL)
        (bin_dir / tool).chmod(0o755)
    (bin_dir / "activate").write_text(f'export PATH="{bin_dir}:$PATH"\n')
    calls = tmp_path / "calls"
    env = {k: v for k, v in os.environ.items() if k != "TUNESMITH_TEST_WORKERS"}
    env |= {"CALLS": str(calls), "FAIL": fail, "TUNESMITH_BROWSER_TESTS": "0"}
    done = subprocess.run(
        ["bash", str(checkout / "scripts/test"), *args], env=env, capture_output=True, timeout=60
    )
    return done.returncode, calls.read_text().splitlines()


@pytest.mark.parametrize("fail", ["-m pytest", "ruff check", "ruff format", "mypy"])
def test_every_check_runs_and_any_failure_fails_the_run(tmp_path: Path, fail: str) -> None:
    code, calls = run_test_command(tmp_path, fail)
    assert code != 0
    assert calls == [PYTEST, "ruff check .", "ruff format --check .", "mypy"]


def test_all_passing_exits_zero(tmp_path: Path) -> None:
    assert run_test_command(tmp_path, "nothing fails") == (
        0,
        [PYTEST, "ruff check .", "ruff format --check .", "mypy"],
    )


def test_arguments_go_to_pytest_alone(tmp_path: Path) -> None:
    code, calls = run_test_command(tmp_path, "-m pytest", "-k", "api")
    assert code != 0 and calls == [f"{PYTEST} -k api"]
