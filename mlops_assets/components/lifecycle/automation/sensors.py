"""Sensors that launch work: new labelled data, new incoming batches, late labels of served
traffic, the drift policy, and a new champion to serve.

The first four are hand-written because nothing declarative does their job: three watch data
outside Dagster, and the drift policy turns failed checks into a retrain or a rollback by a
configured policy. champion_image is declarative: it evaluates the automation conditions of
served_image and model_deployment.

Each keeps a cursor in the instance and gives every run a run key derived from what caused
it, so a re-run tick or a restarted daemon never launches the same work twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from datetime import date

from dagster import (
    AssetCheckKey,
    AssetSelection,
    AutomationConditionSensorDefinition,
    DailyPartitionsDefinition,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from mlops_assets.components.lifecycle.automation.check_history import (
    CheckCursor,
    failed_checks,
    start_cursor,
)
from mlops_assets.components.lifecycle.automation.constants import (
    CAUSE_TAG,
    MODEL_TAG,
    TRIGGER_TAG,
)
from mlops_assets.components.lifecycle.automation.jobs import AssetJobs
from mlops_assets.components.lifecycle.scope import ModelScope
from mlops_assets.components.lifecycle.settings import PolicySettings
from mlops_assets.lib.metadata import redact_uri
from mlops_assets.ml.traffic import labels_day_prefix
from mlops_assets.resources.dataset_source import (
    DatasetSourceResource,
    fingerprint_uri,
    is_generated,
)
from mlops_assets.resources.mlflow_registry import CHAMPION, MlflowResource
from mlops_assets.resources.object_store import ObjectStoreResource


def watch_labelled_data(
    context: SensorEvaluationContext, dataset_source: DatasetSourceResource
) -> SensorResult | SkipReason:
    source = redact_uri(dataset_source.source_uri)
    if is_generated(dataset_source.source_uri):
        return SkipReason(
            f"the source (data.source) is the generated sample {source}: nothing lands there; point it "
            "at a folder, an s3:// prefix or an http(s) URL"
        )
    fingerprint = dataset_source.source_fingerprint()
    if fingerprint is None:
        return SkipReason(f"no labelled data at {source} yet")
    if fingerprint == context.cursor:
        return SkipReason(f"labelled data at {source} unchanged")
    return SensorResult(
        run_requests=[
            RunRequest(
                run_key=f"labelled-{fingerprint[:24]}",
                tags={TRIGGER_TAG: "new_labelled_data", CAUSE_TAG: source},
            )
        ],
        cursor=fingerprint,
    )


def watch_incoming_batches(
    context: SensorEvaluationContext,
    dataset_source: DatasetSourceResource,
    mlflow: MlflowResource,
    partitions: DailyPartitionsDefinition,
    lookback_days: int,
) -> SensorResult | SkipReason:
    template = redact_uri(dataset_source.incoming_uri)
    if is_generated(dataset_source.incoming_uri):
        return SkipReason(
            f"incoming batches (data.incoming) are the generated sample {template}: nothing lands there; "
            "the daily_scoring schedule scores it"
        )
    days = partitions.get_partition_keys()[-lookback_days:]
    landed = _changed_days(
        context, days, lambda day: dataset_source.incoming_fingerprint(date.fromisoformat(day))
    )
    if not landed:
        return SkipReason(f"no new batch at {template} for {days[0]} .. {days[-1]}")
    if mlflow.alias_version(CHAMPION) is None:
        # The cursor stays: the batches are scored as soon as a champion exists.
        return SkipReason(
            f"batches for {', '.join(sorted(landed))} wait: model '{mlflow.model_name}' has "
            "no champion yet"
        )
    return _day_runs(context, days, landed, "batch", "incoming_batches")


def _changed_days(
    context: SensorEvaluationContext, days: Sequence[str], fingerprint: Callable[[str], str | None]
) -> dict[str, str]:
    """The days among ``days`` whose data is there and whose fingerprint is not the one the
    cursor (day -> fingerprint) holds: day -> its fingerprint now."""
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    now = {day: fingerprint(day) for day in days}
    return {day: f for day, f in now.items() if f is not None and seen.get(day) != f}


def _day_runs(
    context: SensorEvaluationContext,
    days: Sequence[str],
    landed: dict[str, str],
    key_prefix: str,
    trigger: str,
) -> SensorResult:
    """One partitioned run per landed day, keyed by its fingerprint, and the cursor that
    remembers them (for the watched ``days`` only)."""
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    seen.update(landed)
    return SensorResult(
        run_requests=[
            RunRequest(
                run_key=f"{key_prefix}-{day}-{fingerprint[:16]}",
                partition_key=day,
                tags={TRIGGER_TAG: trigger},
            )
            for day, fingerprint in sorted(landed.items())
        ],
        cursor=json.dumps({day: seen[day] for day in days if day in seen}, sort_keys=True),
    )


def watch_traffic_labels(
    context: SensorEvaluationContext,
    dataset_source: DatasetSourceResource,
    object_store: ObjectStoreResource,
    mlflow: MlflowResource,
    partitions: DailyPartitionsDefinition,
    lookback_days: int,
) -> SensorResult | SkipReason:
    """Late labels of served traffic: when the labels of a recent day appear or change, that
    day's traffic is collected again (joined to them) and its drift report measures quality."""
    days = partitions.get_partition_keys()[-lookback_days:]

    def labels_of(day: str) -> str | None:
        uri = object_store.uri(labels_day_prefix(mlflow.model_name, day))
        return fingerprint_uri(uri, dataset_source.s3)

    landed = _changed_days(context, days, labels_of)
    if not landed:
        where = object_store.uri(labels_day_prefix(mlflow.model_name, "<day>"))
        return SkipReason(f"no new labels under {where} for {days[0]} .. {days[-1]}")
    return _day_runs(context, days, landed, "labels", "traffic_labels")


