"""Alerts: one per failed asset check evaluation, and one per failed run.

Both sensors ship running: with the default channel (the log) they only write to the
daemon's log, and with a webhook or email configured a person hears of every failure.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from dagster import (
    DagsterRun,
    DefaultSensorStatus,
    RunFailureSensorContext,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    run_failure_sensor,
    sensor,
)

from mlops_assets.components.lifecycle.automation.check_history import (
    CheckCursor,
    FailedCheck,
    failed_checks,
    start_cursor,
)
from mlops_assets.components.lifecycle.automation.constants import MODEL_TAG
from mlops_assets.lib.failures import run_outcome
from mlops_assets.resources.notifier import Alert, AlertDeliveryFailed, NotifierResource


def check_alert(failure: FailedCheck, notifier: NotifierResource, job: str = "") -> Alert:
    where = f" [{failure.partition}]" if failure.partition else ""
    return Alert(
        title=f"Check {failure.check} failed on {failure.asset}{where}",
        severity=failure.severity,
        message=failure.description,
        run_url=notifier.run_url(failure.run_id),
        asset=failure.asset,
        check=failure.check,
        partition=failure.partition,
        job=job,
        run_id=failure.run_id,
    )


class AlertsUndelivered(RuntimeError):
    """No alert of this tick could be delivered; they stay pending for the next tick."""


# A model's alert route (its component's ``alerts`` attributes): which of the deployment's
# channels, to whom, and the variable that holds its own webhook URL.
Route = Mapping[str, str]


def routed(notifier: NotifierResource, model: str, routes: Mapping[str, Route]) -> NotifierResource:
    """The notifier as ``model``'s alerts use it: the deployment's, with what its route sets.
    Its webhook URL is read from the variable the route names when an alert is sent, so the
    secret is never in a defs.yaml or in Dagster's config."""
    route = routes.get(model, {})
    update: dict[str, str] = {k: route[k] for k in ("channels", "email_to") if route.get(k)}
    variable = route.get("webhook_url_env", "")
    if variable:
        update["webhook_url"] = os.environ.get(variable, "")
        if not update["webhook_url"]:
            raise ValueError(
                f"model '{model}' sends its alerts to the webhook in {variable} "
                "(alerts.webhook_url_env), which is not set"
            )
    return notifier.model_copy(update=update) if update else notifier


def model_of(asset_or_job: str) -> str:
    """The model an asset key (house_prices/raw_data) or a job belongs to."""
    return asset_or_job.split("/", 1)[0]


def alert_failed_checks(
    context: SensorEvaluationContext,
    notifier: NotifierResource,
    routes: Mapping[str, Route] = {},
) -> SensorResult:
    keys = list(context.repository_def.asset_graph.asset_check_keys)  # type: ignore[union-attr]
    cursor = CheckCursor.parse(context.cursor) or start_cursor(context.instance, keys)
    failures, visible = failed_checks(context.instance, keys, cursor)
    # A channel that failed is not tried again this tick (a model's own webhook apart).
    broken: dict[tuple[str, str], AlertDeliveryFailed] = {}
    delivered = 0
    for failure in failures:
        model = model_of(failure.asset)
        route = model if model in routes else ""
        try:
            sender = routed(notifier, model, routes)
        except ValueError as exc:  # its route cannot be used: its alerts stay pending
            broken[(route, "route")] = AlertDeliveryFailed("route", str(exc))
            continue
        channels = sender.channel_list()
        run = context.instance.get_run_by_id(failure.run_id)
        alert = check_alert(failure, sender, run.job_name if run else "")
        owed = [
            c
            for c in channels
            if c not in cursor.partial.get(failure.id, []) and (route, c) not in broken
        ]
        problems = sender.send(alert, owed, log=context.log)
        broken.update({(route, p.channel): p for p in problems})
        sent = [c for c in owed if (route, c) not in broken]
        delivered += len(sent)
        done_channels = cursor.partial.get(failure.id, []) + sent
        if set(done_channels) >= set(channels):
            cursor.done.add(failure.id)
            cursor.partial.pop(failure.id, None)
        else:
            cursor.partial[failure.id] = done_channels
    cursor.forget_older_than(visible)
    if broken and not delivered:
        # Nothing changed, so failing the tick loses nothing: it shows in the UI and the
        # daemon log, and the next tick tries again.
        raise AlertsUndelivered("; ".join(str(p) for p in broken.values()))
    if broken:
        context.log.error("some alerts stay pending: " + "; ".join(str(p) for p in broken.values()))
    if not failures:
        # The cursor still goes back: the first tick's floor must be kept.
        return SensorResult(skip_reason="no new failed check evaluations", cursor=cursor.dumps())
    return SensorResult(cursor=cursor.dumps())


