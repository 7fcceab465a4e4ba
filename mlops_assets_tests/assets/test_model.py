"""trained_model and registered_model: tracking, the promotion gate, approval and rollback."""

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from mlops_assets_tests.conftest import (
    TEAM_MODEL,
    check_evaluations,
    job_name,
    key,
    materialized,
    step,
    step_failure,
)

MODEL = "house-price-regressor"
TRAIN_AND_REGISTER = ["trained_model", "registered_model"]


def training_config(**config):
    if "params" in config:
        config["params_json"] = json.dumps(config.pop("params"))
    return {"ops": {"trained_model": {"config": config}}}


def client(lifecycle) -> MlflowClient:
    uri = f"sqlite:///{lifecycle.home / 'mlflow.db'}"
    return MlflowClient(uri, uri)


def training_runs(lifecycle) -> int:
    mlflow = client(lifecycle)
    ids = [e.experiment_id for e in mlflow.search_experiments()]
    return len(mlflow.search_runs(experiment_ids=ids))


def test_training_run_is_fully_tracked_in_mlflow(trained):
    mlflow = client(trained)
    version = mlflow.get_model_version_by_alias(MODEL, "champion")
    run = mlflow.get_run(version.run_id)
    latest = json.loads((trained.home / "store/datasets/house_prices/refs/latest.json").read_text())
    assert run.data.tags["mlops.dataset_digest"] == latest["digest"]
    assert run.data.tags["mlops.dataset_tag"] == "data-v1.0.0"
    assert len(run.data.tags["dagster.run_id"]) == 36
    assert run.data.params["model_type"] == "hist_gradient_boosting"
    assert {"test_rmse", "val_rmse", "test_r2", "baseline_test_rmse"} <= set(run.data.metrics)
    [dataset_input] = run.inputs.dataset_inputs
    assert dataset_input.dataset.digest == latest["digest"][:36]
    assert dataset_input.tags[0].value == "training"
    model = mlflow.get_logged_model(run.outputs.model_outputs[0].model_id)
    import mlflow as mlflow_module
    from mlflow.models import get_model_info

    # get_model_info resolves models:/ with the process's MLflow URI, which the last run in
    # this process set (another test's home, after a `lifecycle` test): this home's, then.
    uri = f"sqlite:///{trained.home / 'mlflow.db'}"
    mlflow_module.set_tracking_uri(uri)
    mlflow_module.set_registry_uri(uri)
    info = get_model_info(model.model_uri)
    assert info.signature is not None
    assert [c.name for c in info.signature.inputs.inputs][:2] == ["area", "bedrooms"]
    assert info.saved_input_example_info is not None


def test_unchanged_dataset_and_config_train_nothing_and_register_nothing(trained):
    before = trained.state()
    runs_before = client(trained).search_runs(["1", "0"])

    result = trained.run(assets=TRAIN_AND_REGISTER)

    assert result.success
    trained_meta = materialized(result)["trained_model"]
    assert trained_meta["trained"].value is False
    champion = client(trained).get_model_version_by_alias(MODEL, "champion")
    assert trained_meta["mlflow_run_id"].value == champion.run_id
    assert "unchanged" in trained_meta["training"].value
    assert "force_retrain" in trained_meta["training"].value
    registered = materialized(result)["registered_model"]
    assert registered["version"].value == "1"
    assert registered["newly_registered"].value is False
    assert "already registered as v1" in registered["decision"].value
    assert len(client(trained).search_runs(["1", "0"])) == len(runs_before)
    assert trained.state() == before
    failed = {k: e.description for k, e in check_evaluations(result).items() if not e.passed}
    assert failed == {}


