"""Sensors evaluated against a real instance, real files and a real MLflow registry.

The daemon test (test_daemon.py) runs them in `dagster-daemon`; these pin down each rule.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    AssetMaterialization,
    AssetSelection,
    AutomationConditionSensorDefinition,
    DagsterInstance,
    DagsterRun,
    RunRequest,
    SensorResult,
    SkipReason,
    build_sensor_context,
    evaluate_automation_conditions,
)

from mlops_assets.components.lifecycle.automation.constants import TRIGGER_TAG
from mlops_assets.components.lifecycle.automation.jobs import DATA_VERSION_TAG
from mlops_assets.components.lifecycle.settings import PolicySettings
from mlops_assets.ml.sample_data import generate_house_prices, to_csv_bytes
from mlops_assets.records import champion_data_version
from mlops_assets.resources.dataset_source import DatasetSourceResource
from mlops_assets_tests.conftest import (
    Lifecycle,
    deployment_resources,
    job_name,
    key,
    model_sensor,
    record_evaluation,
    scope_of,
    short,
    step,
)

new_labelled_data = "new_labelled_data"
incoming_batches = "incoming_batches"
traffic_labels = "traffic_labels"
drift_policy = "drift_policy"


def evaluate(
    sensor: str,
    instance: DagsterInstance | None = None,
    cursor: str | None = None,
    **resources: Any,
) -> Any:
    """A tick of the house-price model's sensor ``sensor``, with the model's settings that
    ``resources`` carry (conftest.scope_of)."""
    definition = model_sensor(sensor, resources)
    # A context manager: resources with nested resources (S3Config) are set up inside it.
    with build_sensor_context(
        instance=instance, cursor=cursor, resources=deployment_resources(resources)
    ) as context:
        return definition(context)


def requests_of(result: Any) -> list[RunRequest]:
    return list(result.run_requests or []) if isinstance(result, SensorResult) else []


def write_batch(path: Path, rows: int = 50, seed: int = 1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(to_csv_bytes(generate_house_prices(rows, seed=seed)))


# --- new_labelled_data ------------------------------------------------------------------


def test_new_labelled_data_runs_once_per_change(tmp_path: Path) -> None:
    folder = tmp_path / "labelled"
    source = DatasetSourceResource(source_uri=str(folder), incoming_uri="unused")

    empty = evaluate(new_labelled_data, dataset_source=source)
    assert isinstance(empty, SkipReason)
    assert f"no labelled data at {folder}" in empty.skip_message

    write_batch(folder / "2026-11.csv")
    first = evaluate(new_labelled_data, dataset_source=source)
    [request] = requests_of(first)
    assert request.run_key.startswith("labelled-")
    assert request.tags[TRIGGER_TAG] == "new_labelled_data"

    again = evaluate(new_labelled_data, cursor=first.cursor, dataset_source=source)
    assert isinstance(again, SkipReason)
    assert "unchanged" in again.skip_message

    write_batch(folder / "2026-12.csv", seed=2)
    second = evaluate(new_labelled_data, cursor=first.cursor, dataset_source=source)
    [later] = requests_of(second)
    assert later.run_key != request.run_key


def test_new_labelled_data_explains_a_generated_source() -> None:
    source = DatasetSourceResource(source_uri="sample://house-prices?rows=10", incoming_uri="x")
    result = evaluate(new_labelled_data, dataset_source=source)
    assert isinstance(result, SkipReason)
    assert "nothing lands there" in result.skip_message


# --- incoming_batches -------------------------------------------------------------------


def incoming_source(folder: Path) -> DatasetSourceResource:
    return DatasetSourceResource(
        source_uri="sample://house-prices?rows=10", incoming_uri=str(folder / "{date}.csv")
    )


def last_day() -> str:
    return scope_of({}).partitions.get_partition_keys()[-1]


def test_incoming_batches_scores_each_landed_day_once(trained: Lifecycle, tmp_path: Path) -> None:
    from mlops_assets.definitions import build_resources

    mlflow = build_resources()["mlflow"]
    source = incoming_source(tmp_path / "incoming")
    nothing = evaluate(incoming_batches, dataset_source=source, mlflow=mlflow)
    assert isinstance(nothing, SkipReason)

    day = last_day()
    write_batch(tmp_path / "incoming" / f"{day}.csv")
    (tmp_path / "incoming" / "1999-01-01.csv").write_text("outside the watched days")
    first = evaluate(incoming_batches, dataset_source=source, mlflow=mlflow)
    [request] = requests_of(first)
    assert request.partition_key == day
    assert request.run_key.startswith(f"batch-{day}-")
    assert json.loads(first.cursor).keys() == {day}

    again = evaluate(incoming_batches, cursor=first.cursor, dataset_source=source, mlflow=mlflow)
    assert isinstance(again, SkipReason)

    write_batch(tmp_path / "incoming" / f"{day}.csv", rows=60, seed=3)  # a corrected upload
    corrected = evaluate(
        incoming_batches, cursor=first.cursor, dataset_source=source, mlflow=mlflow
    )
    [rescore] = requests_of(corrected)
    assert rescore.partition_key == day
    assert rescore.run_key != request.run_key


def test_incoming_batches_wait_for_a_champion(lifecycle: Lifecycle, tmp_path: Path) -> None:
    from mlops_assets.definitions import build_resources

    mlflow = build_resources()["mlflow"]
    source = incoming_source(tmp_path / "incoming")
    write_batch(tmp_path / "incoming" / f"{last_day()}.csv")
    result = evaluate(incoming_batches, dataset_source=source, mlflow=mlflow)
    assert isinstance(result, SkipReason)
    assert "no champion yet" in result.skip_message


# --- traffic_labels ---------------------------------------------------------------------


def test_traffic_labels_collect_a_day_again_once_per_change(lifecycle: Lifecycle) -> None:
    from mlops_assets.definitions import build_resources
    from mlops_assets.ml.traffic import labels_day_prefix

    resources = build_resources()
    wanted = {k: resources[k] for k in ("dataset_source", "object_store", "mlflow")}
    nothing = evaluate(traffic_labels, **wanted)
    assert isinstance(nothing, SkipReason)
    assert "no new labels under " in nothing.skip_message

    day = last_day()
    folder = lifecycle.home / "store" / labels_day_prefix(scope_of({}).registered_model, day)
    folder.mkdir(parents=True)
    (folder / ".labels.csv").write_text("request_id,price\nr1,1\n")  # still being written
    assert isinstance(evaluate(traffic_labels, **wanted), SkipReason)
    (folder / ".labels.csv").rename(folder / "labels.csv")
    first = evaluate(traffic_labels, **wanted)
    [request] = requests_of(first)
    assert (request.job_name, request.partition_key) == (None, day)  # the sensor's own job
    assert request.run_key.startswith(f"labels-{day}-")
    assert isinstance(evaluate(traffic_labels, cursor=first.cursor, **wanted), SkipReason)

    (folder / "more.csv").write_text("request_id,price\nr2,2\n")  # more labels came
    [again] = requests_of(evaluate(traffic_labels, cursor=first.cursor, **wanted))
    assert again.partition_key == day
    assert again.run_key != request.run_key
    assert model_sensor(traffic_labels, wanted).job_name == job_name("collect_traffic")


# --- drift_policy -----------------------------------------------------------------------


def fail_check(
    instance: DagsterInstance, check: str, model_version: str = "1", report: str = "drift_report"
) -> None:
    """Record a failed evaluation of a check of ``report`` in the instance's event log."""
    record_evaluation(
        instance,
        report,
        check,
        passed=False,
        description=f"{check} failed in a test",
        metadata={"model_version": model_version},
    )


