"""The image builder resource and the registry client, on tiny images: a real registry,
real buildah and podman."""

from __future__ import annotations

import json
import stat
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from mlops_assets.resources.image_builder import (
    BaseImageUnreachable,
    BuilderUnavailable,
    BuildUntrusted,
    ImageBuilderResource,
)
from mlops_assets.resources.oci_registry import (
    ImageReference,
    RegistryClient,
    RegistryUnavailable,
)
from mlops_assets.stack.process import free_port
from mlops_assets_tests.conftest import store_listing
from mlops_assets_tests.receivers import QuietHandler, loopback_http, untrusted_tls

# Builds, pushes and runs images with buildah/podman and a real registry.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_image(base_image: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    context = tmp_path_factory.mktemp("tiny")
    (context / "Dockerfile").write_text(f'FROM {base_image}\nUSER 10001\nCMD ["sleep", "600"]\n')
    tag = "localhost/mlops-test/tiny:1"
    ImageBuilderResource().build("buildah", context, tag)
    return tag


def test_auto_picks_a_builder_that_works_here(container_tools: None) -> None:
    backend = ImageBuilderResource().backend()
    assert backend in ("docker", "buildah")  # docker first when a daemon answers


def test_with_no_builder_on_the_machine_the_error_names_what_was_looked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BuilderUnavailable, match="looked for docker, buildah, podman"):
        ImageBuilderResource().backend()
    with pytest.raises(
        BuilderUnavailable, match=r"looked for docker \(MLOPS_IMAGE_BUILDER=docker\)"
    ):
        ImageBuilderResource(builder="docker").backend()
    with pytest.raises(BuilderUnavailable, match="is not one of auto, docker, buildah"):
        ImageBuilderResource(builder="bazel").backend()


def test_repository_names_are_valid_oci_names() -> None:
    assert ImageBuilderResource(registry="127.0.0.1:5000/ml").repository("House Prices_v2") == (
        "127.0.0.1:5000/ml/house-prices_v2"
    )
    assert ImageBuilderResource().repository("m") == "localhost/m"
    with pytest.raises(ValueError, match="must start with a registry host"):
        ImageBuilderResource(registry="ml").repository("m")


def test_push_returns_the_digest_the_registry_serves(oci_registry: Any, tiny_image: str) -> None:
    builder = ImageBuilderResource(registry=f"{oci_registry.address}/t", registry_insecure=True)
    repository = builder.repository("tiny")
    client = builder.registry_client(repository)
    assert client.manifest_digest("v1") is None

    digest = builder.push("buildah", tiny_image, f"{repository}:v1")

    assert digest.startswith("sha256:")
    assert client.manifest_digest("v1") == digest
    assert client.manifest_digest(digest) == digest
    assert client.image_size(digest) > 10_000_000  # the debootstrapped base's layer


def test_an_oci_archive_round_trips_through_podman(tiny_image: str, tmp_path: Path) -> None:
    builder = ImageBuilderResource()
    archive = tmp_path / "tiny.oci.tar"
    digest = builder.save_archive("buildah", tiny_image, archive, "tiny-model:v1")
    with tarfile.open(archive) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
    assert index["manifests"][0]["digest"] == digest
    loaded = builder.load_archive("podman", archive)
    assert loaded == "localhost/tiny-model:v1"  # the model's name and version, as pushed
    assert subprocess.run(["podman", "image", "exists", loaded]).returncode == 0


def test_a_started_container_runs_as_its_image_user_and_is_removed(tiny_image: str) -> None:
    builder = ImageBuilderResource()
    container = builder.run("podman", tiny_image, 8000, env={"A": "1"})
    try:
        assert container.running()
        assert container.exec(["id", "-u"]).strip() == "10001"
        assert container.exec(["printenv", "A"]).strip() == "1"
    finally:
        container.remove()
    assert not container.running()


