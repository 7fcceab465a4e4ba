"""served_image: the champion as an OCI image that answers /ping and /invocations.

The image builder records the latest good image of each model (``serving/<model>/latest.json``
in the object store) only after it is verifiably in the registry (or its archive in the store):
a failed build or push leaves the previous record in place, and an unchanged champion is not
rebuilt.
"""

import json
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any, NoReturn

from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    AssetsDefinition,
    AutomationCondition,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
    multi_asset_check,
)

from mlops_assets.components.lifecycle.scope import ModelScope
from mlops_assets.lib.datasets import dataset_splits
from mlops_assets.lib.retries import SERVER_RETRY, fail_fast
from mlops_assets.ml.estimator import model_input
from mlops_assets.ml.serving import (
    LABEL_PREFIX,
    SERVING_PORT,
    announced_batches,
    build_fingerprint,
    compare_answers,
    invocation_payload,
    parse_answers,
    parse_v2_answers,
    v2_payload,
)
from mlops_assets.ml.spec import DatasetSpec
from mlops_assets.ml.tasks import answer, answer_frame
from mlops_assets.records import ServedImage
from mlops_assets.resources.dataset_source import DatasetSourceResource
from mlops_assets.resources.image_builder import (
    BaseImageUnreachable,
    BuilderUnavailable,
    BuildUntrusted,
    ImageBuilderResource,
    ImageConfigError,
    RunningContainer,
    wait_for_ping,
)
from mlops_assets.resources.mlflow_registry import CHAMPION, MlflowResource
from mlops_assets.resources.model_rollout import ModelRolloutResource
from mlops_assets.resources.object_store import ObjectStoreResource
from mlops_assets.resources.oci_registry import RegistryUnavailable

SMOKE_ROWS = 20
SMOKE_TOLERANCE = 1e-6
SMOKE_PING_TIMEOUT = 180.0


