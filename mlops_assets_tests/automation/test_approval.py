"""approve_challenger and rollback_champion, the real jobs in process: what MLflow's champion
history keeps, event by event against the materialisations of registered_model, and the
override a worse challenger needs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance
from mlflow import MlflowClient

from mlops_assets_tests.conftest import (
    Lifecycle,
    demo_env,
    job_name,
    key,
    materialized,
    run_mlops_demo,
    step,
    step_failure,
)
from mlops_assets_tests.dagster_services import ROOT

MODEL = "house-price-regressor"
TRAIN_AND_REGISTER = ["trained_model", "registered_model"]


def client(lifecycle: Lifecycle) -> MlflowClient:
    uri = f"sqlite:///{lifecycle.home / 'mlflow.db'}"
    return MlflowClient(uri, uri)


def mlflow_history(lifecycle: Lifecycle) -> list[dict[str, Any]]:
    """The history as an MLflow user reads it (README): the registered model's event tags."""
    tags = client(lifecycle).get_registered_model(MODEL).tags
    return [json.loads(tags[k]) for k in sorted(tags) if k.startswith("mlops.champion_event.")]


def champion_materialisations(lifecycle: Lifecycle) -> list[dict[str, Any]]:
    """Each materialisation of registered_model that moved the champion, oldest first: its
    run, the champion row of its alias moves, and the event it carries."""
    records = lifecycle.instance.fetch_materializations(
        key("registered_model"), limit=1000, ascending=True
    ).records
    moves = []
    for record in records:
        metadata = record.asset_materialization.metadata
        rows = metadata["alias_moves"].value.splitlines()[2:]
        cells = [[c.strip() for c in row.strip("|").split(" | ")] for row in rows]
        for alias, frm, to, reason in cells:
            if alias == "champion":
                moves.append(
                    {
                        "run_id": record.run_id,
                        "from": None if frm == "-" else frm,
                        "to": to,
                        "reason": reason,
                        "event": metadata["champion_event"].value,
                    }
                )
    return moves


def register(lifecycle: Lifecycle, **config: Any) -> dict[str, Any]:
    if "params" in config:
        config["params_json"] = json.dumps(config.pop("params"))
    result = lifecycle.run(
        assets=TRAIN_AND_REGISTER, run_config={"ops": {"trained_model": {"config": config}}}
    )
    assert result.success
    return materialized(result)["registered_model"]


def approve(lifecycle: Lifecycle, **config: Any) -> Any:
    return lifecycle.run(
        "approve_challenger", run_config={"ops": {"promote_to_champion": {"config": config}}}
    )


def roll_back(lifecycle: Lifecycle, **config: Any) -> Any:
    return lifecycle.run(
        "rollback_champion", run_config={"ops": {"point_champion_back": {"config": config}}}
    )


def champion(lifecycle: Lifecycle) -> str:
    return lifecycle.state()["aliases"]["champion"]


