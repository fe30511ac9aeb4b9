"""Fixtures of the deploy tests (tests/cdk_synth.py).

synths  session  scenario name -> Synth: the app synthesized once per scenario, in parallel
"""

import pytest

from cdk_synth import synths  # noqa: F401


def pytest_configure(config: pytest.Config) -> None:
    # until pyproject.toml lists it (tests/deploy/test_image.py)
    config.addinivalue_line("markers", "image: builds and runs the container image (buildah)")