@pytest.mark.parametrize("stopped_after", ["registration", "challenger move"])
def test_a_registration_a_stopped_run_left_pending_is_finished_by_the_next_run(
    trained, stopped_after
):
    """The state a run stopped inside registered_model leaves (found by SIGTERM drills: v1
    registered with no alias, or challenger moved and no champion decided): the next run
    finishes it instead of saying "already registered" and failing its checks forever."""
    mlflow = client(trained)
    mlflow.delete_registered_model_alias(MODEL, "champion")
    if stopped_after == "registration":
        mlflow.delete_registered_model_alias(MODEL, "challenger")
    mlflow.set_model_version_tag(MODEL, "1", "mlops.registration", "pending")
    mlflow.delete_model_version_tag(MODEL, "1", "mlops.gate_decision")

    result = trained.run(assets=["registered_model"])

    assert result.success
    registered = materialized(result)["registered_model"]
    assert registered["newly_registered"].value is False
    assert registered["decision"].value.startswith(
        "finished the registration an interrupted attempt left"
    )
    assert trained.state()["aliases"] == {"champion": "1", "challenger": "1"}
    version = mlflow.get_model_version(MODEL, "1")
    assert version.tags["mlops.registration"] == "decided"
    assert "no champion yet" in version.tags["mlops.gate_decision"]
    failed = {k: e.description for k, e in check_evaluations(result).items() if not e.passed}
    assert failed == {}
    # Decided now: the next run moves nothing.
    again = trained.run(assets=["registered_model"])
    assert (
        "its registration was decided" in materialized(again)["registered_model"]["decision"].value
    )
    assert materialized(again)["registered_model"]["alias_moves"].value.count("\n") == 1


def test_a_new_training_config_trains_again(trained):
    result = trained.run(
        assets=["trained_model"], run_config=training_config(params={"max_iter": 150})
    )
    assert materialized(result)["trained_model"]["trained"].value is True


def test_equal_challenger_is_registered_but_not_promoted(trained):
    result = trained.run(assets=TRAIN_AND_REGISTER, run_config=training_config(force_retrain=True))
    assert result.success
    assert materialized(result)["trained_model"]["trained"].value is True
    meta = materialized(result)["registered_model"]
    assert meta["version"].value == "2"
    assert meta["promoted"].value is False
    assert "below the minimum" in meta["decision"].value
    assert trained.state()["aliases"] == {"champion": "1", "challenger": "2"}


def test_better_challenger_is_promoted_and_the_move_recorded(lifecycle):
    weak = lifecycle.run(
        assets=["raw_data", "versioned_dataset", *TRAIN_AND_REGISTER],
        run_config=training_config(params={"max_iter": 15}),
    )
    assert weak.success
    strong = lifecycle.run(assets=TRAIN_AND_REGISTER)
    assert strong.success
    meta = materialized(strong)["registered_model"]
    assert meta["promoted"].value is True
    assert "| champion | 1 | 2 |" in meta["alias_moves"].value
    assert "| challenger | 1 | 2 |" in meta["alias_moves"].value
    assert lifecycle.state()["aliases"] == {"champion": "2", "challenger": "2"}
    regression = check_evaluations(strong)[("registered_model", "champion_not_regressed")]
    assert regression.passed


def test_worse_challenger_leaves_the_champion_in_place(trained):
    result = trained.run(
        assets=TRAIN_AND_REGISTER, run_config=training_config(params={"max_iter": 15})
    )
    assert result.success
    assert materialized(result)["registered_model"]["promoted"].value is False
    assert trained.state()["aliases"] == {"champion": "1", "challenger": "2"}


def test_min_improvement_blocks_a_marginally_better_model(trained, monkeypatch):
    monkeypatch.setenv("MLOPS_MIN_IMPROVEMENT", "0.5")
    result = trained.run(assets=TRAIN_AND_REGISTER, run_config=training_config(model_type="ridge"))
    assert result.success
    assert trained.state()["aliases"]["champion"] == "1"


def test_model_below_thresholds_is_never_registered(trained, monkeypatch):
    monkeypatch.setenv("MLOPS_MIN_R2", "0.99")
    before = trained.state()
    result = trained.run(assets=TRAIN_AND_REGISTER)
    assert not result.success
    evaluation = check_evaluations(result)[("trained_model", "meets_metric_thresholds")]
    assert not evaluation.passed
    assert "minimum 0.99" in evaluation.description
    assert "registered_model" not in materialized(result)
    assert trained.state() == before


def test_model_that_barely_beats_the_baseline_is_stopped(trained, monkeypatch):
    monkeypatch.setenv("MLOPS_BASELINE_MARGIN", "0.9")
    result = trained.run(assets=TRAIN_AND_REGISTER)
    evaluation = check_evaluations(result)[("trained_model", "beats_naive_baseline")]
    assert not evaluation.passed
    assert "registered_model" not in materialized(result)
    assert trained.state()["versions"] == [1]


def test_bad_training_config_fails_clearly(trained):
    result = trained.run(assets=["trained_model"], run_config=training_config(model_type="xgb"))
    assert "model_type 'xgb' is not one of" in step_failure(result, "trained_model")


