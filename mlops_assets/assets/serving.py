"""served_image: the champion as an OCI image that answers /ping and /invocations.

The latest good image of each model is recorded in the object store at
``serving/<model>/latest.json``, written only after the image is verifiably in the registry
(or its archive in the store): a failed build or push leaves the previous record in place.
"""

import json
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any, NoReturn

from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
    multi_asset_check,
)

from mlops_assets.assets.datasets import dataset_splits
from mlops_assets.assets.retries import SERVER_RETRY
from mlops_assets.ml.serving import (
    CA_BUNDLE_IN_CONTEXT,
    LABEL_PREFIX,
    SERVING_PORT,
    UnexpectedResponse,
    build_fingerprint,
    compare_predictions,
    harden_dockerfile,
    invocation_payload,
    parse_predictions,
)
from mlops_assets.ml.train import model_input
from mlops_assets.resources.dataset_source import DatasetSourceResource
from mlops_assets.resources.image_builder import (
    BuilderUnavailable,
    ImageBuilderResource,
    RunningContainer,
    wait_for_ping,
)
from mlops_assets.resources.kaniko import KanikoBuild, context_tarball
from mlops_assets.resources.mlflow_registry import CHAMPION, MlflowResource
from mlops_assets.resources.object_store import ObjectStoreResource
from mlops_assets.resources.oci_registry import RegistryUnavailable

SMOKE_ROWS = 20
SMOKE_TOLERANCE = 1e-6
SMOKE_PING_TIMEOUT = 180.0


def record_key(model_name: str) -> str:
    return f"serving/{model_name}/latest.json"


def read_record(object_store: ObjectStoreResource, model_name: str) -> dict[str, Any] | None:
    return object_store.get_json(record_key(model_name))


def _image_present(record: dict[str, Any], builder: ImageBuilderResource, store: Any) -> bool:
    if record.get("archive_key"):
        return bool(store.exists(record["archive_key"]))
    client = builder.registry_client(record["repository"])
    return client.manifest_digest(record["tag"]) == record["digest"]


@asset(
    retry_policy=SERVER_RETRY,
    group_name="serving",
    kinds={"mlflow", "docker"},
    deps=["registered_model"],
    description="The champion (models:/NAME@champion) in an OCI image built from MLflow's own "
    "Dockerfile (MLflow scoring server on port 8000, non-root), tagged v<version> and pushed to "
    "MLOPS_IMAGE_REGISTRY, or saved as an OCI archive in the object store without a registry.",
)
def served_image(
    context: AssetExecutionContext,
    mlflow: MlflowResource,
    image_builder: ImageBuilderResource,
    object_store: ObjectStoreResource,
) -> MaterializeResult:
    champion = mlflow.alias_version(CHAMPION)
    if champion is None:
        raise Failure(
            allow_retries=False,
            description=f"model '{mlflow.model_name}' has no champion to serve yet",
        )
    try:
        backend = image_builder.backend()
        repository = image_builder.repository(mlflow.model_name)
    except (BuilderUnavailable, ValueError) as exc:
        raise Failure(allow_retries=False, description=str(exc)) from exc
    model_version = mlflow.model_version(champion)
    tag = f"v{champion}"
    fingerprint = build_fingerprint(
        mlflow.model_name,
        champion,
        model_version.run_id,
        image_builder.base_image,
        package_version("mlflow"),
    )
    previous = read_record(object_store, mlflow.model_name)
    try:
        unchanged = (
            previous is not None
            and previous["fingerprint"] == fingerprint
            and previous["repository"] == repository
            and bool(previous.get("archive_key")) == (not image_builder.registry)
            and _image_present(previous, image_builder, object_store)
        )
    except RegistryUnavailable as exc:
        _retry_or_fail(context, exc)
    if unchanged and previous is not None:
        context.log.info(f"champion v{champion} is already served by {previous['reference']}")
        return _result(previous, built=False)

    started = time.monotonic()
    labels = {
        f"{LABEL_PREFIX}.model-name": mlflow.model_name,
        f"{LABEL_PREFIX}.model-version": champion,
        f"{LABEL_PREFIX}.mlflow-run-id": model_version.run_id,
        f"{LABEL_PREFIX}.fingerprint": fingerprint,
    }
    with tempfile.TemporaryDirectory(prefix="mlops-image-") as tmp:
        build_context = Path(tmp) / "context"
        build_context.mkdir()
        base_image = _write_context(mlflow, image_builder, champion, build_context, labels)
        record: dict[str, Any] = {
            "model_name": mlflow.model_name,
            "model_version": champion,
            "run_id": model_version.run_id,
            "repository": repository,
            "tag": tag,
            "base_image": base_image,
            "fingerprint": fingerprint,
            "builder": backend,
            "archive_key": None,
        }
        if backend == "kaniko":
            record |= _build_with_kaniko(
                context, image_builder, object_store, build_context, repository, tag, fingerprint
            )
        else:
            local_tag = f"localhost/mlops-build/{repository.rsplit('/', 1)[-1]}:{fingerprint[:16]}"
            if image_builder.has_image(backend, local_tag):
                context.log.info(f"{local_tag} is already built here; pushing it")
            else:
                context.log.info(f"building {local_tag} with {backend} from {base_image}")
                image_builder.build(backend, build_context, local_tag)
            if image_builder.registry:
                try:
                    record |= _push(image_builder, backend, local_tag, repository, tag)
                except RegistryUnavailable as exc:
                    _retry_or_fail(context, exc)
            else:
                record |= _save_archive(
                    image_builder, backend, object_store, local_tag, tag, Path(tmp), record
                )
    record["build_seconds"] = round(time.monotonic() - started, 1)
    record["built_at"] = datetime.now(UTC).isoformat()
    record["dagster_run_id"] = context.run_id
    object_store.put_bytes(record_key(mlflow.model_name), json.dumps(record, indent=2).encode())
    context.log.info(f"champion v{champion} served by {record['reference']}")
    return _result(record, built=True)


