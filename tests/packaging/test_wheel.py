"""The wheel as users install it: built from the checkout, installed non-editable into a fresh
virtual environment, run from there with nothing of the checkout on its path."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest
import soundfile

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run(
        [*pip, "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        cwd=out,  # not the checkout: nothing of it may be picked up from the working directory
    )
    (built,) = out.glob("tunesmith-*.whl")
    return built


def test_the_wheel_carries_every_kernel_source(wheel: Path) -> None:
    csrc = ROOT / "src/tunesmith/engine/kernels/csrc"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    wanted = {f"tunesmith/engine/kernels/csrc/{p.name}" for p in csrc.iterdir() if p.is_file()}
    assert wanted and wanted <= names
    static = {
        f"tunesmith/api/static/{p.name}" for p in (ROOT / "src/tunesmith/api/static").iterdir()
    }
    assert {"tunesmith/py.typed", "tunesmith/api/static/index.html", *static} <= names


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed (not editable); its dependencies are this
    environment's packages, on its path by a .pth line (which runs none of their .pth files,
    so the checkout's editable install stays out)."""
    env_dir = tmp_path_factory.mktemp("venv")
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin/python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(purelib, "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q"]
    subprocess.run(
        [*pip, str(wheel)],
        check=True,
        capture_output=True,
    )
    return env_dir


def _run(env_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TUNESMITH_", "PYTHON"))}
    return subprocess.run(
        [str(env_dir / "bin/tunesmith"), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**clean, **env},
        cwd=env_dir,
    )


@pytest.mark.usefixtures("compiled_kernels")
def test_installed_from_the_wheel_it_builds_its_kernels_and_makes_a_track(
    installed: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    where = subprocess.run(
        [str(installed / "bin/python"), "-c", "import tunesmith; print(tunesmith.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=installed,
    ).stdout
    assert where.startswith(str(installed)) and str(ROOT) not in where
    cache = str(tmp_path / "cache")  # nothing built yet: the wheel's own sources are compiled
    done = _run(installed, "kernels", "--require", XDG_CACHE_HOME=cache)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("kernels: compiled (")
    assert len(list(Path(cache, "tunesmith").glob("*.so"))) == 2  # the kernels and the operators
    out = tmp_path / "track.wav"
    args = ["-v", "generate", "x", "-d", "1", "-o", str(out), "--model", str(tiny_model_dir)]
    done = _run(installed, *args, XDG_CACHE_HOME=cache, CC="no-such-cc", CXX="no-such-cxx")
    assert done.returncode == 0, done.stderr
    assert "kernels: compiled (" in done.stderr  # built above, so no compiler is needed
    assert "WARNING tunesmith" not in done.stderr
    assert soundfile.info(str(out)).frames == 32000


# Run in the installed venv: the app's /docs and /redoc pages and every script, style and icon
# they load, fetched through the app; prints the URLs, or raises.
DOCS_CHECK = """
import re, tempfile
from fastapi.testclient import TestClient
from tunesmith.api import create_app
from tunesmith.config import load_settings
from tunesmith.engine import MusicGenEngine
from tunesmith.storage import LocalStorage

with tempfile.TemporaryDirectory() as tmp:
    app = create_app(
        load_settings(model="unloaded", local_dir=tmp),
        engine=MusicGenEngine("unloaded", device="cpu"),
        storage=LocalStorage(tmp),
    )
    client = TestClient(app)  # no lifespan: nothing loads
    for page in ("/docs", "/redoc"):
        html = client.get(page).raise_for_status().text
        urls = re.findall(r'(?:src|href|spec-url)="([^"]+)"', html)
        for url in urls + re.findall(r"url: '([^']+)'", html):
            assert url.startswith("/"), (page, url)
            body = client.get(url).raise_for_status().content
            assert body, url
            print(page, url, len(body))
    app.state.tunesmith.jobs.close()
"""


def test_installed_from_the_wheel_it_serves_its_docs_from_its_own_assets(
    wheel: Path, installed: Path
) -> None:
    # the assets come with a dependency the wheel declares, as pip installs it (and the image)
    with zipfile.ZipFile(wheel) as archive:
        (metadata,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        requires = archive.read(metadata).decode().splitlines()
    assert any(line.startswith("Requires-Dist: fastapi-offline") for line in requires)
    done = subprocess.run(
        [str(installed / "bin/python"), "-c", DOCS_CHECK],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=installed,
    )
    assert done.returncode == 0, done.stderr
    fetched = [line.split()[1] for line in done.stdout.splitlines()]
    assert {"/openapi.json", "/static-offline-docs/swagger-ui-bundle.js"} <= set(fetched)
    assert "/static-offline-docs/redoc.standalone.js" in fetched