NOTEBOOK_FUNCTION = "mlops_assets_tests.ml.estimators:train_a_notebook_class"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"model_type": "xgb"}, "model_type 'xgb' is not one of"),
        ({"params_json": "{alpha: 1}"}, "estimator params: not JSON"),
        ({"model_type": "ridge", "params": {"alphaa": 1.0}}, "does not accept params"),
        ({"params": {"max_iter": -1}}, "'max_iter' parameter of HistGradientBoostingRegressor"),
        (
            {
                "training_function": NOTEBOOK_FUNCTION,
                "trusted_types": ["__main__.NotebookRegressor"],
            },
            "defined in __main__ (a notebook or a script)",
        ),
    ],
    ids=["estimator name", "params JSON", "param name", "param value", "class in a notebook"],
)
def test_a_configuration_error_fails_once_without_retries(trained, config, message):
    """A retry runs the same config on the same data: it fails the same way, after backoff."""
    before = trained.state()
    result = trained.run(assets=["trained_model"], run_config=training_config(**config))
    events = [e.event_type_value for e in result.all_events if e.step_key == step("trained_model")]
    assert events.count("STEP_START") == 1
    assert events.count("STEP_FAILURE") == 1
    assert "STEP_UP_FOR_RETRY" not in events
    assert message in step_failure(result, "trained_model")
    assert trained.state() == before


def test_manual_policy_waits_for_approval_then_scoring_works(lifecycle, monkeypatch):
    monkeypatch.setenv("MLOPS_PROMOTION_POLICY", "manual")
    first = lifecycle.run()
    assert not first.success
    assert lifecycle.state()["aliases"] == {"challenger": "1"}
    decision = materialized(first)["registered_model"]["decision"].value
    assert decision.startswith("awaiting approval: no champion yet (challenger v1 test rmse ")
    assert decision.endswith("policy is manual: run the approve_challenger job to promote it")
    assert "has no champion" in step_failure(first, "predictions")
    waiting = check_evaluations(first)[("registered_model", "champion_loads_and_predicts")]
    assert not waiting.passed
    assert waiting.severity.value == "WARN"
    assert "approve_challenger" in waiting.description

    approval = lifecycle.run(
        "approve_challenger",
        run_config={"ops": {"promote_to_champion": {"config": {"approved_by": "ana"}}}},
    )
    assert approval.success
    meta = materialized(approval)["registered_model"]
    assert "| champion | - | 1 | approved by ana |" in meta["alias_moves"].value
    assert lifecycle.state()["aliases"] == {"champion": "1", "challenger": "1"}

    assert lifecycle.run(assets=["predictions", "drift_report"]).success


def test_rollback_points_champion_at_the_previous_one(lifecycle):
    lifecycle.run(
        assets=["raw_data", "versioned_dataset", *TRAIN_AND_REGISTER],
        run_config=training_config(params={"max_iter": 15}),
    )
    lifecycle.run(assets=TRAIN_AND_REGISTER)
    assert lifecycle.state()["aliases"]["champion"] == "2"

    rollback = lifecycle.run(
        "rollback_champion",
        run_config={"ops": {"point_champion_back": {"config": {"reason": "bad reviews"}}}},
    )
    assert rollback.success
    assert "| champion | 2 | 1 | bad reviews |" in (
        materialized(rollback)["registered_model"]["alias_moves"].value
    )
    assert lifecycle.state()["aliases"]["champion"] == "1"
    assert lifecycle.state()["versions"] == [1, 2]

    again = lifecycle.run("rollback_champion")
    assert not again.success
    assert "no earlier champion" in step_failure(again, "point_champion_back")
    assert lifecycle.state()["aliases"]["champion"] == "1"


CUSTOM = "mlops_assets_tests.ml.estimators.ShrunkLeastSquares"


def test_any_regressor_by_import_path_trains_registers_and_is_tracked(trained, monkeypatch):
    monkeypatch.setenv("MLOPS_MODEL_TYPE", "sklearn.linear_model.Lasso")
    monkeypatch.setenv("MLOPS_MODEL_PARAMS", '{"alpha": 10.0}')
    result = trained.run(assets=TRAIN_AND_REGISTER)
    assert result.success
    metadata = materialized(result)["trained_model"]
    assert metadata["model_type"].value == "sklearn.linear_model.Lasso"
    run = client(trained).get_run(metadata["mlflow_run_id"].value)
    assert run.data.params["model_type"] == "sklearn.linear_model.Lasso"
    assert run.data.params["alpha"] == "10.0"
    assert trained.state()["versions"] == [1, 2]
    loads = check_evaluations(result)[("registered_model", "champion_loads_and_predicts")]
    assert loads.passed


