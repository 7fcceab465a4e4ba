"""The champion's history as MLflow tags: reading, the rollback it implies, the size limit."""

import json

from mlops_assets.ml.champion_history import (
    LEGACY_TAG,
    MAX_EVENT_CHARS,
    ChampionEvent,
    change_to_undo,
    event_key,
    history_from_tags,
    standing,
)


def change(seq, kind, frm, to, undoes=None):
    return ChampionEvent(seq, f"2026-11-20T10:00:{seq:02d}+00:00", kind, frm, to, undoes=undoes)


def test_rollback_undoes_the_latest_change_still_standing():
    """promote v1, approve v2, approve v4, roll back, approve v3, roll back, roll back."""
    events = [change(1, "promotion", None, "1"), change(2, "approval", "1", "2")]
    events.append(change(3, "approval", "2", "4"))
    assert change_to_undo(events).seq == 3  # v4's approval: back to v2
    events.append(change(4, "rollback", "4", "2", undoes=3))
    events.append(change(5, "approval", "2", "3"))
    assert change_to_undo(events).from_version == "2"
    events.append(change(6, "rollback", "3", "2", undoes=5))
    # v4 and v3 were rolled away from: the next rollback undoes v2's approval, to v1.
    assert change_to_undo(events).seq == 2
    assert change_to_undo(events).from_version == "1"
    events.append(change(7, "rollback", "2", "1", undoes=2))
    assert [e.seq for e in standing(events)] == [1]
    assert change_to_undo(events).from_version is None  # v1 was the first champion


def test_a_move_made_outside_the_project_is_a_change_a_rollback_undoes():
    events = [change(1, "promotion", None, "1"), change(2, "external", "1", "5")]
    assert change_to_undo(events).from_version == "1"


def test_the_old_history_tag_is_read_as_the_first_changes():
    old = [
        {"version": "1", "at": "2026-11-01T00:00:00+00:00", "reason": "no champion yet"},
        {"version": "3", "at": "2026-11-02T00:00:00+00:00", "reason": "approved by ana"},
    ]
    later = change(3, "rollback", "3", "1", undoes=2)
    tags = {
        LEGACY_TAG: json.dumps(old),
        event_key(3): later.to_json(),
        "mlops.something_else": "x",
    }
    history = history_from_tags(tags)
    assert [(e.seq, e.kind, e.from_version, e.to_version) for e in history] == [
        (1, "legacy", None, "1"),
        (2, "legacy", "1", "3"),
        (3, "rollback", "3", "1"),
    ]
    assert history[1].reason == "approved by ana"
    assert history[1].at == "2026-11-02T00:00:00+00:00"


def test_events_are_read_in_order_of_their_number_not_of_the_tags():
    tags = {
        event_key(seq): change(seq, "approval", str(seq), str(seq + 1)).to_json()
        for seq in (10, 2, 1)
    }
    assert [e.seq for e in history_from_tags(tags)] == [1, 2, 10]
    assert sorted(tags) == [event_key(1), event_key(2), event_key(10)]  # as MLflow lists them


def test_an_event_round_trips_and_stays_within_mlflows_tag_size():
    event = ChampionEvent(
        seq=12,
        at="2026-11-20T10:00:00+00:00",
        kind="approval",
        from_version="4",
        to_version="5",
        actor="ana",
        reason='"quoted" \\ and long ' * 800,
        run_id="0b6f3b55-8c3e-4f0e-9b7e-3c6b1c1c1c1c",
        metric="log_loss",
        from_score=0.24,
        to_score=0.41,
        dataset="data-v1.0.0 (1a2b3c4d5e6f)",
        override=True,
    )
    text = event.to_json()
    assert len(text) <= MAX_EVENT_CHARS
    stored = ChampionEvent.from_json(text)
    assert stored.reason.endswith("…")
    assert event.reason.startswith(stored.reason[:-1])
    assert {k: v for k, v in stored.as_dict().items() if k != "reason"} == {
        k: v for k, v in event.as_dict().items() if k != "reason"
    }
    short = ChampionEvent(1, "2026-11-20T10:00:00+00:00", "promotion", None, "1", reason="x")
    assert ChampionEvent.from_json(short.to_json()) == short


def test_a_tag_changed_by_hand_is_named():
    import pytest

    from mlops_assets.ml.champion_history import EVENT_PREFIX, history_from_tags

    with pytest.raises(ValueError, match=f"tag '{EVENT_PREFIX}000003' is not a champion event"):
        history_from_tags({f"{EVENT_PREFIX}000003": "not json"})
