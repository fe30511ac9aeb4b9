"""scripts/install (which scripts/serve and scripts/test run first) in a copy of the checkout:
it installs a fresh checkout, then leaves the virtual environment alone until pyproject.toml,
TORCH_SPEC or the extras asked for change. And what the README saves in the checkout stays out
of git.

The copy's .venv sees this environment's packages through a .pth line and pip runs with no
index, so the installs need no network: what pip does is real, only nothing is downloaded."""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    copy = tmp_path / "checkout"
    (copy / "scripts").mkdir(parents=True)
    shutil.copy2(ROOT / "scripts/install", copy / "scripts/install")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, copy / name)
    shutil.copytree(
        ROOT / "src", copy / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    return copy


def install(checkout: Path, *args: str, torch_spec: str = "torch") -> None:
    if not (checkout / ".venv").exists():
        # a venv without pip of its own: pip, setuptools and the dependencies come from here
        venv.create(checkout / ".venv", with_pip=False)
        (purelib,) = (checkout / ".venv/lib").glob("python3*/site-packages")
        (purelib / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV"))}
    env |= {
        "TORCH_SPEC": torch_spec,
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_NO_INDEX": "1",
        "PIP_NO_BUILD_ISOLATION": "0",  # pip's inverted spelling: build with setuptools here
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    done = subprocess.run(
        ["bash", str(checkout / "scripts/install"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=checkout,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def installed_at(checkout: Path) -> tuple[int, int]:
    """When pip last wrote the editable install (it rewrites its entry point each time)."""
    script = os.stat(checkout / ".venv/bin/tunesmith")
    return script.st_ino, script.st_mtime_ns


def test_install_runs_pip_only_when_its_inputs_change(checkout: Path) -> None:
    install(checkout)  # a fresh checkout: everything is installed
    python = checkout / ".venv/bin/python"
    where = subprocess.run(
        [str(python), "-c", "import tunesmith; print(tunesmith.__file__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(str(checkout / "src"))  # the copy's code, editable
    first = installed_at(checkout)

    install(checkout)  # nothing changed: pip is not run
    assert installed_at(checkout) == first

    install(checkout, "aws")  # an extra not installed yet
    with_aws = installed_at(checkout)
    assert with_aws != first
    install(checkout)  # fewer extras than installed: nothing to do
    install(checkout, "aws")
    assert installed_at(checkout) == with_aws

    install(checkout, torch_spec="torch>=2")  # another torch spec
    other_torch = installed_at(checkout)
    assert other_torch != with_aws

    pyproject = checkout / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + "\n# changed\n")
    install(checkout, torch_spec="torch>=2")
    assert installed_at(checkout) != other_torch


@pytest.mark.parametrize("saved", ["tiny-musicgen", "musicgen-small"])
def test_the_checkpoints_the_readme_saves_in_the_checkout_are_ignored(saved: str) -> None:
    readme = (ROOT / "README.md").read_text()
    assert f"./{saved}" in readme  # where the README tells users to save it
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", f"{saved}/config.json"], cwd=ROOT, check=False
    )
    assert ignored.returncode == 0, f"{saved}/ is not ignored by git"
