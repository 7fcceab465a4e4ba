"""Why a run failed and which checks it failed, in lines a person acts on.

Shared by the run-failure alert and `mlops-demo`'s summary, so both say the same thing. Dagster
wraps an op's exception in its own ("Error occurred while executing op ..."); the cause a person
needs ("Model Version (name=cancer, version=99) not found") is at the end of the chain.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dagster import AssetCheckSeverity, AssetKey, DagsterEventType, DagsterInstance
from dagster._utils.error import SerializableErrorInfo

from mlops_assets.lib.metadata import redact_urls

# "mlflow.exceptions.RestException: text" -> class "RestException", text
_QUALIFIED = re.compile(r"^(?:[A-Za-z_][\w]*\.)*([A-Za-z_]\w*): (.*)$", re.DOTALL)
MAX_CHARS = 600


def root_cause(error: SerializableErrorInfo) -> str:
    """The innermost cause's class and message (its own words, without the module path), with
    any URL in it redacted (MLflow's errors quote the tracking URI, userinfo and all)."""
    while error.cause is not None:
        error = error.cause
    text = error.message.strip()
    found = _QUALIFIED.match(text)
    if found:
        text = f"{found.group(1)}: {found.group(2).strip()}"
    text = redact_urls(text)
    return text if len(text) <= MAX_CHARS else text[: MAX_CHARS - 3] + "..."


@dataclass(frozen=True)
class CheckOutcome:
    """A check evaluation that did not pass."""

    asset: str
    check: str
    severity: str  # "ERROR" or "WARN"
    blocking: bool
    partition: str
    description: str

    @property
    def line(self) -> str:
        where = f" [{self.partition}]" if self.partition else ""
        first = (self.description.strip().splitlines() or ["(no description)"])[0]
        return f"{self.severity} {self.asset}.{self.check}{where}: {first}"


@dataclass(frozen=True)
class RunOutcome:
    """What a finished run left to say: its failed checks and its failed steps' reasons."""

    checks: tuple[CheckOutcome, ...]
    steps: tuple[tuple[str, str], ...]  # (step key, why)

    @property
    def failed_errors(self) -> list[CheckOutcome]:
        return [c for c in self.checks if c.severity == AssetCheckSeverity.ERROR.value]

    @property
    def warnings(self) -> list[CheckOutcome]:
        return [c for c in self.checks if c.severity != AssetCheckSeverity.ERROR.value]

    def reasons(self) -> list[str]:
        """One line per failed step: a step a blocking check stopped is named by that check's
        own message (file, column, rows and rule), not Dagster's "blocking check failed"."""
        lines: list[str] = []
        for step, why in self.steps:
            blocked = [c for c in self.failed_errors if c.blocking and _is_step_of(step, c)]
            if blocked:
                checks = "; ".join(f"{c.check} failed: {_first(c.description)}" for c in blocked)
                lines.append(f"{step_name(step)}: {checks}")
            else:
                lines.append(f"{step_name(step)}: {why}")
        return lines


def _first(text: str) -> str:
    return (text.strip().splitlines() or [""])[0]


def _is_step_of(step: str, check: CheckOutcome) -> bool:
    """Whether ``check`` ran in ``step``: the asset's own step (checks it evaluates itself) or
    the check's step of its own (``<asset>_<check>``)."""
    asset = AssetKey.from_user_string(check.asset).to_python_identifier()
    return step in (asset, f"{asset}_{check.check}")


def step_name(step_key: str) -> str:
    """A step as a person names it: a model's step house_prices__raw_data is
    house_prices/raw_data, as its asset is."""
    return step_key.replace("__", "/", 1)


def run_outcome(instance: DagsterInstance, run_id: str) -> RunOutcome:
    """The failed checks and failed steps of ``run_id``, from its event log."""
    checks: list[CheckOutcome] = []
    steps: list[tuple[str, str]] = []
    for entry in instance.all_logs(
        run_id,
        of_type={DagsterEventType.ASSET_CHECK_EVALUATION, DagsterEventType.STEP_FAILURE},
    ):
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.asset_check_evaluation_data
            if evaluation.passed:
                continue
            checks.append(
                CheckOutcome(
                    asset=evaluation.asset_key.to_user_string(),
                    check=evaluation.check_name,
                    severity=evaluation.severity.value,
                    blocking=bool(evaluation.blocking),
                    partition=evaluation.partition or "",
                    description=redact_urls(evaluation.description or ""),
                )
            )
        else:
            data = event.step_failure_data
            user = data.user_failure_data
            error = data.error
            why = (
                redact_urls(user.description)
                if user and user.description
                else (root_cause(error) if error else "failed")
            )
            steps.append((event.step_key or "run", why.strip()))
    return RunOutcome(tuple(checks), tuple(steps))
