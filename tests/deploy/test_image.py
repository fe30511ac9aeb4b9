"""deploy/Dockerfile built into a real image (scripts/build-image: buildah, no Docker daemon) with
the tiny MusicGen baked in, and the image's own command run as SageMaker runs it.

`buildah run` stands in for `docker run IMAGE serve` (podman's runtime cannot start here): the
server inside shares the host's network, so it is bound to loopback on a free port.

Marked `image`. It needs the package indexes (PyPI, Debian) and, where buildah or mmdebstrap is
missing, root to install them; TUNESMITH_IMAGE_TESTS=0 (or `-m "not image"`) leaves it out.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import soundfile

from s3server import free_ports
from tunesmith.aws.protocol import CUSTOM_ATTRIBUTES_HEADER, TrackInfo

ROOT = Path(__file__).resolve().parents[2]
TAG = "localhost/tunesmith-endpoint-test"
# what scripts/build-image would install with apt-get
MISSING = [
    tool
    for tool in ("buildah", "mmdebstrap")
    if shutil.which(tool) is None and not (tool == "mmdebstrap" and os.environ.get("BASE_IMAGE"))
]

pytestmark = [
    pytest.mark.image,
    pytest.mark.timeout(1800),
    pytest.mark.skipif(
        os.environ.get("TUNESMITH_IMAGE_TESTS") == "0", reason="TUNESMITH_IMAGE_TESTS=0"
    ),
    pytest.mark.skipif(
        not sys.platform.startswith("linux") or (os.geteuid() != 0 and bool(MISSING)),
        reason=f"needs {' and '.join(MISSING)}, or root to install them",
    ),
]


def _buildah(*args: str) -> str:
    done = subprocess.run(["buildah", *args], capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"buildah {' '.join(args)}:\n{done.stderr}"
    return done.stdout


def _same_checkpoint(a: Path, b: Path) -> bool:
    """The same files, config and weights byte for byte: the tiny model's tokenizer is trained
    afresh each session and its scores differ in the last digits, which matters to nothing here."""
    if not (b / "config.json").is_file():
        return False
    if sorted(p.name for p in a.iterdir()) != sorted(p.name for p in b.iterdir()):
        return False
    weights = [p.name for p in a.glob("*.safetensors")]
    return all((a / n).read_bytes() == (b / n).read_bytes() for n in ["config.json", *weights])


@pytest.fixture(scope="module")
def image(tiny_model_dir: Path, pytestconfig: pytest.Config) -> str:
    """The endpoint image with the tiny model, built by scripts/build-image.

    The model is built from a copy kept in pytest's cache and replaced only when it changes,
    since buildah's layer cache misses on any changed byte and rebuilds every later layer."""
    model = tiny_model_dir
    if pytestconfig.cache is not None:  # None with -p no:cacheprovider
        model = pytestconfig.cache.mkdir("tunesmith-image-model") / "tiny-musicgen"
        if not _same_checkpoint(tiny_model_dir, model):
            shutil.rmtree(model, ignore_errors=True)
            shutil.copytree(tiny_model_dir, model)
    done = subprocess.run(
        [str(ROOT / "scripts/build-image"), "--tag", TAG, str(model)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, (
        f"scripts/build-image failed:\n{done.stdout[-8000:]}\n{done.stderr}"
    )
    return TAG


class Container:
    """`buildah run` of the image's entrypoint and command in a fresh working container."""

    def __init__(self, image: str, env: dict[str, str], log: Path) -> None:
        config: dict[str, Any] = json.loads(_buildah("inspect", "--type", "image", image))
        self.config = config["OCIv1"]["config"]
        self.argv = [*self.config.get("Entrypoint", []), *self.config.get("Cmd", [])]
        self.env = env
        self.log = log
        self.name = _buildah("from", "--pull=never", "--quiet", image).strip()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        flags = [f"--env={k}={v}" for k, v in self.env.items()]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                ["buildah", "run", "--isolation", "chroot", *flags, self.name, "--", *self.argv],
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-8000:]

    def remove(self) -> None:
        """Stop the command (buildah ends it with the container's processes) and delete it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        subprocess.run(["buildah", "rm", self.name], capture_output=True, check=False)


@pytest.fixture(scope="module")
def endpoint(
    image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Container]]:
    """The image's `serve` command running on a loopback port, until /ping answers 200."""
    port = free_ports(1)[0]
    # SageMaker's port variable, and loopback instead of the image's 0.0.0.0 (host network)
    env = {"SAGEMAKER_BIND_TO_PORT": str(port), "TUNESMITH_HOST": "127.0.0.1"}
    log = tmp_path_factory.mktemp("container") / "serve.log"
    container = Container(image, env, log)
    try:
        container.start()
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            assert container.proc is not None
            if container.proc.poll() is not None:
                pytest.fail(f"the container's command exited:\n{container.output()}")
            if time.monotonic() > deadline:
                pytest.fail(f"/ping never answered 200:\n{container.output()}")
            try:
                if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        yield url, container
    finally:
        container.remove()


def test_the_image_is_the_sagemaker_container(endpoint: tuple[str, Container]) -> None:
    _, container = endpoint
    assert container.argv == ["tunesmith", "endpoint", "serve"]
    assert container.config.get("User") == "tunesmith"
    env = dict(item.split("=", 1) for item in container.config["Env"])
    assert env["TUNESMITH_MODEL"] == "/opt/model" and env["HF_HUB_OFFLINE"] == "1"


def test_ping_reports_the_baked_in_model_and_the_compiled_kernels(
    endpoint: tuple[str, Container],
) -> None:
    url, container = endpoint
    ping = httpx.get(f"{url}/ping", timeout=10)
    assert ping.status_code == 200, ping.text
    body = ping.json()
    assert body["status"] == "ok" and body["model"] == "/opt/model" and body["device"] == "cpu"
    # built in the image, whose compilers were removed again
    assert body["kernels"] == "compiled", container.output()


def test_invocations_answers_a_wav_of_the_requested_length(
    endpoint: tuple[str, Container], tiny_model_dir: Path
) -> None:
    url, container = endpoint
    answer = httpx.post(
        f"{url}/invocations", json={"prompt": "x", "duration": 1, "seed": 3}, timeout=120
    )
    assert answer.status_code == 200, f"{answer.text[:500]}\n{container.output()}"
    assert answer.headers["content-type"] == "audio/wav"
    info = TrackInfo.from_attributes(answer.headers[CUSTOM_ATTRIBUTES_HEADER])
    assert (info.seed, info.duration, info.format, info.model) == (3, 1.0, "wav", "/opt/model")
    samples, rate = soundfile.read(io.BytesIO(answer.content), dtype="float32")
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert rate == info.sample_rate == config["audio_encoder"]["sampling_rate"]
    assert samples.shape[0] == rate  # exactly one second
