"""Shared pytest fixtures, one clearly separated section per resource."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from s3server import SeaweedS3

# =================================================================================================
# S3: a real SeaweedFS server (tests/s3server.py), started once per session on loopback.
#
#   s3_server  session  the running SeaweedS3 (endpoint_url, client(), create_bucket(), env())
#   s3_bucket  test     a fresh, empty bucket name; deleted with its objects afterwards
#   s3_env     test     AWS_ENDPOINT_URL_S3, test credentials and region set in os.environ, and
#                       the developer's ~/.aws ignored, so a default boto3 client (what tunesmith
#                       builds) talks to the test server; returns the SeaweedS3
#
# Tests using them are marked `@pytest.mark.s3`.
# =================================================================================================

_AWS_VARS_TO_CLEAR = (
    "AWS_ENDPOINT_URL",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_REGION",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[SeaweedS3]:
    """A SeaweedFS S3 server for the whole session (fails with weed's log if it cannot start)."""
    try:
        server = SeaweedS3()
    except FileNotFoundError as exc:
        pytest.fail(str(exc))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: SeaweedS3) -> Iterator[str]:
    """A new empty bucket for one test."""
    name = s3_server.create_bucket(f"ts-{uuid.uuid4().hex[:20]}")
    try:
        yield name
    finally:
        s3_server.delete_bucket(name)


@pytest.fixture
def s3_env(
    s3_server: SeaweedS3, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> SeaweedS3:
    """Point boto3's standard configuration (environment only) at the test server."""
    for name in _AWS_VARS_TO_CLEAR:
        monkeypatch.delenv(name, raising=False)
    no_files: Path = tmp_path_factory.mktemp("aws-config")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(no_files / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(no_files / "credentials"))
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_server


# =================================================================================================
# Compiled kernels: csrc/*.c bound to the tunesmith:: torch operators (engine.kernels.build).
#
#   compiled_kernels  function  built (or taken from the cache) and bound; skips without compilers
#   weight_store      session   (autouse) TUNESMITH_WEIGHT_CACHE: converted weights go to a tmp dir
# =================================================================================================


@pytest.fixture(scope="session", autouse=True)
def weight_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Converted weights (`musicgen.model.store`) go to a session directory, not the
    user's cache: every tiny checkpoint a test saves would leave a file there. Servers the
    tests start inherit it."""
    directory = tmp_path_factory.mktemp("weight-store")
    previous = os.environ.get("TUNESMITH_WEIGHT_CACHE")
    os.environ["TUNESMITH_WEIGHT_CACHE"] = str(directory)
    yield directory
    if previous is None:
        os.environ.pop("TUNESMITH_WEIGHT_CACHE", None)
    else:
        os.environ["TUNESMITH_WEIGHT_CACHE"] = previous


@pytest.fixture
def compiled_kernels() -> None:
    from tunesmith.engine import kernels

    if shutil.which("cc") is None or shutil.which("c++") is None:
        pytest.skip("no C and C++ compilers")
    assert kernels.available()


# =================================================================================================
# =================================================================================================
# Model: a tiny random MusicGen saved with save_pretrained (tests/model_fixtures.py).
#
#   tiny_model_dir  session  the checkpoint directory, loadable like facebook/musicgen-small
#   tiny_engine     session  a MusicGenEngine on it, set up once, on the CPU
# =================================================================================================

from model_fixtures import (  # noqa: E402, F401
    tiny_engine,
    tiny_melody_dir,
    tiny_melody_engine,
    tiny_model_dir,
)

# =================================================================================================
# Parallel runs (pytest-xdist, `scripts/test` runs two workers with --dist loadgroup): each test
# file goes to one worker, so its module fixtures are made once; every test that uses the CDK
# synths (tests/cdk_synth.py, a minute or more of `cdk synth` runs) goes to the same worker.
# =================================================================================================


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not hasattr(config, "workerinput"):  # not an xdist worker
        return
    for item in items:
        assert item.parent is not None
        group = "cdk-synths" if "synths" in item.fixturenames else item.nodeid.split("::")[0]
        # xdist's loadgroup reads the group from a node id's "@group" suffix, which its own hook
        # can no longer write under pytest 9; the item's name also tells apart schemathesis's
        # tests of each operation, whose node ids are otherwise one per function
        item._id = item.parent.id.child(f"{item.name}@{group}")