def _retry_or_fail(context: AssetExecutionContext, error: RegistryUnavailable) -> NoReturn:
    """Let the retry policy try again; after the last attempt, fail with the reason alone."""
    attempts = SERVER_RETRY.max_retries + 1
    if context.retry_number < SERVER_RETRY.max_retries:
        raise error
    raise Failure(
        allow_retries=False,
        description=f"registry unreachable after {attempts} attempts; the last good image stays "
        f"recorded. {error}",
    ) from error


def _write_context(
    mlflow: MlflowResource,
    image_builder: ImageBuilderResource,
    version: str,
    build_context: Path,
    labels: dict[str, str],
) -> str:
    """MLflow's build context for ``version``, hardened; returns the base image it uses."""
    dockerfile = mlflow.write_serving_context(version, build_context, image_builder.base_image)
    ca_bundle = bool(image_builder.build_ca_bundle)
    if ca_bundle:
        bundle = Path(image_builder.build_ca_bundle)
        if not bundle.is_file():
            raise Failure(
                allow_retries=False,
                description=f"MLOPS_IMAGE_BUILD_CA_BUNDLE '{bundle}' is not a file",
            )
        shutil.copyfile(bundle, build_context / CA_BUNDLE_IN_CONTEXT)
    hardened = harden_dockerfile(dockerfile, labels, ca_bundle=ca_bundle)
    (build_context / "Dockerfile").write_text(hardened)
    return next(line.split()[1] for line in hardened.splitlines() if line.startswith("FROM "))


def _push(
    image_builder: ImageBuilderResource, backend: str, local_tag: str, repository: str, tag: str
) -> dict[str, Any]:
    destination = f"{repository}:{tag}"
    digest = image_builder.push(backend, local_tag, destination)
    client = image_builder.registry_client(repository)
    found = client.manifest_digest(tag)
    if found != digest:
        raise RegistryUnavailable(
            f"pushed {destination} as {digest}, but the registry now resolves {tag} to {found}"
        )
    return {
        "digest": digest,
        "reference": f"{repository}@{digest}",
        "size_bytes": client.image_size(digest),
    }


def _save_archive(
    image_builder: ImageBuilderResource,
    backend: str,
    object_store: ObjectStoreResource,
    local_tag: str,
    tag: str,
    scratch: Path,
    record: dict[str, Any],
) -> dict[str, Any]:
    archive = scratch / "image.oci.tar"
    digest = image_builder.save_archive(backend, local_tag, archive, tag)
    key = f"images/{record['model_name']}/{tag}-{record['fingerprint'][:12]}.oci.tar"
    object_store.put_file(key, archive)
    return {
        "digest": digest,
        "reference": f"{object_store.uri(key)} ({digest})",
        "archive_key": key,
        "size_bytes": archive.stat().st_size,
    }


