"""What a failed image build said, told apart without building: the builder's words as
buildah 1.28 printed them on this machine (no internet), and what the README points to."""

from __future__ import annotations

import re
from pathlib import Path

from mlops_assets.resources.image_builder import (
    NO_PUBLIC_REGISTRY,
    dockerfile_base_images,
    redact_urls,
    unpulled_base_image,
)

ROOT = Path(__file__).resolve().parents[2]
BASE = "nonexistent.invalid/library/python:3.11-slim"
# `buildah build` of `FROM <BASE>`, its last line (exit 125).
BUILDAH_NO_SUCH_HOST = (
    f"Error: creating build container: initializing source docker://{BASE}: pinging container "
    'registry nonexistent.invalid: Get "https://nonexistent.invalid/v2/": dial tcp: lookup '
    "nonexistent.invalid on 10.255.255.53:53: no such host"
)


def test_a_base_image_the_builder_could_not_reach_is_named() -> None:
    assert unpulled_base_image(BUILDAH_NO_SUCH_HOST, [BASE]) == BASE
    # Named in the Dockerfile by another spelling than the builder's: the build container's
    # creation is the pull of the (first) base.
    assert unpulled_base_image(BUILDAH_NO_SUCH_HOST, ["python-base"]) == "python-base"
    refused = BUILDAH_NO_SUCH_HOST.replace(
        "lookup nonexistent.invalid on 10.255.255.53:53: no such host",
        "connect: connection refused",
    )
    assert unpulled_base_image(refused, [BASE]) == BASE


def test_other_build_failures_are_not_an_unreachable_base() -> None:
    # A step of the build with network trouble of its own (pip without an index) is that step's.
    step = (
        "WARNING: Retrying after connection broken by 'NewConnectionError(Failed to establish "
        "a new connection: [Errno -3] Temporary failure in name resolution)'\n"
        "ERROR: No matching distribution found for six==1.16.0\n"
        f'Error: building at STEP "RUN pip install six==1.16.0 # FROM {BASE}": exit status 1'
    )
    assert unpulled_base_image(step, [BASE]) is None
    # The registry answered: the image is not there, which no setting of the network cures.
    missing = (
        f"Error: creating build container: initializing source docker://{BASE}: reading "
        "manifest 3.11-slim in nonexistent.invalid/library/python: manifest unknown"
    )
    assert unpulled_base_image(missing, [BASE]) is None
    assert unpulled_base_image(BUILDAH_NO_SUCH_HOST, []) is None  # not a build


def test_the_base_images_of_a_dockerfile_are_its_from_lines_but_its_own_stages() -> None:
    dockerfile = (
        "FROM --platform=linux/amd64 a.invalid/x:1 AS build\nRUN true\n"
        "from build\nFROM b.invalid/y@sha256:00 as final\n"
    )
    assert dockerfile_base_images(dockerfile) == ["a.invalid/x:1", "b.invalid/y@sha256:00"]


def test_urls_in_a_builders_words_lose_their_credentials_and_tokens() -> None:
    said = 'Get "https://robot:s3cret@r.invalid/token?scope=pull&token=abc123": i/o timeout'
    shown = redact_urls(said)
    assert "s3cret" not in shown
    assert "abc123" not in shown
    assert shown == 'Get "https://***@r.invalid/token?scope=***&token=***": i/o timeout'
    assert redact_urls(BUILDAH_NO_SUCH_HOST) == BUILDAH_NO_SUCH_HOST  # nothing secret in it


def test_the_readme_has_what_the_error_points_to() -> None:
    readme = (ROOT / "README.md").read_text()
    anchor = re.search(r"\(README\.md#([\w-]+)\)", NO_PUBLIC_REGISTRY)
    assert anchor is not None
    section = readme.split("\n## Serving the champion as a container image\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    assert anchor.group(1) == "serving-the-champion-as-a-container-image"
    assert "**No public registry?**" in section
    assert "export MLOPS_IMAGE_BASE=" in section
