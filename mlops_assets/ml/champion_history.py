"""The champion's history: every change of the ``champion`` alias, append-only.

MLflow keeps it on the registered model, one tag per change: ``mlops.champion_event.000012``
holds the twelfth change as compact JSON (when, what kind, from and to which version, who,
why, the Dagster run, and the metrics compared when there were any). A tag is written once and
never changed, so nothing a later change does can lose an earlier one, and no value grows:
MLflow's SQL stores keep a registered model's tag value in 5,000 characters.

Kinds of change:

- ``promotion``: registered_model promoted a better challenger (policy auto);
- ``approval``: the approve_challenger job, with who approved and, for a challenger that
  scores worse than the champion, the override and its reason;
- ``rollback``: the rollback_champion job; ``undoes`` names the change it undid;
- ``external``: the alias was moved (or removed) outside the project, in MLflow's UI or API;
  recorded when the project next changes the champion, at the time it noticed;
- ``legacy``: an entry of the history kept before (``mlops.champion_history``, which rollbacks
  rewrote): what it still held, read as the first changes.

Rollback undoes the latest change still standing: replaying the history, a rollback takes the
change it undid off the stack of standing changes. So rolling back twice after two approvals
returns to the champion before both, and a version once rolled away from is never returned to
by a later rollback (only by approving it again).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

EVENT_PREFIX = "mlops.champion_event."
# While a change is being made: its number. Written before the event, removed after the alias
# moved; a change found pending is finished by the next step that changes the champion.
PENDING_TAG = "mlops.champion_event_pending"
LEGACY_TAG = "mlops.champion_history"
# MLflow's SQL stores keep a registered model's tag value in a varchar(5000).
MAX_EVENT_CHARS = 5000
KINDS = ("promotion", "approval", "rollback", "external", "legacy")


def event_key(seq: int) -> str:
    return f"{EVENT_PREFIX}{seq:06d}"


@dataclass(frozen=True)
class ChampionEvent:
    """One change of the champion: from_version -> to_version (None: no champion)."""

    seq: int
    at: str  # UTC, ISO 8601
    kind: str
    from_version: str | None
    to_version: str | None
    actor: str = ""
    reason: str = ""
    run_id: str = ""  # the Dagster run that made it
    metric: str = ""  # the test-split metric compared, when one was
    from_score: float | None = None
    to_score: float | None = None
    dataset: str = ""  # the dataset version whose test split was scored
    override: bool = False  # approved although it scored worse than the champion
    undoes: int | None = None  # a rollback: the change it undid

    def as_dict(self) -> dict[str, Any]:
        """The event as stored: every field, ``from`` and ``to`` by those names."""
        return {
            "seq": self.seq,
            "at": self.at,
            "kind": self.kind,
            "from": self.from_version,
            "to": self.to_version,
            "actor": self.actor,
            "reason": self.reason,
            "run_id": self.run_id,
            "metric": self.metric,
            "from_score": self.from_score,
            "to_score": self.to_score,
            "dataset": self.dataset,
            "override": self.override,
            "undoes": self.undoes,
        }

    def to_json(self) -> str:
        """Compact JSON of at most MAX_EVENT_CHARS characters: a long reason (or actor) is cut,
        marked with an ellipsis."""
        event = self
        while len(text := _compact(event)) > MAX_EVENT_CHARS:
            name = "reason" if len(event.reason) > 1 else "actor"
            value = getattr(event, name)
            if len(value) <= 1:
                break  # the other fields are short: this does not happen
            # Each character cut shortens the JSON by one or more (escapes): one cut does it.
            keep = max(0, len(value) - (len(text) - MAX_EVENT_CHARS) - 1)
            event = replace(event, **{name: value[:keep] + "…"})
        return text

    @classmethod
    def from_json(cls, text: str) -> ChampionEvent:
        data = json.loads(text)
        return cls(
            seq=int(data["seq"]),
            at=str(data.get("at", "")),
            kind=str(data.get("kind", "")),
            from_version=_version(data.get("from")),
            to_version=_version(data.get("to")),
            actor=str(data.get("actor") or ""),
            reason=str(data.get("reason") or ""),
            run_id=str(data.get("run_id") or ""),
            metric=str(data.get("metric") or ""),
            from_score=_score(data.get("from_score")),
            to_score=_score(data.get("to_score")),
            dataset=str(data.get("dataset") or ""),
            override=bool(data.get("override", False)),
            undoes=int(data["undoes"]) if data.get("undoes") is not None else None,
        )

    def describe(self) -> str:
        """One line: ``#3 2026-11-20T10:00:00+00:00 approval v1 -> v2 by ana: reason``."""
        who = f" by {self.actor}" if self.actor else ""
        why = f": {self.reason}" if self.reason else ""
        return (
            f"#{self.seq} {self.at} {self.kind} v{self.from_version or '-'} -> "
            f"v{self.to_version or '-'}{who}{why}"
        )


def _compact(event: ChampionEvent) -> str:
    return json.dumps(event.as_dict(), separators=(",", ":"), ensure_ascii=False)


def _version(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def _score(value: Any) -> float | None:
    return None if value is None else float(value)


def legacy_events(text: str) -> list[ChampionEvent]:
    """The entries of the old ``mlops.champion_history`` tag (``[{"version", "at",
    "reason"}]``, the champions rollbacks had not yet removed) as changes 1..n."""
    try:
        entries = json.loads(text)
    except ValueError:
        return []
    events: list[ChampionEvent] = []
    previous = None
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or "version" not in entry:
            continue
        version = str(entry["version"])
        events.append(
            ChampionEvent(
                seq=len(events) + 1,
                at=str(entry.get("at", "")),
                kind="legacy",
                from_version=previous,
                to_version=version,
                reason=str(entry.get("reason", "")),
            )
        )
        previous = version
    return events


def history_from_tags(tags: Mapping[str, str]) -> list[ChampionEvent]:
    """Every change of the champion, oldest first, from a registered model's tags: the old
    history tag's entries (while it is there) as the first changes, then the event tags."""
    by_seq = {event.seq: event for event in legacy_events(tags.get(LEGACY_TAG, "[]"))}
    for key, value in tags.items():
        if key.startswith(EVENT_PREFIX) and key[len(EVENT_PREFIX) :].isdigit():
            try:
                event = ChampionEvent.from_json(value)
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(
                    f"the registered model's tag '{key}' is not a champion event written by "
                    f"this project ({type(exc).__name__}: {exc}); it was changed by hand: "
                    "restore it from MLflow's history, or delete it to drop that change"
                ) from exc
            by_seq[event.seq] = event
    return [by_seq[seq] for seq in sorted(by_seq)]


def standing(events: list[ChampionEvent]) -> list[ChampionEvent]:
    """The changes still in effect, oldest first: each rollback takes the change it undid
    (or, without that number, the latest) off the stack."""
    stack: list[ChampionEvent] = []
    for event in events:
        if event.kind != "rollback":
            stack.append(event)
            continue
        undone = next((e for e in reversed(stack) if e.seq == event.undoes), None)
        if undone is not None:
            stack.remove(undone)
        elif stack:
            stack.pop()
    return stack


def change_to_undo(events: list[ChampionEvent]) -> ChampionEvent | None:
    """The change a rollback undoes, the latest one standing; its ``from_version`` is the
    champion a rollback returns to. None when nothing stands."""
    changes = standing(events)
    return changes[-1] if changes else None
