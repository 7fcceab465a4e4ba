"""The image builder: builds an OCI image from a context, pushes it, and runs it for a test.

Backends: ``docker`` (a reachable Docker daemon), ``buildah`` or ``podman`` (daemonless; run
as root here), and ``kaniko`` (a Kubernetes Job, see kaniko.py). ``auto`` picks the first of
docker, buildah, podman that works on this machine. Images built here run for their smoke
test with podman (buildah, podman) or docker.

Registry credentials are settings of this resource (MLOPS_REGISTRY_USERNAME, and the password
as an EnvVar); they are written to a private auth file for the duration of one command and never appear on a command
line or in a log.
"""

from __future__ import annotations

import base64
import contextlib
import json
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from dagster import ConfigurableResource

from mlops_assets.lib.env_settings import env_field
from mlops_assets.lib.metadata import redact_urls
from mlops_assets.ml.serving import (
    CA_BUNDLE_IN_CONTEXT,
    harden_dockerfile,
    write_server,
)
from mlops_assets.records import ServedImage
from mlops_assets.resources.kaniko import KanikoBuild, context_tarball
from mlops_assets.resources.kubernetes import connect
from mlops_assets.resources.object_store import ObjectStoreResource, S3Config
from mlops_assets.resources.oci_registry import (
    ImageReference,
    RegistryClient,
    RegistryUnavailable,
)

LOCAL_BACKENDS = ("docker", "buildah", "podman")
BACKENDS = (*LOCAL_BACKENDS, "kaniko")
# Network failures worth a retry; anything else from push is a real error.
_UNREACHABLE = (
    "connection refused",
    "no such host",
    "i/o timeout",
    "timeout",
    "connection reset",
    "no route to host",
    "502 bad gateway",
    "503 service unavailable",
    "504 gateway",
    "500 internal server error",
)
# Why a builder could not pull an image, in Go's words (buildah, podman, docker): no name for
# the registry's host, no route or connection to it. The builder has retried what it could.
_NO_NETWORK = (
    "no such host",
    "temporary failure in name resolution",
    "server misbehaving",
    "dial tcp",
    "connection refused",
    "connection reset",
    "i/o timeout",
    "network is unreachable",
    "no route to host",
    "tls handshake timeout",
    "context deadline exceeded",
)
# Where the README says what to do without a public registry.
NO_PUBLIC_REGISTRY = (
    'the README\'s "No public registry?" (README.md#serving-the-champion-as-a-container-image)'
)


class BuilderUnavailable(RuntimeError):
    """No configured or detected image builder can run here."""


class BuildFailed(RuntimeError):
    """The image build itself failed (bad Dockerfile, failed pip install, ...)."""


class BuildUntrusted(BuildFailed):
    """A step of the build did not trust a TLS certificate (pip behind a TLS-intercepting
    proxy): a setting to fix, MLOPS_IMAGE_BUILD_CA_BUNDLE, not a fault that passes."""


class BaseImageUnreachable(BuildFailed):
    """The base image could not be pulled: its registry's host has no name here or cannot be
    reached (no public registry from this machine). A setting to fix, MLOPS_IMAGE_BASE."""


class ImageConfigError(ValueError):
    """The settings cannot work (kaniko without a registry, a missing CA bundle, ...)."""


@dataclass(frozen=True)
class PublishedImage:
    """Where a published image is: pushed (digest in the registry) or an OCI archive."""

    builder: str
    digest: str
    reference: str
    size_bytes: int | None
    archive_key: str | None = None