def _build_with_kaniko(
    context: AssetExecutionContext,
    image_builder: ImageBuilderResource,
    object_store: ObjectStoreResource,
    build_context: Path,
    repository: str,
    tag: str,
    fingerprint: str,
) -> dict[str, Any]:
    if not image_builder.registry:
        raise Failure(
            allow_retries=False, description="kaniko pushes to a registry: set MLOPS_IMAGE_REGISTRY"
        )
    key = f"build-contexts/{fingerprint}.tar.gz"
    object_store.put_bytes(key, context_tarball(build_context))
    build = KanikoBuild(
        name=f"mlops-build-{fingerprint[:12]}-{int(time.time())}",
        namespace=image_builder.kaniko_namespace,
        executor_image=image_builder.kaniko_image,
        service_account=image_builder.kaniko_service_account,
        context_uri=object_store.uri(key),
        destination=f"{repository}:{tag}",
        s3_endpoint_url=object_store.s3_endpoint_url,
        s3_region=object_store.s3_region,
        insecure_registry=image_builder.registry_insecure,
    )
    try:
        build.job_manifest()
    except ValueError as exc:
        raise Failure(allow_retries=False, description=str(exc)) from exc
    context.log.info(f"kaniko Job {build.namespace}/{build.name} builds {build.destination}")
    digest = build.run()
    client = image_builder.registry_client(repository)
    return {
        "digest": digest,
        "reference": f"{repository}@{digest}",
        "size_bytes": client.image_size(digest),
    }


def _result(record: dict[str, Any], built: bool) -> MaterializeResult:
    size = record.get("size_bytes")
    return MaterializeResult(
        value=record,
        metadata={
            "image": MetadataValue.text(f"{record['repository']}:{record['tag']}"),
            "reference": MetadataValue.text(record["reference"]),
            "digest": record["digest"],
            "tag": record["tag"],
            "model_version": record["model_version"],
            "base_image": record["base_image"],
            "builder": record["builder"],
            "size_bytes": MetadataValue.int(size) if size is not None else MetadataValue.null(),
            "size_mb": MetadataValue.float(round(size / 1e6, 1)) if size else MetadataValue.null(),
            "built": built,
            "build_seconds": MetadataValue.float(record.get("build_seconds", 0.0)),
        },
    )


# --- checks -----------------------------------------------------------------------------


@asset_check(
    retry_policy=SERVER_RETRY,
    asset="served_image",
    blocking=True,
    description="The registry resolves the recorded digest (and the tag still names it), or "
    "the OCI archive is in the object store. Failing means what was recorded cannot be pulled.",
)
def image_exists_at_digest(
    served_image: dict[str, Any],
    image_builder: ImageBuilderResource,
    object_store: ObjectStoreResource,
) -> AssetCheckResult:
    record = served_image
    if record.get("archive_key"):
        present = object_store.exists(record["archive_key"])
        return AssetCheckResult(
            passed=present,
            description=f"OCI archive {object_store.uri(record['archive_key'])} "
            + ("is in the object store" if present else "is missing"),
        )
    client = image_builder.registry_client(record["repository"])
    by_digest = client.manifest_digest(record["digest"])
    by_tag = client.manifest_digest(record["tag"])
    passed = by_digest == record["digest"]
    tag_note = (
        f"tag {record['tag']} names it"
        if by_tag == record["digest"]
        else f"tag {record['tag']} now names {by_tag or 'nothing'}"
    )
    return AssetCheckResult(
        passed=passed,
        description=f"{record['reference']}: "
        + ("in the registry" if passed else "not in the registry")
        + f"; {tag_note}",
        metadata={"tag_digest": by_tag or ""},
    )