def test_an_untrusted_estimator_type_is_named_and_nothing_is_logged(trained):
    before = trained.state()
    runs_before = training_runs(trained)
    assert runs_before >= 1
    result = trained.run(assets=TRAIN_AND_REGISTER, run_config=training_config(model_type=CUSTOM))
    message = step_failure(result, "trained_model")
    assert f"holds types skops does not trust: {CUSTOM}" in message
    assert "MLOPS_SKOPS_TRUSTED_TYPES" in message
    assert trained.state() == before
    assert training_runs(trained) == runs_before

    trusted = trained.run(
        assets=TRAIN_AND_REGISTER,
        run_config=training_config(model_type=CUSTOM, trusted_types=[CUSTOM]),
    )
    assert trusted.success
    assert trained.state()["versions"] == [1, 2]
    assert_loads_without_the_project(trained, "2")


def assert_loads_without_the_project(
    lifecycle, version: str, package: str = "mlops_assets_tests"
) -> None:
    """The class's source travels in the MLflow model (code_paths): a fresh process, as the
    served image, loads and predicts with ``package`` imported from the model's code folder."""
    import subprocess
    import sys

    uri = f"sqlite:///{lifecycle.home / 'mlflow.db'}"
    script = (
        "import sys, mlflow, pandas as pd\n"
        f"assert {package!r} not in sys.modules\n"
        f"mlflow.set_tracking_uri({uri!r}); mlflow.set_registry_uri({uri!r})\n"
        f"model = mlflow.pyfunc.load_model({f'models:/{MODEL}/{version}'!r})\n"
        "rows = pd.DataFrame(model.input_example)\n"
        "print(len(model.predict(rows)))\n"
        f"print(*sys.modules[{package!r}].__path__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=lifecycle.home, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    predicted, folder = done.stdout.strip().splitlines()[-2:]
    assert predicted == "5"
    assert Path(folder).parts[-2:] == ("code", package)


def test_a_class_in_a_namespace_package_trains_registers_serves_and_scores(
    lifecycle, monkeypatch, namespace_package
):
    """The README's my_team/ layout without an __init__.py: the whole lifecycle, every step
    at its first attempt, and the model loads where my_team cannot be imported."""
    monkeypatch.setenv("MLOPS_MODEL_TYPE", TEAM_MODEL)
    monkeypatch.setenv("MLOPS_MODEL_PARAMS", '{"shrink": 0.05}')
    monkeypatch.setenv("MLOPS_SKOPS_TRUSTED_TYPES", TEAM_MODEL)
    result = lifecycle.run()
    assert result.success, step_failure(result, "trained_model")
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    metadata = materialized(result)
    assert metadata["trained_model"]["model_type"].value == TEAM_MODEL
    assert lifecycle.state()["aliases"] == {"champion": "1", "challenger": "1"}
    loads = check_evaluations(result)[("registered_model", "champion_loads_and_predicts")]
    assert loads.passed, loads.description
    assert metadata["predictions"]["model_version"].value == "1"
    assert "drift_report" in metadata
    assert_loads_without_the_project(lifecycle, "1", package="my_team")


def test_an_estimator_that_does_not_fit_the_task_changes_nothing(trained):
    before = trained.state()
    result = trained.run(
        assets=TRAIN_AND_REGISTER,
        run_config=training_config(model_type="sklearn.linear_model.LogisticRegression"),
    )
    message = step_failure(result, "trained_model")
    assert "'sklearn.linear_model.LogisticRegression' is a classifier" in message
    assert trained.state() == before


def test_a_users_training_function_trains_and_registers(trained, monkeypatch):
    function = "mlops_assets_tests.ml.estimators:train_shrunk_least_squares"
    monkeypatch.setenv("MLOPS_TRAINING_FUNCTION", function)
    monkeypatch.setenv("MLOPS_SKOPS_TRUSTED_TYPES", CUSTOM)
    result = trained.run(assets=TRAIN_AND_REGISTER)
    assert result.success
    metadata = materialized(result)["trained_model"]
    assert metadata["model_type"].value == function
    run = client(trained).get_run(metadata["mlflow_run_id"].value)
    assert run.data.params["training_function"] == function
    assert trained.state()["versions"] == [1, 2]
    checks = check_evaluations(result)
    assert checks[("trained_model", "beats_naive_baseline")].passed
    assert checks[("registered_model", "champion_loads_and_predicts")].passed


# A space longer than the 6,000 characters MLflow keeps of a param.
LONG_SPACE = {"alpha": {"type": "categorical", "choices": [i / 100 for i in range(1, 1500)]}}


@pytest.mark.parametrize("space", ["built-in", "long"])
def test_a_search_ahead_of_training_is_tracked_as_nested_runs_with_its_picture(
    trained, monkeypatch, space, tmp_path
):
    monkeypatch.setenv("MLOPS_SEARCH_TRIALS", "4")
    if space == "long":
        assert len(json.dumps(LONG_SPACE)) > 6000
        monkeypatch.setenv("MLOPS_SEARCH_SPACE", json.dumps(LONG_SPACE))
    result = trained.run(assets=TRAIN_AND_REGISTER, run_config=training_config(model_type="ridge"))
    assert result.success
    metadata = materialized(result)["trained_model"]
    assert metadata["search_trials"].value == 4
    assert "alpha" in metadata["search_best_params"].value
    assert metadata["search_history_plot"].value.endswith("search/optimization_history.png")
    mlflow = client(trained)
    parent = mlflow.get_run(metadata["mlflow_run_id"].value)
    children = mlflow.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )
    assert sorted(int(c.data.tags["mlops.search_trial"]) for c in children) == [0, 1, 2, 3]
    assert all("val_rmse" in c.data.metrics and "alpha" in c.data.params for c in children)
    best = min(c.data.metrics["val_rmse"] for c in children)
    assert parent.data.metrics["search_best_val_rmse"] == best
    assert float(parent.data.params["alpha"]) == pytest.approx(
        float(min(children, key=lambda c: c.data.metrics["val_rmse"]).data.params["alpha"])
    )
    artifacts = [a.path for a in mlflow.list_artifacts(parent.info.run_id, "search")]
    assert artifacts == ["search/optimization_history.png", "search/space.json"]
    logged_space = json.loads(
        Path(
            mlflow.download_artifacts(parent.info.run_id, "search/space.json", str(tmp_path))
        ).read_text()
    )
    assert "alpha" in logged_space
    if space == "long":
        assert logged_space == LONG_SPACE

    # Unchanged data and config: the run is reused, and its search read back from MLflow.
    again = trained.run(assets=["trained_model"], run_config=training_config(model_type="ridge"))
    reused = materialized(again)["trained_model"]
    assert reused["trained"].value is False
    assert reused["mlflow_run_id"] == metadata["mlflow_run_id"]
    search_keys = {key for key in metadata if key.startswith("search_")}
    assert search_keys == {key for key in reused if key.startswith("search_")}
    assert {k: reused[k] for k in search_keys} == {k: metadata[k] for k in search_keys}
    assert "alpha" in reused["search_best_params"].value