def test_every_approval_and_rollback_is_in_mlflows_history_as_dagster_recorded_it(
    trained: Lifecycle, monkeypatch: Any
) -> None:
    """v1 is champion (promoted by the lifecycle run); v2 and v4 score as v1 does, v3 worse.
    Approve v2, approve v4, roll back, approve v3 (worse: refused, then overridden), roll
    back, roll back: every change stays in MLflow, in the order Dagster recorded them."""
    monkeypatch.setenv("MLOPS_PROMOTION_POLICY", "manual")
    equal = register(trained, force_retrain=True)
    worse = register(trained, params={"max_iter": 15})
    register(trained, force_retrain=True)
    assert trained.state()["versions"] == [1, 2, 3, 4]
    # Under the manual policy each waits, with both scores on the same split.
    assert equal["decision"].value.startswith("awaiting approval: challenger v2 test rmse ")
    assert "scores the same as champion v1's" in equal["decision"].value
    decision = worse["decision"].value
    assert decision.startswith("awaiting approval: challenger v3 test rmse ")
    assert " worse than champion v1's " in decision
    assert "on the same test split (dataset data-v1.0.0 (" in decision
    assert "approving it needs override_worse: true and a reason" in decision
    assert "below the minimum" not in decision
    assert champion(trained) == "1"

    assert approve(trained, version="2", approved_by="ana").success
    assert approve(trained, version="4", approved_by="ana").success
    assert roll_back(trained, reason="complaints after the release", rolled_back_by="bo").success
    assert champion(trained) == "2"

    refused = approve(trained, version="3", approved_by="ana")
    message = step_failure(refused, "promote_to_champion")
    assert message.startswith("challenger v3 test rmse ")
    assert " worse than champion v2's " in message
    assert message.endswith("set override_worse: true and a reason to approve it anyway"), message
    assert champion(trained) == "2"
    no_reason = approve(trained, version="3", override_worse=True)
    assert "override_worse needs a reason" in step_failure(no_reason, "promote_to_champion")

    overridden = approve(
        trained, version="3", approved_by="ana", override_worse=True, reason="smaller model"
    )
    assert overridden.success
    meta = materialized(overridden)["registered_model"]
    assert meta["override_worse"].value is True
    assert meta["champion_test_rmse"].value < meta["challenger_test_rmse"].value
    assert roll_back(trained, reason="still worse").success
    assert roll_back(trained, reason="back to the first").success
    assert champion(trained) == "1"
    last = roll_back(trained)
    assert "no earlier champion" in step_failure(last, "point_champion_back")

    history = mlflow_history(trained)
    assert [(e["kind"], e["from"], e["to"]) for e in history] == [
        ("promotion", None, "1"),
        ("approval", "1", "2"),
        ("approval", "2", "4"),
        ("rollback", "4", "2"),
        ("approval", "2", "3"),
        ("rollback", "3", "2"),
        ("rollback", "2", "1"),
    ]
    assert [e["seq"] for e in history] == list(range(1, 8))
    assert [e["actor"] for e in history] == [
        "registered_model (policy auto)",
        "ana",
        "ana",
        "bo",
        "ana",
        "",
        "",
    ]
    assert [e["undoes"] for e in history] == [None, None, None, 3, None, 5, 2]
    assert [e["override"] for e in history] == [False] * 4 + [True] + [False] * 2
    assert (
        history[4]["reason"] == "approved by ana over a worse score (override_worse): smaller model"
    )
    assert history[4]["metric"] == "rmse"
    assert history[4]["to_score"] > history[4]["from_score"]
    assert history[4]["dataset"].startswith("data-v1.0.0 (")
    assert history[1]["to_score"] == history[1]["from_score"]  # v2 scores as v1 does
    assert history[0]["from_score"] is None  # no champion to compare with

    # Event by event, what Dagster recorded: the run, the move, the reason, the event.
    moves = champion_materialisations(trained)
    assert len(moves) == len(history)
    for move, event in zip(moves, history, strict=True):
        assert (move["run_id"], move["from"], move["to"], move["reason"]) == (
            event["run_id"],
            event["from"],
            event["to"],
            event["reason"],
        )
        assert move["event"] == event

    # The approval is on the version too, with its override.
    tags = client(trained).get_model_version(MODEL, "3").tags
    assert tags["mlops.approved_by"] == "ana"
    assert tags["mlops.approval_override"] == "smaller model"
    assert json.loads(tags["mlops.approval"]) == history[4]


def test_no_worse_approves_without_override_a_missing_version_is_named_and_so_is_the_sensor(
    trained: Lifecycle, monkeypatch: Any
) -> None:
    monkeypatch.setenv("MLOPS_PROMOTION_POLICY", "manual")
    register(trained, force_retrain=True)
    approval = approve(trained, approved_by="ana")  # the challenger, v2
    assert approval.success
    meta = materialized(approval)["registered_model"]
    assert meta["override_worse"].value is False
    assert meta["comparison"].value.startswith("challenger v2 test rmse ")
    assert champion(trained) == "2"
    again = approve(trained, approved_by="ana")  # champion already: nothing changes
    assert again.success
    assert "registered_model" not in materialized(again)
    assert [e["to"] for e in mlflow_history(trained)] == ["1", "2"]
    missing = approve(trained, version="9", approved_by="ana")
    message = step_failure(missing, "promote_to_champion")
    assert message == f"model '{MODEL}' has no version '9' to approve"

    # A rollback the drift policy started names its sensor as who rolled back.
    from mlops_assets.definitions import build_definitions, build_resources

    job = build_definitions(build_resources()).resolve_job_def(job_name("rollback_champion"))
    rollback = job.execute_in_process(
        instance=trained.instance,
        run_config={
            "ops": {step("point_champion_back"): {"config": {"reason": "drift policy: x"}}}
        },
        tags={"dagster/sensor_name": "drift_policy"},
    )
    assert rollback.success
    assert materialized(rollback)["registered_model"]["rolled_back_by"].value == (
        "sensor drift_policy"
    )
    last = mlflow_history(trained)[-1]
    assert (last["kind"], last["to"], last["actor"]) == ("rollback", "1", "sensor drift_policy")


