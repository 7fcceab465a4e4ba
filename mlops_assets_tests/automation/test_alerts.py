"""Alert sensors against a real instance and a real HTTP receiver."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    DagsterInstance,
    build_run_status_sensor_context,
    build_sensor_context,
)

from mlops_assets.components.lifecycle.automation.alerts import (
    AlertsUndelivered,
    build_alert_sensors,
)
from mlops_assets.definitions import build_definitions
from mlops_assets.resources.notifier import NotifierResource
from mlops_assets_tests.conftest import Lifecycle, record_evaluation
from mlops_assets_tests.receivers import WebhookReceiver

UI = "http://dagster.test:3000"
asset_check_alerts, run_failure_alerts = build_alert_sensors(interval_seconds=30)


def tick(
    instance: DagsterInstance,
    cursor: str | None,
    notifier: NotifierResource,
    sensor: Any = asset_check_alerts,
) -> Any:
    context = build_sensor_context(
        instance=instance,
        cursor=cursor,
        definitions=build_definitions(),
        resources={"notifier": notifier},
    )
    return sensor(context)


def webhook(receiver: WebhookReceiver, channels: str = "webhook") -> NotifierResource:
    return NotifierResource(
        channels=channels,
        webhook_url=receiver.url,
        ui_base_url=UI,
        attempts=2,
        backoff_seconds=0.01,
    )


def test_one_alert_per_failed_evaluation_and_none_twice(lifecycle: Lifecycle) -> None:
    instance = lifecycle.instance
    record_evaluation(
        instance, "raw_data", "has_data_rows", False, "history: before alerts were on"
    )
    with WebhookReceiver() as receiver:
        notifier = webhook(receiver)
        start = tick(instance, None, notifier)
        assert start.skip_reason is not None
        assert receiver.delivered() == []

        record_evaluation(
            instance, "drift_report", "drift_share_below_threshold", False, "share 50%"
        )
        record_evaluation(instance, "predictions", "no_missing_predictions", True, "0 non-finite")
        record_evaluation(instance, "raw_data", "values_match_schema", False, "column 'area': rule")
        # The daemon persists the cursor in the instance; a re-run tick gets the same one.
        first = tick(instance, start.cursor, notifier)
        assert first.skip_reason is None
        second = tick(instance, first.cursor, notifier)
        assert second.skip_reason is not None
        payloads = receiver.delivered()

    assert len(payloads) == 2
    texts = [p["text"] for p in payloads]
    assert texts[0].startswith(
        "[WARN] Check drift_share_below_threshold failed on house_prices/drift_report"
    )
    assert "share 50%" in texts[0]
    assert texts[1].startswith("[ERROR] Check values_match_schema failed on house_prices/raw_data")
    fields = [f["text"] for f in payloads[1]["blocks"][1]["fields"]]
    assert "*Asset*\nhouse_prices/raw_data" in fields
    assert "*Check*\nvalues_match_schema" in fields
    assert "*Severity*\nERROR" in fields


def test_a_failing_webhook_keeps_alerts_pending_until_it_recovers(
    lifecycle: Lifecycle,
) -> None:
    instance = lifecycle.instance
    with WebhookReceiver(statuses=[500] * 4) as receiver:
        notifier = webhook(receiver)
        cursor = tick(instance, None, notifier).cursor
        record_evaluation(
            instance, "drift_report", "quality_not_degraded", False, "rmse 9e5 over limit"
        )
        with pytest.raises(AlertsUndelivered, match=r"webhook.*failed 2 times.*HTTP 500") as failed:
            tick(instance, cursor, notifier)
        assert "secret-token" not in str(failed.value)
        # Next tick, same cursor (a failed tick keeps it): the webhook is down again.
        with pytest.raises(AlertsUndelivered):
            tick(instance, cursor, notifier)
        recovered = tick(instance, cursor, notifier)
        after = tick(instance, recovered.cursor, notifier)
        delivered = receiver.delivered()
    assert after.skip_reason is not None
    assert len(delivered) == 1
    assert "rmse 9e5 over limit" in delivered[0]["text"]


def test_channels_that_delivered_are_not_repeated(
    lifecycle: Lifecycle, capsys: pytest.CaptureFixture[str]
) -> None:
    instance = lifecycle.instance
    with WebhookReceiver(statuses=[503, 503]) as receiver:
        notifier = webhook(receiver, channels="log,webhook")
        cursor = tick(instance, None, notifier).cursor
        record_evaluation(
            instance, "drift_report", "drift_share_below_threshold", False, "share 40%"
        )
        record_evaluation(instance, "drift_report", "quality_not_degraded", False, "rmse up")
        partial = tick(instance, cursor, notifier)  # the log delivers both; the webhook is down
        assert partial.skip_reason is None
        done = tick(instance, partial.cursor, notifier)
        delivered = receiver.delivered()
    assert len(delivered) == 2
    assert done.skip_reason is None
    assert json.loads(done.cursor)["partial"] == {}
    # The log channel writes to the sensor's log (the tick's logs in the UI), once per alert.
    logged = capsys.readouterr().err
    assert logged.count("ALERT [WARN] Check drift_share_below_threshold") == 1
    assert logged.count("ALERT [ERROR] Check quality_not_degraded") == 1


def test_a_failed_run_alerts_with_its_step_errors(
    lifecycle: Lifecycle, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MLOPS_SOURCE_URI", str(tmp_path / "missing"))
    result = lifecycle.run("refresh_model", partition=None)
    assert not result.success
    with WebhookReceiver() as receiver:
        notifier = webhook(receiver)
        context = build_run_status_sensor_context(
            sensor_name="run_failure_alerts",
            dagster_event=result.get_run_failure_event(),
            dagster_instance=lifecycle.instance,
            dagster_run=result.dagster_run,
            resources={"notifier": notifier},
        ).for_run_failure()
        run_failure_alerts(context)
        [payload] = receiver.delivered()
    assert payload["text"].startswith("[ERROR] Run of house_prices_refresh_model failed")
    assert f"raw_data: cannot read source {tmp_path / 'missing'}" in payload["text"]
    link = payload["blocks"][-1]["elements"][0]["text"]
    assert link == f"<{UI}/runs/{result.run_id}|Open the run in Dagster>"


def test_a_failed_run_alerts_with_its_reason_not_dagsters_wrapper(trained: Lifecycle) -> None:
    lifecycle = trained
    config = {"ops": {"promote_to_champion": {"config": {"version": "99"}}}}
    result = lifecycle.run("approve_challenger", partition=None, run_config=config)
    assert not result.success
    with WebhookReceiver() as receiver:
        context = build_run_status_sensor_context(
            sensor_name="run_failure_alerts",
            dagster_event=result.get_run_failure_event(),
            dagster_instance=lifecycle.instance,
            dagster_run=result.dagster_run,
            resources={"notifier": webhook(receiver)},
        ).for_run_failure()
        run_failure_alerts(context)
        [payload] = receiver.delivered()
    text = payload["text"]
    assert "promote_to_champion: " in text
    assert "has no version '99' to approve" in text, text
    assert "Error occurred while executing" not in text


def test_each_models_alerts_go_where_its_route_says(
    lifecycle: Lifecycle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wine model's defs.yaml could say `alerts: {webhook_url_env: WINE_ALERTS_URL}`: its
    failed checks go to that webhook, the house-price model's to the deployment's; the URL is
    read from the variable when the alert is sent. While that variable is unset, the wine
    alert waits (the tick logs why) and the house-price one goes; none is sent twice."""
    routes = {"wine_cultivars": {"webhook_url_env": "WINE_ALERTS_URL"}}
    check_alerts, _ = build_alert_sensors(interval_seconds=30, routes=routes)
    instance = lifecycle.instance

    def routed_tick(cursor: str | None, notifier: NotifierResource) -> Any:
        return tick(instance, cursor, notifier, check_alerts)

    with WebhookReceiver() as team, WebhookReceiver() as wine_team:
        notifier = webhook(team)
        start = routed_tick(None, notifier)
        record_evaluation(instance, "raw_data", "values_match_schema", False, "house: rule")
        record_evaluation(
            instance, "wine_cultivars/raw_data", "values_match_schema", False, "wine: rule"
        )
        waiting = routed_tick(start.cursor, notifier)  # the house alert goes; wine's waits
        assert [p["text"].split(":")[0] for p in team.delivered()] == [
            "[ERROR] Check values_match_schema failed on house_prices/raw_data"
        ]
        assert wine_team.delivered() == []
        monkeypatch.setenv("WINE_ALERTS_URL", wine_team.url)
        done = routed_tick(waiting.cursor, notifier)
        assert routed_tick(done.cursor, notifier).skip_reason is not None  # none twice
        house_texts = [p["text"] for p in team.delivered()]
        wine_texts = [p["text"] for p in wine_team.delivered()]
    assert len(house_texts) == 1  # sent once, while the wine alert waited
    assert len(wine_texts) == 1
    assert wine_texts[0].startswith("[ERROR] Check values_match_schema failed on wine_cultivars/")