def policy(kind: str, cooldown: float = 60) -> PolicySettings:
    return PolicySettings(drift_policy=kind, retrain_cooldown_minutes=cooldown)


def test_drift_policy_retrains_once_per_failure_and_not_for_history(
    lifecycle: Lifecycle,
) -> None:
    instance = lifecycle.instance
    fail_check(instance, "drift_share_below_threshold")  # before the sensor ever ran
    start = evaluate(drift_policy, instance, policy=policy("retrain"))
    assert requests_of(start) == []

    fail_check(instance, "drift_share_below_threshold")
    result = evaluate(drift_policy, instance, start.cursor, policy=policy("retrain"))
    [request] = requests_of(result)
    assert request.job_name == job_name("refresh_model")
    assert request.run_key.startswith("drift-retrain-")
    assert request.tags[TRIGGER_TAG] == "drift_policy"
    assert "drift_report.drift_share_below_threshold" in request.tags["mlops/cause"]

    repeat = evaluate(drift_policy, instance, result.cursor, policy=policy("retrain"))
    assert requests_of(repeat) == []


def launched(instance: DagsterInstance, request: RunRequest) -> None:
    """What the daemon does with a run request: a run with its tags in the instance."""
    instance.add_run(
        DagsterRun(job_name=request.job_name or "", run_id=str(uuid.uuid4()), tags=request.tags)
    )


def test_drift_policy_cooldown_holds_off_a_storm(lifecycle: Lifecycle) -> None:
    instance = lifecycle.instance
    cursor = evaluate(drift_policy, instance, policy=policy("retrain")).cursor
    fail_check(instance, "drift_share_below_threshold")
    first = evaluate(drift_policy, instance, cursor, policy=policy("retrain"))
    [request] = requests_of(first)
    launched(instance, request)

    for _ in range(3):
        fail_check(instance, "drift_share_below_threshold")
    held = evaluate(drift_policy, instance, first.cursor, policy=policy("retrain"))
    assert requests_of(held) == []
    assert "cooldown 60 min" in held.skip_reason.skip_message

    # Without a cooldown the next failure retrains again.
    fail_check(instance, "drift_share_below_threshold")
    after = evaluate(drift_policy, instance, held.cursor, policy=policy("retrain", cooldown=0))
    assert len(requests_of(after)) == 1