@multi_asset_check(
    retry_policy=SERVER_RETRY,
    specs=[
        AssetCheckSpec(
            "serves_champion_predictions",
            asset="served_image",
            blocking=True,
            description="Smoke test: the image runs, answers /ping, and its /invocations "
            "predictions for the test split's first rows equal in-process predictions of the "
            "same model version (tolerance 1e-6).",
        ),
        AssetCheckSpec(
            "runs_as_non_root",
            asset="served_image",
            blocking=True,
            description="The running container's user id is not 0.",
        ),
    ],
    ins={"served_image": AssetIn("served_image")},
)
def served_image_smoke_test(
    served_image: dict[str, Any],
    image_builder: ImageBuilderResource,
    object_store: ObjectStoreResource,
    dataset_source: DatasetSourceResource,
    mlflow: MlflowResource,
) -> Iterator[AssetCheckResult]:
    record = served_image
    try:
        runtime = image_builder.runtime()
    except BuilderUnavailable as exc:
        for name in ("serves_champion_predictions", "runs_as_non_root"):
            yield AssetCheckResult(check_name=name, passed=False, description=str(exc))
        return
    spec = dataset_source.spec
    version = mlflow.model_version(record["model_version"])
    dataset_digest = version.tags.get("mlops.dataset_digest", "")
    splits = dataset_splits(dataset_digest, spec, object_store)
    rows = model_input(splits["test"].head(SMOKE_ROWS), spec)
    expected = [float(p) for p in mlflow.load_model(record["model_version"]).predict(rows)]

    with tempfile.TemporaryDirectory(prefix="mlops-smoke-") as tmp:
        reference = _local_reference(image_builder, runtime, object_store, record, Path(tmp))
        container = image_builder.run(
            runtime, reference, SERVING_PORT, env={"MLFLOW_MODELS_WORKERS": "1"}
        )
    try:
        yield _smoke_result(container, rows, expected, record)
        yield _non_root_result(container)
    finally:
        container.remove()


def _local_reference(
    image_builder: ImageBuilderResource,
    runtime: str,
    object_store: ObjectStoreResource,
    record: dict[str, Any],
    scratch: Path,
) -> str:
    """Pull the image by digest (or load its archive) into the runtime's store."""
    if record.get("archive_key"):
        archive = scratch / "image.oci.tar"
        object_store.get_file(record["archive_key"], archive)
        return image_builder.load_archive(runtime, archive)
    reference = f"{record['repository']}@{record['digest']}"
    image_builder.pull(runtime, reference)
    return reference


def _smoke_result(
    container: RunningContainer,
    rows: Any,
    expected: list[float],
    record: dict[str, Any],
) -> AssetCheckResult:
    name = "serves_champion_predictions"
    try:
        ready_seconds = wait_for_ping(container, SMOKE_PING_TIMEOUT)
    except TimeoutError as exc:
        return AssetCheckResult(check_name=name, passed=False, description=str(exc))
    body = json.dumps(invocation_payload(rows)).encode()
    request = urllib.request.Request(
        f"{container.url}/invocations",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            text = response.read().decode(errors="replace")
        served = parse_predictions(text)
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:1000]
        return AssetCheckResult(
            check_name=name,
            passed=False,
            description=f"/invocations answered HTTP {exc.code}: {detail}\n"
            f"container log tail:\n{container.log_tail()}",
        )
    except (OSError, UnexpectedResponse) as exc:
        return AssetCheckResult(
            check_name=name,
            passed=False,
            description=f"/invocations gave no usable answer: {exc}\n"
            f"container log tail:\n{container.log_tail()}",
        )
    comparison = compare_predictions(served, expected, SMOKE_TOLERANCE)
    description = f"v{record['model_version']} served by {record['reference']}: " + (
        comparison.describe()
    )
    if not comparison.matches:
        description += f"\nresponse: {text[:1000]}"
    return AssetCheckResult(
        check_name=name,
        passed=comparison.matches,
        description=description,
        metadata={
            "rows_sent": comparison.rows,
            "max_abs_diff": MetadataValue.float(comparison.max_abs_diff),
            "seconds_to_ready": MetadataValue.float(round(ready_seconds, 2)),
        },
    )


def _non_root_result(container: RunningContainer) -> AssetCheckResult:
    name = "runs_as_non_root"
    if not container.running():
        return AssetCheckResult(
            check_name=name,
            passed=False,
            description=f"the container is not running, so its user cannot be read; log tail:\n"
            f"{container.log_tail()}",
        )
    uid = container.exec(["id", "-u"]).strip()
    return AssetCheckResult(
        check_name=name,
        passed=uid.isdigit() and int(uid) != 0,
        description=f"the serving process runs as uid {uid}",
        metadata={"uid": uid},
    )
