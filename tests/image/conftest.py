"""The checks of the built container image run only where `.ci/image-check` built one and named it in
TRUNNER_IMAGE (they need buildah's image in podman's local storage); elsewhere the folder is skipped."""

from __future__ import annotations

import os

import pytest

from tests.image.podman import Podman


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("TRUNNER_IMAGE"):
        return
    skip = pytest.mark.skip(reason="no image to check: `just image-check` builds one and sets TRUNNER_IMAGE")
    for item in items:
        if "tests/image/" in item.nodeid:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def podman() -> Podman:
    return Podman(os.environ["TRUNNER_IMAGE"])