def test_a_build_whose_pip_fails_says_why_and_what_to_set(base_image: str, tmp_path: Path) -> None:
    """pip in the build reaches a package index whose certificate it does not trust (a
    loopback HTTPS server with a self-signed one, as behind a TLS-intercepting proxy). buildah
    ends with one line naming the step; the error must also carry pip's own words and the
    setting that fixes it, as a BuildUntrusted (a setting to fix, which served_image does not
    retry)."""
    context = tmp_path / "context"
    context.mkdir()
    containers_before = store_listing("buildah containers")
    assert containers_before is not None
    with loopback_http(QuietHandler, untrusted_tls(tmp_path)) as port:
        (context / "Dockerfile").write_text(
            f"FROM {base_image}\nRUN pip install --retries 0 "
            f"--index-url https://127.0.0.1:{port}/simple six==1.16.0\n"
        )
        with pytest.raises(BuildUntrusted) as failed:
            ImageBuilderResource().build("buildah", context, "localhost/mlops-test/unbuilt:1")
    message = str(failed.value)
    assert 'building at STEP "RUN pip install' in message
    assert "No matching distribution found for six==1.16.0" in message
    assert "set MLOPS_IMAGE_BUILD_CA_BUNDLE" in message
    # The failed build's working container is removed with it.
    assert store_listing("buildah containers") == containers_before


# A host no resolver knows (RFC 6761), as a public registry is where there is no internet.
UNRESOLVABLE_BASE = "nonexistent.invalid/library/python:3.11-slim"


@pytest.mark.parametrize("backend", ["buildah", "podman"])
def test_a_base_image_whose_registry_cannot_be_reached_names_the_setting(
    container_tools: None, backend: str, tmp_path: Path
) -> None:
    """The first thing a build does where no public registry is reachable: pull the base.
    The builder's own words stay (its last line), and the error's last line says that the
    base image could not be pulled, what to set, and where the README says how."""
    (tmp_path / "Dockerfile").write_text(f"FROM {UNRESOLVABLE_BASE}\nUSER 10001\n")
    containers_before = store_listing("buildah containers")
    with pytest.raises(BaseImageUnreachable) as failed:
        ImageBuilderResource().build(backend, tmp_path, "localhost/mlops-test/unbuilt:1")
    *said, last = str(failed.value).splitlines()
    assert f"{backend} build of localhost/mlops-test/unbuilt:1 failed" in said[0]
    assert said[-1].startswith("Error: ")
    assert "nonexistent.invalid" in said[-1]
    assert "no such host" in said[-1] or "lookup" in said[-1], said[-1]
    assert last.startswith(
        f"(the base image {UNRESOLVABLE_BASE} could not be pulled from its registry: "
        "set MLOPS_IMAGE_BASE to "
    )
    assert '"No public registry?" (README.md#serving-the-champion-as-a-container-image)' in last
    assert store_listing("buildah containers") == containers_before


def test_an_unreachable_registry_is_reported_as_such() -> None:
    client = RegistryClient(ImageReference.parse(f"127.0.0.1:{free_port()}/t/m"), insecure=True)
    with pytest.raises(RegistryUnavailable, match="unreachable"):
        client.manifest_digest("v1")


def test_registry_credentials_reach_the_push_only_through_a_private_auth_file() -> None:
    builder = ImageBuilderResource(
        registry="registry.example.com/ml",
        registry_username="robot",
        registry_password="s3cret-value",
    )
    with builder._auth_file("registry.example.com/ml/m:v1") as path:
        assert path is not None
        auth = Path(path)
        assert stat.S_IMODE(auth.stat().st_mode) == 0o600
        entry = json.loads(auth.read_text())["auths"]["registry.example.com"]
        assert "s3cret-value" not in entry["auth"]  # base64, as container tools expect
    assert not auth.exists()


def test_a_registry_answering_server_errors_is_unavailable_not_missing() -> None:
    class Overloaded(QuietHandler):
        def do_HEAD(self) -> None:
            self.send_response(503)
            self.end_headers()

    with loopback_http(Overloaded) as port:
        client = RegistryClient(ImageReference.parse(f"127.0.0.1:{port}/t/m"), insecure=True)
        with pytest.raises(RegistryUnavailable, match="answered 503"):
            client.manifest_digest("v1")