# --- the README's commands, from a shell -----------------------------------------------------


def readme_block(language: str, containing: str) -> str:
    """The one fenced block of ``language`` in the README that contains ``containing``."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(rf"^```{language}\n(.*?)^```", readme, re.DOTALL | re.MULTILINE)
    [block] = [b for b in blocks if containing in b]
    return block


def shell_commands(block: str) -> list[str]:
    """A shell block's commands as written (continuation lines kept), comments left out."""
    commands, lines = [], []
    for line in block.splitlines():
        if not lines and (line.startswith("#") or not line.strip()):
            continue
        lines.append(line)
        if not line.endswith("\\"):
            commands.append("\n".join(lines))
            lines = []
    return commands


@pytest.mark.slow
def test_the_readmes_approve_and_rollback_commands_work_from_a_shell(tmp_path: Path) -> None:
    """In a project folder as a clone has it (its .venv, pyproject.toml, code), after
    mlops-demo set up .mlops: a worse challenger is refused by the README's approve command,
    approved by its override command and rolled back by its rollback command, each run
    listed on the instance the UI shows, and the README's snippet reads the history."""
    project = tmp_path / "project"
    project.mkdir()
    (project / ".venv").symlink_to(Path(sys.executable).parent.parent)
    for name in ("pyproject.toml", "workspace.yaml", "mlops_assets"):
        (project / name).symlink_to(ROOT / name)
    demo = run_mlops_demo(project / ".mlops", cwd=project)  # MLOPS_HOME as its default
    assert demo.returncode == 0, demo.stderr[-3000:]
    env = {k: v for k, v in demo_env(project / ".mlops").items() if k != "MLOPS_HOME"}

    def shell(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", command],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    def champion() -> str:
        uri = f"sqlite:///{project / '.mlops' / 'mlflow.db'}"
        version = MlflowClient(uri, uri).get_model_version_by_alias(MODEL, "champion")
        return str(version.version)

    # A worse challenger, v2 (the auto policy leaves v1 champion).
    worse = {"ops": {step("trained_model"): {"config": {"params_json": '{"max_iter": 15}'}}}}
    refresh = shell(
        "DAGSTER_HOME=$PWD/.mlops/dagster_home .venv/bin/dg launch --job house_prices_refresh_model "
        f"--config-json '{json.dumps(worse)}'"
    )
    assert refresh.returncode == 0, refresh.stderr[-3000:]
    assert champion() == "1"

    approve, override, rollback = shell_commands(
        readme_block("bash", "dg launch --job house_prices_approve_challenger")
    )
    refused = shell(approve)
    assert refused.returncode == 1
    output = refused.stdout + refused.stderr
    assert re.search(
        r"challenger v2 test rmse \S+ is \d+% worse than champion v1's \S+ on the same test "
        r"split \(dataset data-v1\.0\.0 \(\w{12}\)\); set override_worse: true and a reason to "
        "approve it anyway",
        output,
    ), output[-3000:]
    assert champion() == "1"
    approved = shell(override)
    assert approved.returncode == 0, approved.stderr[-3000:]
    assert champion() == "2"
    rolled_back = shell(rollback)
    assert rolled_back.returncode == 0, rolled_back.stderr[-3000:]
    assert champion() == "1"

    snippet = readme_block("python", "mlops.champion_event.")
    read = subprocess.run(
        [str(project / ".venv" / "bin" / "python"), "-c", snippet],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert read.returncode == 0, read.stderr[-3000:]
    lines = [line.split(" ", 2) for line in read.stdout.splitlines()]
    assert [(seq, rest.split(" ", 1)[0]) for seq, _, rest in lines] == [
        ("1", "promotion"),
        ("2", "approval"),
        ("3", "rollback"),
    ]
    assert [rest.split(" ", 1)[1] for _, _, rest in lines] == [
        "None -> 1 registered_model (policy auto) no champion yet",
        "1 -> 2 ana approved by ana over a worse score (override_worse): a smaller model; the "
        "loss is within budget",
        "2 -> 1 ana complaints after the release",
    ]

    with DagsterInstance.from_config(str(project / ".mlops" / "dagster_home")) as instance:
        runs = {(r.job_name, r.status.value) for r in instance.get_runs()}
    assert {
        ("house_prices_approve_challenger", "FAILURE"),
        ("house_prices_approve_challenger", "SUCCESS"),
        ("house_prices_rollback_champion", "SUCCESS"),
    } <= runs