def trial_runs(lifecycle, parent) -> list:
    return client(lifecycle).search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
        max_results=10_000,
    )


def test_the_search_budget_bounds_its_trials_and_their_logging(trained):
    """Found by an issue: a 10 s budget gave a 32 s step, logging one nested run for each of
    ~170 trials after the search. Each trial is logged as it finishes, inside the budget."""
    budget = 3.0
    result = trained.run(
        assets=["trained_model"],
        run_config=training_config(model_type="ridge", search_timeout_seconds=budget),
    )
    assert result.success
    metadata = materialized(result)["trained_model"]
    mlflow = client(trained)
    parent = mlflow.get_run(metadata["mlflow_run_id"].value)
    trials = trial_runs(trained, parent)
    assert len(trials) == metadata["search_trials"].value == parent.data.metrics["search_trials"]
    assert len(trials) > 1
    # Every trial was logged before the final model was fitted and logged, as it finished.
    model = mlflow.get_logged_model(parent.outputs.model_outputs[0].model_id)
    assert max(t.info.end_time for t in trials) <= model.creation_timestamp
    # The search's own clock holds its trials' logging, and the budget bounds it: the last
    # trial may run past it (no trial is cut short), none starts after it.
    searched = metadata["search_seconds"].value
    assert parent.data.metrics["search_seconds"] == searched
    logging = max(t.info.end_time for t in trials) - min(t.info.start_time for t in trials)
    assert logging / 1000 <= searched
    longest = max(t.data.metrics["trial_seconds"] for t in trials)
    assert searched < budget + longest + 2.0