def alert_failed_run(
    context: RunFailureSensorContext,
    notifier: NotifierResource,
    routes: Mapping[str, Route] = {},
) -> None:
    run = context.dagster_run
    repository = context.repository_def
    if repository is not None and not repository.has_job(run.job_name):
        return  # a run of another code location's job: its own sensor alerts
    notifier = routed(notifier, run.tags.get(MODEL_TAG, ""), routes)
    outcome = run_outcome(context.instance, run.run_id)
    reasons = outcome.reasons()
    message = "\n".join(reasons) if reasons else (context.failure_event.message or "run failed")
    alert = Alert(
        title=f"Run of {run.job_name} failed",
        severity="ERROR",
        message=message,
        run_url=notifier.run_url(run.run_id),
        job=run.job_name,
        partition=run.tags.get("dagster/partition", ""),
        run_id=run.run_id,
        facts={"Trigger": run.tags.get("mlops/trigger", "") or _launched_from(run)},
    )
    problems = notifier.send(alert, log=context.log)
    if problems:
        raise AlertsUndelivered("; ".join(str(p) for p in problems))


def _launched_from(run: DagsterRun) -> str:
    """Runs without a trigger tag: the daemon and the UI record where they came from; a run
    started from a shell (`dg launch`, `mlops-demo`) has no code-location origin."""
    return (
        "UI or daemon" if run.remote_job_origin is not None else "a shell (dg launch, mlops-demo)"
    )


def build_alert_sensors(
    interval_seconds: int,
    routes: Mapping[str, Route] = {},
) -> list[SensorDefinition]:
    """Hand-written on purpose: open-source Dagster has no declarative alert on a failed check.
    Both always start running, whatever MLOPS_AUTOMATION says. One pair for the deployment:
    each alert goes where its model's route (``routes``, by model) says, else to the
    deployment's channels."""

    def check_alerts(context: SensorEvaluationContext, notifier: NotifierResource) -> SensorResult:
        return alert_failed_checks(context, notifier, routes)

    def run_alerts(context: RunFailureSensorContext, notifier: NotifierResource) -> None:
        alert_failed_run(context, notifier, routes)

    return [
        sensor(
            name="asset_check_alerts",
            minimum_interval_seconds=interval_seconds,
            default_status=DefaultSensorStatus.RUNNING,
            description="Sends one alert per failed asset check evaluation (any asset, WARN or ERROR) "
            "through the notifier (MLOPS_ALERT_CHANNELS). A channel that fails keeps its alerts "
            "pending and fails the tick, so nothing is dropped and nothing is sent twice.",
        )(check_alerts),
        run_failure_sensor(
            name="run_failure_alerts",
            # Runs started from a shell (`dg launch`, `mlops-demo`) have no code-location
            # origin, and a sensor that watches only its own location never sees them: watch
            # every run, and alert on those of this location's jobs (alert_failed_run).
            monitor_all_code_locations=True,
            minimum_interval_seconds=interval_seconds,
            default_status=DefaultSensorStatus.RUNNING,
            description="Sends one alert when a run of this code location's jobs fails, however "
            "it was launched (daemon, UI, dg launch, mlops-demo), with each failed step's root "
            "cause or the check that stopped it, and a link to the run.",
        )(run_alerts),
    ]