DRIFT_CHECKS = ("drift_share_below_threshold", "quality_not_degraded")
# The batches' report and the served traffic's: the policy acts on either.
DRIFT_REPORTS = ("drift_report", "traffic_drift_report")


def _last_policy_run(context: SensorEvaluationContext, scope: ModelScope) -> float | None:
    records = context.instance.get_run_records(
        RunsFilter(tags={TRIGGER_TAG: "drift_policy", MODEL_TAG: scope.name}), limit=1
    )
    return records[0].create_timestamp.timestamp() if records else None


def apply_drift_policy(
    context: SensorEvaluationContext, policy: PolicySettings, scope: ModelScope
) -> SensorResult:
    keys = [
        AssetCheckKey(scope.key(report), name) for report in DRIFT_REPORTS for name in DRIFT_CHECKS
    ]
    cursor = CheckCursor.parse(context.cursor) or start_cursor(context.instance, keys)
    failures, visible = failed_checks(context.instance, keys, cursor)
    cursor.done.update(failure.id for failure in failures)
    cursor.forget_older_than(visible)
    # One run per tick at most: a rollback answers a regressed champion, so it wins over a
    # retrain asked for by the same batch.
    acting = [(policy.drift_action(f.check), f) for f in failures]
    acting = [pair for pair in acting if pair[0] != "continue"]
    if not acting:
        reason = (
            f"{len(failures)} failed drift check(s), policy 'continue': alerts only"
            if failures
            else "no new failed drift checks"
        )
        return SensorResult(skip_reason=reason, cursor=cursor.dumps())
    action, failure = next((p for p in acting if p[0] == "rollback"), acting[0])
    last_run = _last_policy_run(context, scope)
    waited = time.time() - last_run if last_run is not None else None
    if waited is not None and waited < policy.retrain_cooldown_minutes * 60:
        return SensorResult(
            skip_reason=f"{failure.label} failed, but a drift policy run started "
            f"{waited / 60:.0f} min ago (cooldown {policy.retrain_cooldown_minutes:g} min): "
            "nothing started",
            cursor=cursor.dumps(),
        )
    tags = scope.tags({TRIGGER_TAG: "drift_policy", CAUSE_TAG: failure.label})
    if action == "rollback":
        reason = f"drift policy: {failure.label}: {failure.description}"[:500]
        request = RunRequest(
            job_name=scope.job_name("rollback_champion"),
            run_key=f"drift-rollback-{failure.id}",
            run_config={
                "ops": {
                    scope.step("point_champion_back"): {
                        "config": {
                            "reason": reason,
                            "only_if_champion": failure.metadata.get("model_version", ""),
                        }
                    }
                }
            },
            tags=tags,
        )
    else:
        request = RunRequest(
            job_name=scope.job_name("refresh_model"),
            run_key=f"drift-retrain-{failure.id}",
            tags=tags,
        )
    context.log.info(f"{failure.label} failed: policy '{policy.drift_policy}' starts {action}")
    return SensorResult(run_requests=[request], cursor=cursor.dumps())