def test_a_search_whose_trials_all_fail_keeps_them_in_a_failed_run_and_is_not_retried(
    trained,
):
    before = trained.state()
    runs_before = training_runs(trained)
    space = {"alpha": {"type": "categorical", "choices": [-1.0, -2.0]}}  # Ridge refuses both
    result = trained.run(
        assets=["trained_model"],
        run_config=training_config(
            model_type="ridge", search_trials=3, search_space_json=json.dumps(space)
        ),
    )
    assert "all 3 search trials failed" in step_failure(result, "trained_model")
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert trained.state() == before
    mlflow = client(trained)
    [parent] = mlflow.search_runs(
        [e.experiment_id for e in mlflow.search_experiments()],
        filter_string="attributes.status = 'FAILED'",
    )
    assert "mlops.model_uri" not in parent.data.tags
    trials = trial_runs(trained, parent)
    assert sorted(t.data.tags["mlops.trial_state"] for t in trials) == ["failed"] * 3
    assert all("'alpha' parameter of Ridge" in t.data.tags["mlops.trial_error"] for t in trials)
    assert training_runs(trained) == runs_before + 4


def test_a_search_that_cannot_run_fails_clearly_and_changes_nothing(trained, monkeypatch):
    monkeypatch.setenv("MLOPS_SEARCH_TRIALS", "3")
    before = trained.state()
    result = trained.run(
        assets=TRAIN_AND_REGISTER,
        run_config=training_config(model_type="sklearn.linear_model.Lasso"),
    )
    assert "has no built-in search space" in step_failure(result, "trained_model")
    assert trained.state() == before


# How many alias moves the flaky registry below lets fail before it answers.
ALIAS_MOVE_FAULTS = {"left": 0}


def test_a_transient_error_in_the_first_alias_move_is_finished_by_the_retry(lifecycle):
    """Found by a drill: one transient MLflow error in the first alias move left v1
    registered with no alias, and the retry said "already registered, no alias moved" and
    failed its checks, on every later run too. The fault is injected (an MLflow server that
    errs on exactly that call cannot be timed); the retry policy's own retry finishes it."""
    from mlflow.exceptions import MlflowException

    from mlops_assets.definitions import build_definitions, build_resources
    from mlops_assets.resources.mlflow_registry import AliasMove, MlflowResource

    class FlakyRegistry(MlflowResource):
        def move_alias(self, alias: str, version: str, reason: str) -> AliasMove:
            if ALIAS_MOVE_FAULTS["left"] > 0:
                ALIAS_MOVE_FAULTS["left"] -= 1
                raise MlflowException("503 Service Unavailable (injected)")
            return super().move_alias(alias, version, reason)

    resources = build_resources()
    registry = resources["mlflow"]
    assert isinstance(registry, MlflowResource)
    resources["mlflow"] = FlakyRegistry(
        tracking_uri=registry.tracking_uri,
        artifact_root=registry.artifact_root,
        model_name=registry.model_name,
        experiment_name=registry.experiment_name,
    )
    job = build_definitions(resources).resolve_job_def(job_name("refresh_model"))
    ALIAS_MOVE_FAULTS["left"] = 1
    result = job.execute_in_process(
        instance=lifecycle.instance,
        raise_on_error=False,
        asset_selection=[key(a) for a in ("raw_data", "versioned_dataset", *TRAIN_AND_REGISTER)],
    )

    assert result.success
    assert ALIAS_MOVE_FAULTS["left"] == 0
    assert sum(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events) == 1
    assert lifecycle.state()["aliases"] == {"champion": "1", "challenger": "1"}
    assert lifecycle.state()["versions"] == [1]
    registered = materialized(result)["registered_model"]
    assert registered["decision"].value == (
        "finished the registration an interrupted attempt left: no champion yet"
    )
    assert client(lifecycle).get_model_version(MODEL, "1").tags["mlops.registration"] == "decided"