# The champion changed (registered_model's data version names it; an approval or a rollback
# records it too): build its image once, when nothing upstream or here is running.
FOLLOWS_THE_CHAMPION = (
    AutomationCondition.any_deps_match(AutomationCondition.data_version_changed())
    .since_last_handled()
    .with_label("champion changed")
    & ~AutomationCondition.in_progress()
    & ~AutomationCondition.any_deps_in_progress()
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
    run_id = mlflow.model_version(champion).run_id
    fingerprint = build_fingerprint(
        mlflow.model_name, champion, run_id, image_builder.base_image, package_version("mlflow")
    )
    started = time.monotonic()
    try:
        current = image_builder.last_published(object_store, mlflow.model_name, fingerprint)
        if current is not None:
            context.log.info(f"champion v{champion} is already served by {current.reference}")
            return _result(current, built=False)
        image = _build_and_publish(
            context, mlflow, image_builder, object_store, champion, run_id, fingerprint
        )
    # Settings to fix, not faults that pass: failed at once, with what to set.
    except (
        BuilderUnavailable,
        BuildUntrusted,
        BaseImageUnreachable,
        ImageConfigError,
        ValueError,
    ) as exc:
        raise Failure(allow_retries=False, description=str(exc)) from exc
    except RegistryUnavailable as exc:
        _retry_or_fail(context, exc)
    image = replace(image, build_seconds=round(time.monotonic() - started, 1))
    image_builder.record_published(object_store, image)
    context.log.info(f"champion v{champion} served by {image.reference}")
    return _result(image, built=True)


def _build_and_publish(
    context: AssetExecutionContext,
    mlflow: MlflowResource,
    image_builder: ImageBuilderResource,
    object_store: ObjectStoreResource,
    champion: str,
    run_id: str,
    fingerprint: str,
) -> ServedImage:
    """Build the champion's image from MLflow's serving context and publish it."""
    repository = image_builder.repository(mlflow.model_name)
    labels = {
        f"{LABEL_PREFIX}.model-name": mlflow.model_name,
        f"{LABEL_PREFIX}.model-version": champion,
        f"{LABEL_PREFIX}.mlflow-run-id": run_id,
        f"{LABEL_PREFIX}.fingerprint": fingerprint,
    }
    with tempfile.TemporaryDirectory(prefix="mlops-image-") as tmp:
        build_context = Path(tmp)
        dockerfile = mlflow.write_serving_context(champion, build_context, image_builder.base_image)
        base_image = image_builder.prepare_context(build_context, dockerfile, labels)
        published = image_builder.publish(
            build_context,
            repository=repository,
            tag=f"v{champion}",
            fingerprint=fingerprint,
            object_store=object_store,
            archive_key=f"images/{mlflow.model_name}/v{champion}-{fingerprint[:12]}.oci.tar",
            log=context.log.info,
        )
    return ServedImage(
        model_name=mlflow.model_name,
        model_version=champion,
        run_id=run_id,
        repository=repository,
        tag=f"v{champion}",
        base_image=base_image,
        fingerprint=fingerprint,
        builder=published.builder,
        digest=published.digest,
        reference=published.reference,
        archive_key=published.archive_key,
        size_bytes=published.size_bytes,
        built_at=datetime.now(UTC).isoformat(),
        dagster_run_id=context.run.run_id,
    )


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


def _result(image: ServedImage, built: bool) -> MaterializeResult:
    size = image.size_bytes
    return MaterializeResult(
        value=image,
        metadata={
            "image": MetadataValue.text(image.image),
            "reference": MetadataValue.text(image.reference),
            "digest": image.digest,
            "tag": image.tag,
            "model_version": image.model_version,
            "base_image": image.base_image,
            "builder": image.builder,
            "size_bytes": MetadataValue.int(size) if size is not None else MetadataValue.null(),
            "size_mb": MetadataValue.float(round(size / 1e6, 1)) if size else MetadataValue.null(),
            "built": built,
            "build_seconds": MetadataValue.float(image.build_seconds),
        },
    )


# --- checks -----------------------------------------------------------------------------


def image_exists_at_digest(
    served_image: ServedImage,
    image_builder: ImageBuilderResource,
    object_store: ObjectStoreResource,
) -> AssetCheckResult:
    if served_image.archive_key:
        present = object_store.exists(served_image.archive_key)
        return AssetCheckResult(
            passed=present,
            description=f"OCI archive {object_store.uri(served_image.archive_key)} "
            + ("is in the object store" if present else "is missing"),
        )
    client = image_builder.registry_client(served_image.repository)
    by_digest = client.manifest_digest(served_image.digest)
    by_tag = client.manifest_digest(served_image.tag)
    passed = by_digest == served_image.digest
    tag_note = (
        f"tag {served_image.tag} names it"
        if by_tag == served_image.digest
        else f"tag {served_image.tag} now names {by_tag or 'nothing'}"
    )
    return AssetCheckResult(
        passed=passed,
        description=f"{served_image.reference}: "
        + ("in the registry" if passed else "not in the registry")
        + f"; {tag_note}",
        metadata={"tag_digest": by_tag or ""},
    )


def served_image_smoke_test(
    served_image: ServedImage,
    image_builder: ImageBuilderResource,
    object_store: ObjectStoreResource,
    dataset_source: DatasetSourceResource,
    mlflow: MlflowResource,
    model_rollout: ModelRolloutResource,
) -> Iterator[AssetCheckResult]:
    try:
        runtime = image_builder.runtime()
    except BuilderUnavailable as exc:
        for name in ("serves_champion_predictions", "runs_as_non_root"):
            yield AssetCheckResult(check_name=name, passed=False, description=str(exc))
        return
    spec = dataset_source.spec
    version = mlflow.model_version(served_image.model_version)
    dataset_digest = version.tags.get("mlops.dataset_digest", "")
    splits = dataset_splits(dataset_digest, spec, object_store)
    rows = model_input(splits["test"].head(SMOKE_ROWS), spec)
    expected = answer(mlflow.load_model(served_image.model_version), rows, spec)

    protocol = model_rollout.serving_protocol()
    reference = image_builder.fetch_for_test(runtime, served_image, object_store)
    # The smoke test's rows are not live traffic: its container logs none.
    container = image_builder.run(
        runtime,
        reference,
        SERVING_PORT,
        env={
            "MLFLOW_MODELS_WORKERS": "1",
            "MLOPS_TRAFFIC_LOG": "off",
            "MLOPS_SERVING_PROTOCOL": protocol,
        },
    )
    try:
        yield _smoke_result(container, rows, expected, spec, served_image, protocol)
        yield _non_root_result(container)
    finally:
        container.remove()


def _smoke_result(
    container: RunningContainer,
    rows: Any,
    expected: Any,
    spec: DatasetSpec,
    served_image: ServedImage,
    protocol: str,
) -> AssetCheckResult:
    name = "serves_champion_predictions"
    try:
        ready_seconds = wait_for_ping(container, SMOKE_PING_TIMEOUT)
    except TimeoutError as exc:
        return AssetCheckResult(check_name=name, passed=False, description=str(exc))
    if protocol == "v2":
        path = f"/v2/models/{served_image.model_name}/infer"
        body, parse = json.dumps(v2_payload(rows)).encode(), parse_v2_answers
    else:
        path, body, parse = (
            "/invocations",
            json.dumps(invocation_payload(rows)).encode(),
            parse_answers,
        )
    request = urllib.request.Request(
        f"{container.url}{path}",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            text = response.read().decode(errors="replace")
        served = answer_frame(parse(text), spec)
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:1000]
        return AssetCheckResult(
            check_name=name,
            passed=False,
            description=f"{path} answered HTTP {exc.code}: {detail}\n"
            f"container log tail:\n{container.log_tail()}",
        )
    except (OSError, ValueError) as exc:  # UnexpectedResponse, or not one answer per class
        return AssetCheckResult(
            check_name=name,
            passed=False,
            description=f"{path} gave no usable answer: {exc}\n"
            f"container log tail:\n{container.log_tail()}",
        )
    comparison = compare_answers(served, expected, SMOKE_TOLERANCE)
    description = f"v{served_image.model_version} served by {served_image.reference} ({path}): " + (
        comparison.describe()
    )
    if not comparison.matches:
        description += f"\nresponse: {text[:1000]}"
    metadata: dict[str, Any] = {
        "rows_sent": comparison.rows,
        "max_abs_diff": MetadataValue.float(comparison.max_abs_diff),
        "seconds_to_ready": MetadataValue.float(round(ready_seconds, 2)),
    }
    # What the image will do under load: its workers decide from the model (or the setting).
    announced = announced_batches(container.log_tail(200))
    if announced:
        batch, why = announced[0]
        metadata["requests_predicted_together"] = batch
        metadata["batching"] = MetadataValue.text(why)
    return AssetCheckResult(
        check_name=name, passed=comparison.matches, description=description, metadata=metadata
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


def build_image_assets(model: ModelScope) -> list[AssetsDefinition]:
    """served_image of ``model``, with its checks."""
    return [
        asset(
            key=model.key("served_image"),
            retry_policy=SERVER_RETRY,
            group_name=model.name,
            kinds={"mlflow", "docker"},
            deps=model.keys("registered_model"),
            automation_condition=FOLLOWS_THE_CHAMPION,
            description="The champion (models:/NAME@champion) in an OCI image built from MLflow's own "
            "Dockerfile (MLflow scoring server on port 8000, non-root), tagged v<version> and pushed to "
            "MLOPS_IMAGE_REGISTRY, or saved as an OCI archive in the object store without a registry.",
        )(fail_fast(model.bind(served_image))),
        asset_check(
            retry_policy=SERVER_RETRY,
            asset=model.key("served_image"),
            blocking=True,
            description="The registry resolves the recorded digest (and the tag still names it), or "
            "the OCI archive is in the object store. Failing means what was recorded cannot be pulled.",
        )(fail_fast(model.bind(image_exists_at_digest))),
        multi_asset_check(
            name=f"{model.name}__served_image_smoke_test",
            retry_policy=SERVER_RETRY,
            specs=[
                AssetCheckSpec(
                    "serves_champion_predictions",
                    asset=model.key("served_image"),
                    blocking=True,
                    description="Smoke test: the image runs, answers /ping, and its predictions for "
                    "the test split's first rows, asked in the protocol served (MLOPS_SERVING_PROTOCOL: "
                    "/invocations, or V2's /v2/models/<model>/infer), equal in-process predictions of "
                    "the same model version (tolerance 1e-6).",
                ),
                AssetCheckSpec(
                    "runs_as_non_root",
                    asset=model.key("served_image"),
                    blocking=True,
                    description="The running container's user id is not 0.",
                ),
            ],
            ins={"served_image": AssetIn(model.key("served_image"))},
        )(fail_fast(model.bind(served_image_smoke_test))),
    ]
