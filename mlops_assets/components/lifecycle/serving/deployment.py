"""model_deployment: the served image running on Kubernetes, behind /ping probes.

What was applied is recorded at ``deployments/<model>/latest.json`` in the object store, only
once the cluster reports the rollout ready: a rollout that fails leaves the previous record,
and the previous pods serving.
"""

from collections.abc import Iterator
from datetime import UTC, datetime

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetIn,
    AssetsDefinition,
    AutomationCondition,
    Failure,
    MetadataValue,
    Output,
    asset,
    asset_check,
)

from mlops_assets.components.lifecycle.scope import ModelScope
from mlops_assets.lib.retries import SERVER_RETRY, fail_fast
from mlops_assets.records import Deployment, ServedImage
from mlops_assets.resources.kubernetes import ClusterUnavailable, KubernetesApi, RolloutFailed
from mlops_assets.resources.model_rollout import ModelRolloutResource, Rollout
from mlops_assets.resources.object_store import ObjectStoreResource


def record_key(model_name: str) -> str:
    return f"deployments/{model_name}/latest.json"


def model_deployment(
    context: AssetExecutionContext,
    served_image: ServedImage,
    model_rollout: ModelRolloutResource,
    object_store: ObjectStoreResource,
) -> Iterator[Output[Deployment]]:
    reason = _skip_reason(model_rollout, served_image)
    if reason is not None:
        context.log.warning(f"model_deployment skipped: {reason}")
        return
    env, env_secret = model_rollout.traffic_env(object_store)
    if not object_store.is_s3 and model_rollout.traffic_log == "on":
        context.log.warning(
            f"the object store ({object_store.root}) is a local folder the pods cannot share: "
            "the served model's traffic log is off. An s3:// MLOPS_OBJECT_STORE_ROOT turns it on."
        )
    rollout = Rollout(
        model_name=served_image.model_name,
        model_version=served_image.model_version,
        image=served_image.reference,
        namespace=model_rollout.namespace,
        replicas=model_rollout.replicas,
        pull_secret=model_rollout.pull_secret,
        cpu_limit=model_rollout.cpu_limit,
        env=(*env, *model_rollout.batch_env()),
        env_secret=env_secret,
        protocol=model_rollout.serving_protocol(),
    )
    try:
        api = model_rollout.connect()
        kind = model_rollout.rollout_kind(api)
        manifests = (
            [rollout.inference_service_manifest()]
            if kind == "kserve"
            else rollout.deployment_manifests()
        )
        for manifest in manifests:
            api.apply(manifest)
            context.log.info(f"applied {manifest['kind']} {rollout.namespace}/{rollout.name}")
        status = model_rollout.wait_until_ready(api, rollout, kind)
        live = api.read(manifests[0])
    except ClusterUnavailable as exc:
        if context.retry_number < SERVER_RETRY.max_retries:
            raise
        raise Failure(allow_retries=False, description=f"Kubernetes API: {exc}") from exc
    except RolloutFailed as exc:
        raise Failure(
            allow_retries=False,
            description=f"{exc}. The previous pods keep serving; the record of the last good "
            "rollout is unchanged.",
        ) from exc
    url = rollout.url(kind, live)
    deployment = Deployment(
        model_name=rollout.model_name,
        model_version=rollout.model_version,
        image=rollout.image,
        kind=kind,
        namespace=rollout.namespace,
        name=rollout.name,
        replicas=rollout.replicas,
        url=url,
        status=status,
        manifests=manifests,
        applied_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    object_store.put_bytes(record_key(rollout.model_name), deployment.to_json())
    yield Output(
        deployment,
        metadata={
            "kind": kind,
            "object": f"{rollout.namespace}/{rollout.name}",
            "image": MetadataValue.text(rollout.image),
            "model_version": rollout.model_version,
            "url": MetadataValue.url(url),
            "status": status,
            "applied": MetadataValue.md(
                "\n".join(f"- `{m['apiVersion']}` {m['kind']} `{rollout.name}`" for m in manifests)
            ),
        },
    )


def _skip_reason(model_rollout: ModelRolloutResource, image: ServedImage) -> str | None:
    """Why there is nothing to roll out, or None."""
    reason = model_rollout.skip_reason()
    if reason is not None:
        return reason
    if image.archive_key:
        return (
            "the served image is an OCI archive in the object store, which a cluster cannot "
            "pull: set MLOPS_IMAGE_REGISTRY so served_image pushes it to a registry"
        )
    return None


def _live_image(api: KubernetesApi, deployment: Deployment) -> str:
    live = api.read(deployment.manifests[0])
    spec = live["spec"]
    pod = spec["predictor"] if deployment.kind == "kserve" else spec["template"]["spec"]
    return str(pod["containers"][0]["image"])


def runs_the_served_image(
    model_deployment: Deployment,
    served_image: ServedImage,
    model_rollout: ModelRolloutResource,
) -> AssetCheckResult:
    expected = served_image.reference
    live = _live_image(model_rollout.connect(), model_deployment)
    return AssetCheckResult(
        passed=live == expected,
        severity=AssetCheckSeverity.ERROR,
        description=None
        if live == expected
        else f"cluster runs {live}, served_image is {expected}",
        metadata={"live_image": live, "served_image": expected},
    )


def build_deployment_assets(model: ModelScope) -> list[AssetsDefinition]:
    """model_deployment of ``model``, with its check."""
    return [
        asset(
            key=model.key("model_deployment"),
            retry_policy=SERVER_RETRY,
            group_name=model.name,
            kinds={"kubernetes"},
            ins={"served_image": AssetIn(model.key("served_image"))},
            # Rolls out every image served_image publishes, in the same run when both are requested.
            automation_condition=AutomationCondition.eager(),
            output_required=False,
            description="The served image rolled out to Kubernetes (MLOPS_DEPLOY_CLUSTER): a KServe "
            "InferenceService, or a Deployment and Service with readiness and liveness probes (/ping; "
            "/v2/health/ready and /live with MLOPS_SERVING_PROTOCOL=v2). "
            "Skipped, with the reason in the log, when no cluster is configured or the image is not in "
            "a registry.",
        )(fail_fast(model.bind(model_deployment))),
        asset_check(
            asset=model.key("model_deployment"),
            additional_ins={"served_image": AssetIn(model.key("served_image"))},
            retry_policy=SERVER_RETRY,
            description="The cluster runs the image served_image recorded last (by digest). Failing "
            "means the rollout fell behind the champion or someone changed the object by hand.",
        )(fail_fast(model.bind(runs_the_served_image))),
    ]