def build_sensors(model: ModelScope, jobs: AssetJobs) -> list[SensorDefinition]:
    """``model``'s sensors that launch runs (named by it: house_prices_drift_policy), with the
    interval and default status of its automation settings."""
    settings = model.automation
    partitions = model.partitions

    def incoming_batches(
        context: SensorEvaluationContext,
        dataset_source: DatasetSourceResource,
        mlflow: MlflowResource,
    ) -> SensorResult | SkipReason:
        return watch_incoming_batches(
            context, dataset_source, mlflow, partitions, settings.lookback_days
        )

    def traffic_labels(
        context: SensorEvaluationContext,
        dataset_source: DatasetSourceResource,
        object_store: ObjectStoreResource,
        mlflow: MlflowResource,
    ) -> SensorResult | SkipReason:
        return watch_traffic_labels(
            context, dataset_source, object_store, mlflow, partitions, settings.lookback_days
        )

    return [
        sensor(
            name=model.job_name("new_labelled_data"),
            job=jobs.refresh_model,
            minimum_interval_seconds=settings.interval_seconds,
            default_status=settings.sensor_status,
            description="Watches the model's data.source (file listing, S3 ETags or HTTP validators) and runs "
            "refresh_model when the labelled data changes. Write files under a name starting with '.' "
            "and rename them when complete: hidden files are ignored.",
        )(model.bind(watch_labelled_data)),
        sensor(
            name=model.job_name("incoming_batches"),
            job=jobs.score_batch,
            minimum_interval_seconds=settings.interval_seconds,
            default_status=settings.sensor_status,
            description="Watches the model's data.incoming for the latest automation.lookback_days daily "
            "partitions and runs score_batch for a day whose batch appears or changes. Waits while "
            "the model has no champion.",
        )(model.bind(incoming_batches)),
        sensor(
            name=model.job_name("traffic_labels"),
            job=jobs.collect_traffic,
            minimum_interval_seconds=settings.interval_seconds,
            default_status=settings.sensor_status,
            description="Watches the object store's traffic_labels/<model>/date=<day>/ for the "
            "latest automation.lookback_days days and runs collect_traffic for a day whose "
            "labels appear or change, so served_traffic joins them and traffic_drift_report "
            "measures live quality (and the drift policy acts on it).",
        )(model.bind(traffic_labels)),
        sensor(
            name=model.job_name("drift_policy"),
            jobs=[jobs.refresh_model, jobs.rollback_champion],
            minimum_interval_seconds=settings.interval_seconds,
            default_status=settings.sensor_status,
            description="Reads failed checks of drift_report and traffic_drift_report from the "
            "event log and applies "
            "policy.drift_policy: continue (alerts only), retrain (refresh_model), or rollback (a failed "
            "quality check rolls the champion back). After a run it starts, further failures start "
            "nothing for policy.retrain_cooldown_minutes.",
        )(model.bind(apply_drift_policy)),
        # Declarative: served_image and model_deployment carry automation conditions (the
        # champion changed; a new image); this sensor evaluates them.
        AutomationConditionSensorDefinition(
            model.job_name("champion_image"),
            target=AssetSelection.assets(*model.keys("served_image", "model_deployment")),
            minimum_interval_seconds=settings.interval_seconds,
            default_status=settings.image_sensor_status,
            run_tags={TRIGGER_TAG: "champion_image"},
            description="Evaluates the automation conditions of served_image (the champion "
            "changed: a promotion, an approval or a rollback) and model_deployment (a new "
            "image), so the served image and the rollout follow the champion.",
        ),
    ]