def test_drift_policy_continue_only_alerts(lifecycle: Lifecycle) -> None:
    instance = lifecycle.instance
    cursor = evaluate(drift_policy, instance, policy=policy("continue")).cursor
    fail_check(instance, "quality_not_degraded")
    result = evaluate(drift_policy, instance, cursor, policy=policy("continue"))
    assert requests_of(result) == []
    assert "policy 'continue'" in result.skip_reason.skip_message


@pytest.mark.parametrize("report", ["drift_report", "traffic_drift_report"])
def test_drift_policy_rolls_back_a_regressed_champion(lifecycle: Lifecycle, report: str) -> None:
    """On a scored batch's report, or on the served traffic's."""
    instance = lifecycle.instance
    cursor = evaluate(drift_policy, instance, policy=policy("rollback")).cursor
    fail_check(instance, "drift_share_below_threshold", model_version="3", report=report)
    fail_check(instance, "quality_not_degraded", model_version="3", report=report)
    result = evaluate(drift_policy, instance, cursor, policy=policy("rollback"))
    [request] = requests_of(result)
    assert request.job_name == job_name("rollback_champion")
    config = request.run_config["ops"][step("point_champion_back")]["config"]
    assert config["only_if_champion"] == "3"
    assert f"{report}.quality_not_degraded" in config["reason"]


def test_a_bad_drift_policy_is_named() -> None:
    with pytest.raises(ValueError, match=r"policy\.drift_policy is 'panic'"):
        policy("panic").drift_action("quality_not_degraded")


# --- champion_image ---------------------------------------------------------------------


def champion_recorded(instance: DagsterInstance, version: str) -> None:
    """What registered_model (or an approval, or a rollback) records: the champion's version
    as its data version."""
    instance.report_runless_asset_event(
        AssetMaterialization(
            key("registered_model"),
            metadata={"champion_version": version},
            tags={DATA_VERSION_TAG: champion_data_version(version)},
        )
    )


def test_champion_image_serves_each_new_champion_once(lifecycle: Lifecycle) -> None:
    """champion_image evaluates the automation conditions of served_image and model_deployment:
    a new champion requests both (in one run), an unchanged one nothing."""
    from mlops_assets.definitions import build_definitions

    instance = lifecycle.instance
    defs = build_definitions()
    target = AssetSelection.assets(key("served_image"), key("model_deployment"))

    def tick(cursor: Any) -> Any:
        return evaluate_automation_conditions(
            defs=defs, instance=instance, asset_selection=target, cursor=cursor
        )

    def requested(result: Any) -> set[str]:
        return {
            short(asset)
            for asset in (key("served_image"), key("model_deployment"))
            if result.get_requested_partitions(asset)
        }

    start = tick(None)
    assert requested(start) == set()  # no champion recorded yet

    champion_recorded(instance, "1")
    first = tick(start.cursor)
    assert requested(first) == {"served_image", "model_deployment"}

    champion_recorded(instance, "1")  # registered again, champion unchanged
    same = tick(first.cursor)
    assert requested(same) == set()

    champion_recorded(instance, "2")
    champion_recorded(instance, "1")  # promoted, then rolled back before the next tick
    back = tick(same.cursor)
    assert requested(back) == set()  # v1 is what is served already
    champion_recorded(instance, "2")
    promoted = tick(back.cursor)
    assert requested(promoted) == {"served_image", "model_deployment"}
    assert requested(tick(promoted.cursor)) == set()

    sensor = defs.resolve_sensor_def(job_name("champion_image"))
    assert isinstance(sensor, AutomationConditionSensorDefinition)
    assert sensor.run_tags == {TRIGGER_TAG: "champion_image"}


def test_the_real_registered_model_drives_champion_image(lifecycle: Lifecycle) -> None:
    """registered_model's own materialisation carries the champion's data version: a first
    champion requests the served image, an unchanged re-run does not."""
    from mlops_assets.definitions import build_definitions

    defs = build_definitions()
    target = AssetSelection.assets(key("served_image"), key("model_deployment"))

    def tick(cursor: Any) -> Any:
        return evaluate_automation_conditions(
            defs=defs, instance=lifecycle.instance, asset_selection=target, cursor=cursor
        )

    start = tick(None)
    assert lifecycle.run("refresh_model", partition=None).success
    first = tick(start.cursor)
    assert first.get_requested_partitions(key("served_image"))
    assert lifecycle.run("refresh_model", partition=None).success  # unchanged: reused
    assert tick(first.cursor).total_requested == 0
