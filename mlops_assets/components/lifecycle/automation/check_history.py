"""Failed asset check evaluations, read from the instance for sensors that react to them.

Evaluations are read from the instance's asset check execution records (the event log's
index of ASSET_CHECK_EVALUATION events, on SQLite and Postgres alike). Each record has a
stable id, so a sensor keeps in its cursor which failures it has handled; the cursor lives in
the instance, so a daemon restart or a re-run tick handles nothing twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from dagster import AssetCheckEvaluation, AssetCheckKey, DagsterInstance

# Not exported by dagster: no public API reads check evaluations by status. The pinned version
# and the tests (no DeprecationWarning is silenced) are what notice if it changes.
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

# Failed records read per check and tick. A check that fails more often than this between
# two ticks (30 s by default) would lose the oldest of them.
WINDOW = 100


@dataclass(frozen=True)
class FailedCheck:
    id: int
    asset: str
    check: str
    severity: str
    description: str
    partition: str
    run_id: str
    metadata: dict[str, str]

    @property
    def label(self) -> str:
        return f"{self.asset}.{self.check}" + (f"[{self.partition}]" if self.partition else "")


@dataclass
class CheckCursor:
    """What a sensor has done with failed evaluations.

    ``floor``: records up to this id existed before the sensor first ran; they are history,
    not news. ``done``: failures above the floor that are handled. ``partial``: channels that
    already delivered a failure whose other channels still owe it (alerts only).
    """

    floor: int
    done: set[int] = field(default_factory=set)
    partial: dict[int, list[str]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str | None) -> CheckCursor | None:
        if not text:
            return None
        data = json.loads(text)
        return cls(
            floor=int(data["floor"]),
            done={int(i) for i in data.get("done", [])},
            partial={int(k): list(v) for k, v in data.get("partial", {}).items()},
        )

    def dumps(self) -> str:
        return json.dumps(
            {
                "floor": self.floor,
                "done": sorted(self.done),
                "partial": {str(k): v for k, v in sorted(self.partial.items())},
            }
        )

    def forget_older_than(self, visible: Iterable[int]) -> None:
        """Drop ids that fell out of the read window: they can never be returned again."""
        keep = set(visible)
        self.done &= keep
        self.partial = {k: v for k, v in self.partial.items() if k in keep}


def start_cursor(instance: DagsterInstance, keys: Sequence[AssetCheckKey]) -> CheckCursor:
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(list(keys))
    return CheckCursor(floor=max((record.id for record in latest.values()), default=0))


def _text(value: object) -> str:
    inner = getattr(value, "value", value)
    return inner if isinstance(inner, str) else json.dumps(inner, default=str)


def failed_checks(
    instance: DagsterInstance, keys: Sequence[AssetCheckKey], cursor: CheckCursor
) -> tuple[list[FailedCheck], set[int]]:
    """New failed evaluations (oldest first), and every failed id still in the read window."""
    new, visible = [], set()
    for key in keys:
        records = instance.event_log_storage.get_asset_check_execution_history(
            key, limit=WINDOW, status={AssetCheckExecutionRecordStatus.FAILED}
        )
        for record in records:
            visible.add(record.id)
            if record.id <= cursor.floor or record.id in cursor.done or record.event is None:
                continue
            dagster_event = record.event.dagster_event
            evaluation = dagster_event.event_specific_data if dagster_event else None
            if not isinstance(evaluation, AssetCheckEvaluation):
                continue
            new.append(
                FailedCheck(
                    id=record.id,
                    asset=key.asset_key.to_user_string(),
                    check=key.name,
                    severity=evaluation.severity.value,
                    description=evaluation.description or "(the check gave no description)",
                    partition=record.partition or getattr(evaluation, "partition", None) or "",
                    run_id=record.run_id,
                    metadata={k: _text(v) for k, v in evaluation.metadata.items()},
                )
            )
    return sorted(new, key=lambda failure: failure.id), visible
