"""The champion's history in a real (SQLite) MLflow registry: homes with the old history tag,
the states a stopped step leaves, and moves made outside the project."""

import json
from pathlib import Path

import pytest

from mlops_assets.ml.champion_history import (
    LEGACY_TAG,
    PENDING_TAG,
    ChampionEvent,
    event_key,
)
from mlops_assets.resources.mlflow_registry import CHAMPION, MlflowResource

MODEL = "m"


@pytest.fixture
def registry(tmp_path: Path) -> MlflowResource:
    """A registered model with versions 1 to 4 (their files are never loaded here)."""
    mlflow = MlflowResource(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", model_name=MODEL)
    client = mlflow.client()
    client.create_registered_model(MODEL)
    for _ in range(4):
        client.create_model_version(MODEL, source=str(tmp_path / "model"))
    return mlflow


def tags(registry: MlflowResource) -> dict[str, str]:
    return dict(registry.client().get_registered_model(MODEL).tags)


def summary(registry: MlflowResource) -> list[tuple[str, str | None, str | None]]:
    return [(e.kind, e.from_version, e.to_version) for e in registry.champion_history()]


def test_a_home_with_the_old_history_tag_rolls_back_and_keeps_it_as_the_first_changes(registry):
    """As the old code left it: v1 then v3 champion, in one tag that rollbacks rewrote."""
    client = registry.client()
    old = [
        {"version": "1", "at": "2026-11-01T00:00:00+00:00", "reason": "no champion yet"},
        {"version": "3", "at": "2026-11-02T00:00:00+00:00", "reason": "approved by ana"},
    ]
    client.set_registered_model_tag(MODEL, LEGACY_TAG, json.dumps(old))
    client.set_registered_model_alias(MODEL, CHAMPION, "3")
    assert summary(registry) == [("legacy", None, "1"), ("legacy", "1", "3")]

    move = registry.rollback_champion("bad reviews", actor="bo", run_id="run-1")

    assert (move.from_version, move.to_version) == ("3", "1")
    assert registry.alias_version(CHAMPION) == "1"
    assert summary(registry) == [
        ("legacy", None, "1"),
        ("legacy", "1", "3"),
        ("rollback", "3", "1"),
    ]
    after = tags(registry)
    assert LEGACY_TAG not in after  # its entries are events 1 and 2 now
    assert json.loads(after[event_key(2)])["reason"] == "approved by ana"
    assert move.event == registry.champion_history()[-1]
    assert (move.event.actor, move.event.run_id, move.event.undoes) == ("bo", "run-1", 2)
    with pytest.raises(ValueError, match="no earlier champion"):
        registry.rollback_champion("again")


def test_a_change_a_stopped_step_left_recorded_is_finished_by_the_next_one(registry):
    registry.change_champion("1", "promotion", "no champion yet")
    # Stopped after recording v2's approval, before moving the alias.
    client = registry.client()
    left = ChampionEvent(2, "2026-11-20T10:00:00+00:00", "approval", "1", "2", actor="ana")
    client.set_registered_model_tag(MODEL, PENDING_TAG, "2")
    client.set_registered_model_tag(MODEL, event_key(2), left.to_json())
    assert registry.alias_version(CHAMPION) == "1"

    history, champion, notes = registry.settle_champion("run-2")

    assert champion == "2" == registry.alias_version(CHAMPION)
    assert PENDING_TAG not in tags(registry)
    assert [e.seq for e in history] == [1, 2]
    assert notes == [
        "finished the champion change a stopped step left: #2 2026-11-20T10:00:00+00:00 "
        "approval v1 -> v2 by ana"
    ]
    assert registry.settle_champion("run-3")[2] == []  # settled: nothing more to do


def test_a_change_stopped_before_it_was_recorded_leaves_no_trace(registry):
    registry.change_champion("1", "promotion", "no champion yet")
    registry.client().set_registered_model_tag(MODEL, PENDING_TAG, "2")  # and nothing else

    move = registry.change_champion("3", "approval", "approved by ana", actor="ana")

    assert summary(registry) == [("promotion", None, "1"), ("approval", "1", "3")]
    assert move.event is not None
    assert move.event.seq == 2
    assert PENDING_TAG not in tags(registry)


def test_a_move_made_outside_the_project_is_recorded_when_noticed(registry):
    registry.change_champion("1", "promotion", "no champion yet")
    registry.client().set_registered_model_alias(MODEL, CHAMPION, "4")  # in MLflow's UI

    registry.change_champion("2", "approval", "approved by ana", actor="ana", run_id="run-9")

    assert summary(registry) == [
        ("promotion", None, "1"),
        ("external", "1", "4"),
        ("approval", "4", "2"),
    ]
    external = registry.champion_history()[1]
    assert external.run_id == "run-9"
    assert "outside the project" in external.reason
    assert registry.rollback_champion("x").to_version == "4"
    assert registry.rollback_champion("x").to_version == "1"


def test_making_the_champion_champion_again_changes_nothing(registry):
    registry.change_champion("1", "promotion", "no champion yet")
    move = registry.change_champion("1", "approval", "approved by ana")
    assert move.event is None
    assert len(registry.champion_history()) == 1


def test_a_version_that_does_not_exist_is_refused_before_anything_is_written(registry):
    registry.change_champion("1", "promotion", "no champion yet")
    before = tags(registry)
    with pytest.raises(ValueError, match="has no version '9'"):
        registry.change_champion("9", "approval", "approved by ana")
    assert tags(registry) == before
    assert registry.alias_version(CHAMPION) == "1"