def _run(
    command: list[str],
    what: str,
    timeout: float = 3600,
    stdin: str | None = None,
    base_images: Sequence[str] = (),
) -> str:
    """Run a builder's ``command``; on failure, raise what it said that matters, as the error
    a caller acts on. ``base_images``: those a build pulls (its FROM lines)."""
    try:
        completed = subprocess.run(
            command,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise BuildFailed(f"{what} did not finish in {timeout:.0f}s") from exc
    if completed.returncode != 0:
        tail = redact_urls(
            failure_tail((completed.stderr or completed.stdout).strip().splitlines())
        )
        error_type: type[RuntimeError] = BuildFailed
        if any(marker in tail.lower() for marker in _UNREACHABLE) and (
            "push" in what or "pull" in what
        ):
            error_type = RegistryUnavailable
        hint = ""
        unpulled = unpulled_base_image(tail, base_images)
        if "http response to https client" in tail.lower():
            hint = "\n(the registry speaks plain HTTP: set MLOPS_IMAGE_REGISTRY_INSECURE=true)"
        elif "certificate_verify_failed" in f"{completed.stdout}{completed.stderr}".lower():
            error_type = BuildUntrusted
            hint = (
                "\n(pip in the build did not trust a TLS certificate, as happens where TLS is "
                "intercepted: set MLOPS_IMAGE_BUILD_CA_BUNDLE to a CA bundle that signs it, "
                "e.g. /etc/ssl/certs/ca-certificates.crt)"
            )
        elif unpulled is not None:
            error_type = BaseImageUnreachable
            hint = (
                f"\n(the base image {unpulled} could not be pulled from its registry: set "
                "MLOPS_IMAGE_BASE to an image this machine has or can pull; where no public "
                f"registry is reachable, build one from Debian packages: see {NO_PUBLIC_REGISTRY})"
            )
        raise error_type(f"{what} failed (exit {completed.returncode}):\n{tail}{hint}")
    return completed.stdout


def failure_tail(output: list[str], step_lines: int = 6) -> str:
    """What a failed buildah, podman or docker command said that matters.

    They end with one ``Error: ...`` line. For most failures (a push, a pull, a bad
    Dockerfile) it says it all. When a ``RUN`` step failed, it names only the step and its
    exit status; the step's own last words (pip's ``ERROR: ...``, why a package could not
    be fetched) are the lines just before it, so the last ``step_lines`` of those come too.
    Without an ``Error:`` line, the last 25 lines.
    """
    errors = [at for at, line in enumerate(output) if line.startswith("Error:")]
    if not errors:
        return "\n".join(output[-25:])
    last = errors[-1]
    if "at STEP" not in output[last]:
        return output[last]
    said = [
        line
        for line in output[:last]
        if line.strip() and not line.startswith("subprocess exited with status")
    ]
    return "\n".join([*said[-step_lines:], output[last]])


def dockerfile_base_images(dockerfile: str) -> list[str]:
    """The images a Dockerfile's FROM lines pull (not its own earlier stages)."""
    images: list[str] = []
    stages: set[str] = set()
    for line in dockerfile.splitlines():
        words = line.split()
        if not words or words[0].upper() != "FROM":
            continue
        words = [word for word in words[1:] if not word.startswith("--")]  # --platform=...
        if words and words[0].lower() not in stages:
            images.append(words[0])
        if len(words) >= 3 and words[1].upper() == "AS":
            stages.add(words[2].lower())
    return images


def unpulled_base_image(tail: str, base_images: Sequence[str]) -> str | None:
    """The one of ``base_images`` that a failed build's ``tail`` says could not be pulled
    for a network reason (buildah and podman: "creating build container: initializing source
    docker://IMAGE: ... no such host"; docker: "failed to resolve source metadata for
    IMAGE: ... i/o timeout"), or None. A step of the build that failed (``at STEP``) is not a
    pull of the base, whatever its network trouble."""
    for line in tail.splitlines():
        lowered = line.lower()
        if "at step" in lowered or not any(marker in lowered for marker in _NO_NETWORK):
            continue
        named = [image for image in base_images if image.lower() in lowered]
        if named:
            return named[0]
        if base_images and "creating build container" in lowered:
            return base_images[0]
    return None


def _works(command: list[str]) -> bool:
    if shutil.which(command[0]) is None:
        return False
    try:
        return subprocess.run(command, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@dataclass
class RunningContainer:
    """A container started for a test; stopped and removed by its id."""

    engine: str
    container_id: str
    host_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.host_port}"

    def running(self) -> bool:
        state = subprocess.run(
            [self.engine, "inspect", "--format", "{{.State.Running}}", self.container_id],
            capture_output=True,
            text=True,
        )
        return state.stdout.strip() == "true"

    def log_tail(self, lines: int = 40) -> str:
        logs = subprocess.run(
            [self.engine, "logs", "--tail", str(lines), self.container_id],
            capture_output=True,
            text=True,
        )
        return (logs.stdout + logs.stderr).strip()

    def exec(self, command: list[str]) -> str:
        return _run([self.engine, "exec", self.container_id, *command], "container exec", 60)

    def stop(self, grace_seconds: int = 30) -> int:
        """Stop it as a cluster does (SIGTERM, SIGKILL after ``grace_seconds``); its exit
        code."""
        stop = [self.engine, "stop", "--time", str(grace_seconds), self.container_id]
        _run(stop, "container stop", grace_seconds + 60)
        inspect = [self.engine, "inspect", "--format", "{{.State.ExitCode}}", self.container_id]
        return int(_run(inspect, "container inspect", 60).strip())

    def remove(self) -> None:
        subprocess.run(
            [self.engine, "rm", "--force", self.container_id], capture_output=True, timeout=60
        )


class ImageBuilderResource(ConfigurableResource):
    """Where and how served images are built, pushed and test-run."""

    builder: str = env_field(
        "MLOPS_IMAGE_BUILDER",
        "auto",
        "Image builder of served_image: auto (docker, then buildah, then podman), docker, "
        "buildah, podman or kaniko.",
    )
    registry: str = env_field(
        "MLOPS_IMAGE_REGISTRY",
        "",
        "Registry and namespace served images are pushed to, e.g. registry.example.com/ml; "
        "empty means an OCI archive in the object store. Credentials come from "
        "MLOPS_REGISTRY_USERNAME / MLOPS_REGISTRY_PASSWORD.",
    )
    registry_insecure: bool = env_field(
        "MLOPS_IMAGE_REGISTRY_INSECURE",
        False,
        "true: talk to the registry over plain HTTP (a registry on loopback).",
    )
    base_image: str = env_field(
        "MLOPS_IMAGE_BASE",
        "",
        "Base image of served images; empty means MLflow's choice (python:<version>-slim).",
    )
    build_ca_bundle: str = env_field(
        "MLOPS_IMAGE_BUILD_CA_BUNDLE",
        "",
        "CA bundle that pip trusts while building images (networks that intercept TLS); "
        "copied into the image at /etc/mlops/build-ca.pem (public certificates only).",
    )
    container_run_args: str = env_field(
        "MLOPS_CONTAINER_RUN_ARGS",
        "--ulimit nofile=4096:4096 --ulimit nproc=4096:4096",
        "Extra arguments of `podman run` / `docker run` for the smoke test.",
    )
    kaniko_image: str = env_field(
        "MLOPS_KANIKO_IMAGE",
        "",
        "kaniko executor image (pinned) for MLOPS_IMAGE_BUILDER=kaniko.",
    )
    kaniko_namespace: str = env_field(
        "MLOPS_KANIKO_NAMESPACE",
        "mlops",
        "Namespace of kaniko build Jobs.",
    )
    kaniko_service_account: str = env_field(
        "MLOPS_KANIKO_SERVICE_ACCOUNT",
        "mlops-image-builder",
        "Service account of kaniko build Jobs.",
    )
    kaniko_cluster: str = env_field(
        "MLOPS_KANIKO_CLUSTER",
        "in-cluster",
        "Cluster kaniko build Jobs run on: in-cluster (the pod's service account) or a "
        "kubeconfig file path.",
    )
    registry_username: str = env_field(
        "MLOPS_REGISTRY_USERNAME",
        "",
        "Login of MLOPS_IMAGE_REGISTRY; empty means anonymous (with Docker, `docker login`).",
    )
    registry_password: str = env_field(
        "MLOPS_REGISTRY_PASSWORD",
        "",
        "Password or token of that login (a secret: read through EnvVar, never shown).",
        secret=True,
    )

    # --- choosing a backend -------------------------------------------------------------

    def backend(self) -> str:
        """The backend to use: the configured one if it works here, else the first that does."""
        if self.builder not in (*BACKENDS, "auto"):
            raise BuilderUnavailable(
                f"MLOPS_IMAGE_BUILDER='{self.builder}' is not one of auto, {', '.join(BACKENDS)}"
            )
        if self.builder == "kaniko":
            return "kaniko"
        candidates = LOCAL_BACKENDS if self.builder == "auto" else (self.builder,)
        for name in candidates:
            if _works([name, "info"] if name == "docker" else [name, "version"]):
                return name
        raise BuilderUnavailable(self._how_to_enable(candidates))

    def _how_to_enable(self, looked_for: tuple[str, ...]) -> str:
        return (
            f"no image builder is available: looked for {', '.join(looked_for)} "
            f"(MLOPS_IMAGE_BUILDER={self.builder}) and none works on this machine. "
            "Enable one: start a Docker daemon reachable by `docker info`; or install buildah "
            "and podman (Debian/Ubuntu: apt-get install buildah podman runc) and run as root or "
            "with rootless user namespaces; or set MLOPS_IMAGE_BUILDER=kaniko to build in a "
            "Kubernetes Job (with MLOPS_KANIKO_IMAGE and an s3:// MLOPS_OBJECT_STORE_ROOT)."
        )

    def runtime(self) -> str:
        """The engine that runs images here for the smoke test."""
        backend = self.builder if self.builder in ("docker", "podman") else None
        for name in (backend,) if backend else ("podman", "docker"):
            if _works([name, "info"] if name == "docker" else [name, "version"]):
                return name
        raise BuilderUnavailable(
            "no container runtime here to run the image for its smoke test: looked for "
            "podman and docker"
        )

    def repository(self, model_name: str) -> str:
        """``<registry>/<model name>``, lower-cased as OCI names must be."""
        name = "".join(c if c.isalnum() or c in "._-" else "-" for c in model_name.lower())
        if not self.registry:
            return f"localhost/{name}"
        ImageReference.parse(f"{self.registry}/{name}")  # fails early on a malformed registry
        return f"{self.registry.rstrip('/')}/{name}"

    def credentials(self) -> tuple[str, str] | None:
        return (self.registry_username, self.registry_password) if self.registry_username else None

    def secrets_needed(self) -> set[str]:
        """With a registry login, its password is wired as an EnvVar (see from_env)."""
        return {"registry_password"} if self.registry_username else set()

    def registry_client(self, repository: str) -> RegistryClient:
        return RegistryClient(
            ImageReference.parse(repository),
            insecure=self.registry_insecure,
            credentials=self.credentials(),
        )

    # --- publishing: what served_image asks for -----------------------------------------

    def prepare_context(self, build_context: Path, dockerfile: str, labels: dict[str, str]) -> str:
        """Write the hardened Dockerfile (labels, non-root user, the build CA bundle if set)
        and its entry point into ``build_context``; returns the base image it builds from."""
        ca_bundle = bool(self.build_ca_bundle)
        if ca_bundle:
            bundle = Path(self.build_ca_bundle)
            if not bundle.is_file():
                raise ImageConfigError(f"MLOPS_IMAGE_BUILD_CA_BUNDLE '{bundle}' is not a file")
            shutil.copyfile(bundle, build_context / CA_BUNDLE_IN_CONTEXT)
        hardened = harden_dockerfile(dockerfile, labels, ca_bundle=ca_bundle)
        write_server(build_context)
        (build_context / "Dockerfile").write_text(hardened)
        return next(line.split()[1] for line in hardened.splitlines() if line.startswith("FROM "))

    def publish(
        self,
        build_context: Path,
        repository: str,
        tag: str,
        fingerprint: str,
        object_store: ObjectStoreResource,
        archive_key: str,
        log: Callable[[str], None],
    ) -> PublishedImage:
        """Build ``build_context`` and publish it as ``repository:tag``: pushed and its digest
        confirmed by the registry, or, without a registry, an OCI archive at ``archive_key``
        in the object store. With kaniko the build runs as a Kubernetes Job and pushes."""
        backend = self.backend()
        if backend == "kaniko":
            return self._publish_with_kaniko(
                build_context, repository, tag, fingerprint, object_store, log
            )
        model = repository.rsplit("/", 1)[-1]
        local_tag = f"localhost/mlops-build/{model}:{fingerprint[:16]}"
        if self.has_image(backend, local_tag):
            log(f"{local_tag} is already built here; publishing it")
        else:
            log(f"building {local_tag} with {backend}")
            self.build(backend, build_context, local_tag)
        if self.registry:
            digest = self.push(backend, local_tag, f"{repository}:{tag}")
            return self._confirmed(backend, repository, tag, digest)
        with tempfile.TemporaryDirectory(prefix="mlops-archive-") as tmp:
            archive = Path(tmp) / "image.oci.tar"
            digest = self.save_archive(backend, local_tag, archive, f"{model}:{tag}")
            object_store.put_file(archive_key, archive)
            return PublishedImage(
                builder=backend,
                digest=digest,
                reference=f"{object_store.uri(archive_key)} ({digest})",
                size_bytes=archive.stat().st_size,
                archive_key=archive_key,
            )

    def _confirmed(self, builder: str, repository: str, tag: str, digest: str) -> PublishedImage:
        """The pushed image, once the registry resolves ``tag`` to the digest pushed."""
        client = self.registry_client(repository)
        found = client.manifest_digest(tag)
        if found != digest:
            raise RegistryUnavailable(
                f"pushed {repository}:{tag} as {digest}, but the registry now resolves {tag} "
                f"to {found}"
            )
        return self._in_registry(builder, repository, digest)

    def _in_registry(self, builder: str, repository: str, digest: str) -> PublishedImage:
        return PublishedImage(
            builder=builder,
            digest=digest,
            reference=f"{repository}@{digest}",
            size_bytes=self.registry_client(repository).image_size(digest),
        )

    def _publish_with_kaniko(
        self,
        build_context: Path,
        repository: str,
        tag: str,
        fingerprint: str,
        object_store: ObjectStoreResource,
        log: Callable[[str], None],
    ) -> PublishedImage:
        if not self.registry:
            raise ImageConfigError("kaniko pushes to a registry: set MLOPS_IMAGE_REGISTRY")
        key = f"build-contexts/{fingerprint}.tar.gz"
        s3 = object_store.s3 or S3Config()
        build = KanikoBuild(
            name=f"mlops-build-{fingerprint[:12]}-{int(time.time())}",
            namespace=self.kaniko_namespace,
            executor_image=self.kaniko_image,
            service_account=self.kaniko_service_account,
            context_uri=object_store.uri(key),
            destination=f"{repository}:{tag}",
            s3_endpoint_url=s3.endpoint_url,
            s3_region=s3.region_name,
            insecure_registry=self.registry_insecure,
        )
        try:
            build.job_manifest()
        except ValueError as exc:
            raise ImageConfigError(str(exc)) from exc
        object_store.put_bytes(key, context_tarball(build_context))
        log(f"kaniko Job {build.namespace}/{build.name} builds {build.destination}")
        digest = build.run(connect(self.kaniko_cluster))
        return self._in_registry("kaniko", repository, digest)

    def last_published(
        self, object_store: ObjectStoreResource, model_name: str, fingerprint: str
    ) -> ServedImage | None:
        """The image published last for ``model_name``, when it is this build's (same
        fingerprint), in the place the settings now ask for, and can still be pulled from
        there; otherwise None and the image is to be built."""
        image = self.published(object_store, model_name)
        if image is None:
            return None
        unchanged = (
            image.fingerprint == fingerprint
            and image.repository == self.repository(model_name)
            and bool(image.archive_key) == (not self.registry)
        )
        return image if unchanged and self.is_published(image, object_store) else None

    def published(self, object_store: ObjectStoreResource, model_name: str) -> ServedImage | None:
        """The image recorded last for ``model_name``, as recorded."""
        document = object_store.get_json(_published_key(model_name))
        return None if document is None else ServedImage.from_dict(document)

    def record_published(self, object_store: ObjectStoreResource, image: ServedImage) -> None:
        """Record ``image`` as what is published for its model: call only once it is in place
        (pushed and confirmed, or archived), so a failed build leaves the last good record."""
        object_store.put_bytes(_published_key(image.model_name), image.to_json())

    def is_published(self, image: ServedImage, object_store: ObjectStoreResource) -> bool:
        """The recorded image can still be pulled: its archive is in the store, or the registry
        resolves its tag to the recorded digest."""
        if image.archive_key:
            return bool(object_store.exists(image.archive_key))
        return self.registry_client(image.repository).manifest_digest(image.tag) == image.digest

    def fetch_for_test(
        self, runtime: str, image: ServedImage, object_store: ObjectStoreResource
    ) -> str:
        """Pull the image by digest (or load its archive) into the runtime's store; returns the
        reference to run."""
        if image.archive_key:
            with tempfile.TemporaryDirectory(prefix="mlops-smoke-") as tmp:
                archive = Path(tmp) / "image.oci.tar"
                object_store.get_file(image.archive_key, archive)
                return self.load_archive(runtime, archive)
        reference = f"{image.repository}@{image.digest}"
        self.pull(runtime, reference)
        return reference

    # --- building -----------------------------------------------------------------------

    def has_image(self, backend: str, reference: str) -> bool:
        command = [backend, "image", "inspect", reference]
        if backend == "buildah":
            command = ["buildah", "inspect", "--type", "image", reference]
        return subprocess.run(command, capture_output=True).returncode == 0

    def build(self, backend: str, context: Path, tag: str, timeout: float = 3600) -> None:
        """Build ``context``/Dockerfile as ``tag`` in this machine's image store."""
        if backend == "docker":
            command = ["docker", "build", "--network", "host", "-t", tag, str(context)]
        elif backend in ("buildah", "podman"):
            command = [
                backend,
                "build",
                "--layers",
                # A failed build leaves no working container behind (by default it does).
                "--force-rm",
                "--network",
                "host",
                "--format",
                "oci",
                "-t",
                tag,
                str(context),
            ]
        else:
            raise BuilderUnavailable(f"backend {backend} does not build on this machine")
        dockerfile = context / "Dockerfile"
        bases = dockerfile_base_images(dockerfile.read_text()) if dockerfile.is_file() else []
        _run(command, f"{backend} build of {tag}", timeout, base_images=bases)

    def push(self, backend: str, source: str, destination: str) -> str:
        """Push ``source`` to ``destination`` (``repo:tag``); returns the manifest digest."""
        with self._auth_file(destination) as auth, tempfile.TemporaryDirectory() as tmp:
            if backend == "docker":
                _run(["docker", "tag", source, destination], "docker tag")
                output = _run(["docker", "push", destination], f"docker push to {destination}")
                for word in output.split():
                    if word.startswith("sha256:"):
                        return word
                raise BuildFailed(f"docker push printed no digest:\n{output[-2000:]}")
            digest_file = Path(tmp) / "digest"
            command = [backend, "push", "--digestfile", str(digest_file)]
            if backend == "buildah":
                command += ["--retry", "2", "--retry-delay", "1s"]
            if auth:
                command += ["--authfile", auth]
            if self.registry_insecure:
                command.append("--tls-verify=false")
            _run(
                [*command, source, f"docker://{destination}"],
                f"{backend} push to {destination}",
                timeout=1800,
            )
            return digest_file.read_text().strip()

    def save_archive(self, backend: str, source: str, path: Path, name: str) -> str:
        """Write ``source`` as an OCI archive at ``path``; returns the manifest digest.

        ``name`` (``<model>:v<version>``) is the archive's reference name, so that
        ``podman load`` names the image ``localhost/<model>:v<version>`` (with a tag alone it
        was ``localhost/v1:latest``). ``docker save`` keeps the built tag instead."""
        engine = "podman" if backend == "docker" and not _works(["docker", "info"]) else backend
        if engine == "docker":
            _run(["docker", "save", "-o", str(path), source], "docker save")
            return _digest_in_archive(path)
        with tempfile.TemporaryDirectory() as tmp:
            digest_file = Path(tmp) / "digest"
            _run(
                [
                    engine,
                    "push",
                    "--digestfile",
                    str(digest_file),
                    source,
                    f"oci-archive:{path}:{name}",
                ],
                f"{engine} save of {source} as an OCI archive",
            )
            return digest_file.read_text().strip()

    @contextlib.contextmanager
    def _auth_file(self, destination: str) -> Iterator[str | None]:
        credentials = self.credentials()
        if credentials is None:
            yield None
            return
        host = destination.split("/", 1)[0]
        token = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "auth.json"
            path.touch(mode=0o600)
            path.write_text(json.dumps({"auths": {host: {"auth": token}}}))
            yield str(path)

    # --- running ------------------------------------------------------------------------

    def pull(self, runtime: str, reference: str) -> None:
        command = [runtime, "pull"]
        if runtime == "podman":
            command.append("--quiet")
            if self.registry_insecure:
                command.append("--tls-verify=false")
        with self._auth_file(reference) as auth:
            if auth and runtime == "podman":
                command += ["--authfile", auth]
            _run([*command, reference], f"{runtime} pull of {reference}", timeout=1800)

    def load_archive(self, runtime: str, path: Path) -> str:
        """Load an OCI archive into the runtime's store; returns the loaded image's name."""
        output = _run([runtime, "load", "--input", str(path)], f"{runtime} load of {path.name}")
        for line in output.splitlines():
            if line.startswith("Loaded image"):
                return line.split(":", 1)[1].strip().split(",")[0].strip()
        raise BuildFailed(f"{runtime} load printed no image name:\n{output[-2000:]}")

    def run(
        self, runtime: str, reference: str, container_port: int, env: dict[str, str]
    ) -> RunningContainer:
        """Start ``reference`` detached, its ``container_port`` published on a loopback port."""
        host_port = _free_loopback_port()
        command = [
            runtime,
            "run",
            "--detach",
            "--publish",
            f"127.0.0.1:{host_port}:{container_port}",
        ]
        for key, value in env.items():
            command += ["--env", f"{key}={value}"]
        command += shlex.split(self.container_run_args)
        container_id = _run([*command, reference], f"{runtime} run of {reference}", 300).strip()
        return RunningContainer(runtime, container_id.splitlines()[-1], host_port)


def _published_key(model_name: str) -> str:
    return f"serving/{model_name}/latest.json"


def wait_for_ping(container: RunningContainer, timeout: float) -> float:
    """Seconds until GET /ping answers 200; raises TimeoutError (with the log tail) if never."""
    start = time.monotonic()
    deadline = start + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{container.url}/ping", timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - start
        except OSError:
            pass
        if not container.running():
            raise TimeoutError(
                f"container {container.container_id[:12]} exited before answering /ping; "
                f"log tail:\n{container.log_tail()}"
            )
        time.sleep(0.5)
    raise TimeoutError(
        f"container {container.container_id[:12]} did not answer /ping within {timeout:.0f}s; "
        f"log tail:\n{container.log_tail()}"
    )


def _free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _digest_in_archive(path: Path) -> str:
    import tarfile

    with tarfile.open(path) as archive:
        member = archive.extractfile("index.json")
        if member is None:
            raise BuildFailed(f"{path.name} has no index.json: not an OCI archive")
        index = json.load(member)
    return str(index["manifests"][0]["digest"])
