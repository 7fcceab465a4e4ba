"""The ModelLifecycle component: every model a defs.yaml, each its own graph in one deployment.

The repository ships two instances: the house-price regressor (its attributes templated from
the MLOPS_* variables that configured it before) and a wine-cultivar classifier on the table
scikit-learn ships. These tests hold what a team relies on when it adds a model: one model's
settings, data, failures and automation never touch another's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster import AssetKey, AutomationConditionSensorDefinition, ScheduleDefinition

from mlops_assets.components.lifecycle.component import ModelLifecycle
from mlops_assets.components.lifecycle.settings import PolicySettings
from mlops_assets.resources.model_rollout import ModelRolloutResource
from mlops_assets_tests.conftest import PARTITION, Lifecycle, check_evaluations, step_failure

ROOT = Path(__file__).resolve().parents[2]
DEFS = ROOT / "mlops_assets" / "defs"
WINE = "wine_cultivars"
WINE_MODEL = "wine-cultivar-classifier"
WINE_DATASET = "wine_cultivars"


def definitions() -> Any:
    from mlops_assets.definitions import build_definitions, build_resources

    return build_definitions(build_resources())


def scopes() -> dict[str, Any]:
    """Each shipped model as its component builds it from its defs.yaml now."""
    from mlops_assets.definitions import model_scopes

    return model_scopes()


def test_the_house_price_instance_reads_every_model_setting_it_had() -> None:
    """Existing users are not stranded: every MLOPS_* variable that configured the one model
    is templated in its defs.yaml, so it still configures the house-price model."""
    text = (DEFS / "house_prices" / "defs.yaml").read_text()
    wanted = [  # every variable the one model was configured by, before it was a component
        *("MLOPS_PROMOTION_POLICY", "MLOPS_PROMOTION_METRIC", "MLOPS_MIN_IMPROVEMENT"),
        *("MLOPS_MIN_R2", "MLOPS_MIN_BALANCED_ACCURACY", "MLOPS_BASELINE_MARGIN"),
        *("MLOPS_DRIFT_SHARE_THRESHOLD", "MLOPS_QUALITY_TOLERANCE", "MLOPS_MAX_QUARANTINE_SHARE"),
        *("MLOPS_DRIFT_SAMPLE_ROWS", "MLOPS_DRIFT_POLICY", "MLOPS_TRAFFIC_MAX_ERROR_SHARE"),
        *("MLOPS_TRAFFIC_MAX_DROPPED_SHARE", "MLOPS_RETRAIN_COOLDOWN_MINUTES"),
        *("MLOPS_MODEL_TYPE", "MLOPS_MODEL_PARAMS", "MLOPS_TRAINING_FUNCTION"),
        *("MLOPS_SEARCH_TRIALS", "MLOPS_SEARCH_TIMEOUT_SECONDS", "MLOPS_SEARCH_SPACE"),
        "MLOPS_SKOPS_TRUSTED_TYPES",
        *("MLOPS_DEPLOY_KIND", "MLOPS_DEPLOY_REPLICAS", "MLOPS_DEPLOY_CPU_LIMIT"),
        *("MLOPS_TRAFFIC_LOG", "MLOPS_SERVING_PROTOCOL", "MLOPS_SERVING_BATCH"),
        *("MLOPS_SOURCE_URI", "MLOPS_INCOMING_URI", "MLOPS_DATASET_SPEC"),
        *("MLOPS_MODEL_NAME", "MLOPS_EXPERIMENT", "MLOPS_PARTITIONS_START", "MLOPS_AUTOMATION"),
        *("MLOPS_SENSOR_INTERVAL_SECONDS", "MLOPS_SCORING_CRON", "MLOPS_RETRAIN_CRON"),
        *("MLOPS_SCHEDULE_TIMEZONE", "MLOPS_INCOMING_LOOKBACK_DAYS"),
    ]
    missing = [name for name in wanted if f"env.{name}" not in text]
    assert missing == []


def test_a_setting_reaches_its_own_model_only(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLOPS_* set for the house-price model, with types coerced; the wine model keeps its own
    defs.yaml's values and the defaults; empty means unset, as it always did."""
    monkeypatch.setenv("MLOPS_MIN_R2", "0.7")
    monkeypatch.setenv("MLOPS_SEARCH_TRIALS", "3")
    monkeypatch.setenv("MLOPS_MODEL_PARAMS", '{"max_iter": 50}')
    monkeypatch.setenv("MLOPS_DRIFT_POLICY", "rollback")
    monkeypatch.setenv("MLOPS_AUTOMATION", "running")
    monkeypatch.setenv("MLOPS_SCORING_CRON", "30 2 * * *")
    monkeypatch.setenv("MLOPS_MODEL_NAME", "prices")
    monkeypatch.setenv("MLOPS_SERVING_PROTOCOL", "v2")
    monkeypatch.setenv("MLOPS_PROMOTION_POLICY", "")
    found = scopes()
    assert set(found) == {"house_prices", WINE}
    house, wine = found["house_prices"], found[WINE]
    assert (house.policy.min_r2, house.policy.drift_policy) == (0.7, "rollback")
    assert house.policy.promotion_policy == "auto"  # empty: the default
    assert (house.training.search_trials, house.training.model_params) == (3, '{"max_iter": 50}')
    assert (house.automation.running, house.automation.scoring_cron) == (True, "30 2 * * *")
    assert house.registered_model == "prices"
    assert house.serving == {"protocol": "v2"}
    assert house.data["source_uri"].startswith("sample://house-prices")
    assert (wine.policy.min_r2, wine.policy.drift_policy) == (0.5, PolicySettings().drift_policy)
    assert wine.policy.min_balanced_accuracy == 0.8
    assert (wine.training.search_trials, wine.training.model_type) == (0, "logistic_regression")
    # The deployment's switch turns both models' automation on; the cron is the house model's.
    assert (wine.automation.running, wine.automation.scoring_cron) == (True, "0 1 * * *")
    assert (wine.registered_model, wine.serving) == (WINE_MODEL, {})
    assert wine.data["spec_path"] == str(DEFS / WINE / "spec.json")


def test_every_job_schedule_and_sensor_belongs_to_one_model(clean_env: None) -> None:
    """Named by its model, each targets only its model's assets: a sensor of one model can
    launch nothing of another's."""
    defs = definitions()
    repository = defs.get_repository_def()
    for job in repository.get_all_jobs():
        if job.name == "__ASSET_JOB":
            continue
        model = job.name.split("_mlops_")[0] if "_mlops_" in job.name else None
        owner = next(m for m in ("house_prices", WINE) if job.name.startswith(f"{m}_"))
        assert model in (None, owner)
        keys = job.asset_layer.asset_graph.get_all_asset_keys() if job.asset_layer else set()
        assert {k.path[0] for k in keys} <= {owner}, job.name
    for instigator in [*repository.schedule_defs, *repository.sensor_defs]:
        if instigator.name in ("asset_check_alerts", "run_failure_alerts"):
            continue  # the deployment's: one alert per failure, whichever model
        owner = next(m for m in ("house_prices", WINE) if instigator.name.startswith(f"{m}_"))
        if isinstance(instigator, ScheduleDefinition):
            targets = [instigator.job_name]
        elif isinstance(instigator, AutomationConditionSensorDefinition):
            keys = instigator.asset_selection.resolve(repository.asset_graph)
            assert {k.path[0] for k in keys} == {owner}, instigator.name
            continue
        else:
            targets = [t.job_name for t in instigator.targets]
        assert all(t.startswith(f"{owner}_") for t in targets), (instigator.name, targets)


def test_two_models_in_one_deployment_and_a_rejected_file_touches_only_its_own(
    lifecycle: Lifecycle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both lifecycles run in one instance; then the house-price model's source breaks its
    contract: its run fails on its own check, and the classifier's dataset versions, model
    versions, aliases and checks are as they were."""
    house = lifecycle.run("mlops_lifecycle")
    wine = lifecycle.run(f"{WINE}_mlops_lifecycle")
    assert house.success
    assert wine.success
    wine_checks = {k: v.passed for k, v in check_evaluations(wine).items()}
    assert len(wine_checks) == 19
    assert all(wine_checks.values()), wine_checks
    assert wine.get_asset_materialization_events()[0].asset_key.path[0] == WINE
    wine_state = lifecycle.state(WINE_DATASET, WINE_MODEL)
    house_state = lifecycle.state()
    assert wine_state["aliases"] == {"challenger": "1", "champion": "1"}
    assert house_state["aliases"] == {"challenger": "1", "champion": "1"}

    broken = tmp_path / "broken.csv"
    broken.write_text("area,bedrooms\n100,2\n")  # no price, most features missing
    monkeypatch.setenv("MLOPS_SOURCE_URI", str(broken))
    failed = lifecycle.run("refresh_model", partition=None)
    assert not failed.success
    assert "required_columns_present" in step_failure(failed, "raw_data") or any(
        not e.passed for e in failed.get_asset_check_evaluations()
    )
    assert lifecycle.state() == house_state
    assert lifecycle.state(WINE_DATASET, WINE_MODEL) == wine_state
    again = lifecycle.run(f"{WINE}_refresh_model", partition=None)
    assert again.success  # the classifier's own loop goes on
    latest = lifecycle.instance.get_latest_materialization_event(AssetKey([WINE, "raw_data"]))
    assert latest is not None
    assert latest.run_id == again.run_id


def test_a_misnamed_model_is_refused_with_the_rule() -> None:
    with pytest.raises(ValueError, match="must start with a letter and hold only letters"):
        ModelLifecycle.model_validate(
            {"name": "house-prices", "registered_model": "x", "data": {"source": "a.csv"}}
        )


def test_the_wine_instance_is_what_its_yaml_says() -> None:
    attributes = yaml.safe_load((DEFS / WINE / "defs.yaml").read_text())["attributes"]
    assert attributes["data"]["source"] == "sample://wine"
    for model in scopes().values():  # the tests' day is a partition of both models
        assert PARTITION in model.partitions.get_partition_keys()


def test_each_model_sizes_its_own_pods(clean_env: None) -> None:
    """On Kubernetes: the wine model's defs.yaml asks for smaller training pods, for its run
    pods (job tags) and its training step pod (op tags); the house-price model keeps the
    deployment's MLOPS_K8S_* sizes."""
    import json

    from mlops_assets.lib.pod_resources import K8S_CONFIG_TAG, pod_size, training_pod

    defs = definitions()

    def sizes(tags: dict[str, str]) -> dict[str, Any]:
        return json.loads(tags[K8S_CONFIG_TAG])

    small = pod_size("1", "1Gi", "2Gi")
    assert sizes(defs.resolve_job_def(f"{WINE}_refresh_model").tags) == small
    assert sizes(defs.resolve_assets_def(AssetKey([WINE, "trained_model"])).op.tags) == small
    house = defs.resolve_job_def("house_prices_refresh_model").tags
    assert sizes(house) == training_pod()
    assert training_pod()["container_config"]["resources"]["requests"]["cpu"] == "2"


def test_the_house_price_model_keeps_the_names_its_state_is_stored_under(clean_env: None) -> None:
    """How an existing .mlops/ is found again under the new asset keys: everything stored is
    named by the registered model, the experiment and the dataset (the spec's name), and the
    house-price instance keeps the ones the single model had by default; only Dagster's own
    names (asset keys, jobs) gained the model's prefix."""
    from mlops_assets.resources.dataset_source import DatasetSourceResource

    house = scopes()["house_prices"]
    assert house.registry == {
        "model_name": "house-price-regressor",
        "experiment_name": "house-prices",
    }
    source = DatasetSourceResource().model_copy(update=dict(house.data))
    assert source.spec.name == "house_prices"
    assert house.key("raw_data") == AssetKey(["house_prices", "raw_data"])


def test_a_trained_state_goes_on_under_the_components_names(
    trained: Lifecycle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A state trained before (data-v1.0.0, model v1 champion) is continued: the next run
    with new data makes data-v1.1.0 and v2, gated against the same champion."""
    assert trained.state()["versions"] == [1]
    monkeypatch.setenv("MLOPS_SOURCE_URI", "sample://house-prices?rows=1500&seed=7")
    assert trained.run("refresh_model", partition=None).success
    after = trained.state()
    assert after["versions"] == [1, 2]
    assert after["tags"] == ["data-v1.0.0.json", "data-v1.1.0.json"]


def test_a_model_sets_exactly_the_model_fields_of_the_deployment_resources(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One home each: the fields of a deployment resource that are a model's own
    (model_field) are the ones a model's component sets, no variable configures them for the
    deployment, and none is also a deployment setting."""
    from mlops_assets.components.lifecycle.component import ROLLOUT_TARGET, ServingAttributes
    from mlops_assets.definitions import build_resources
    from mlops_assets.lib.env_settings import env_fields, model_fields_of
    from mlops_assets.resources.dataset_source import DatasetSourceResource
    from mlops_assets.resources.mlflow_registry import MlflowResource

    classes = {
        "dataset_source": DatasetSourceResource,
        "mlflow": MlflowResource,
        "model_rollout": ModelRolloutResource,
    }
    house = scopes()["house_prices"]
    views = house.views()
    for name in ("dataset_source", "mlflow"):  # every model sets all of them
        assert set(views[name]) == set(model_fields_of(classes[name])), name
    assert set(ServingAttributes.model_fields) == {
        *model_fields_of(ModelRolloutResource),
        *ROLLOUT_TARGET,  # the deployment's, unless a model names its own
    }
    for cls in classes.values():
        assert not set(model_fields_of(cls)) & set(env_fields(cls)), cls.__name__

    monkeypatch.setenv("MLOPS_SOURCE_URI", "/data/elsewhere.csv")
    monkeypatch.setenv("MLOPS_MODEL_NAME", "prices")
    monkeypatch.setenv("MLOPS_SERVING_PROTOCOL", "v2")
    deployment = build_resources()
    assert deployment["dataset_source"].source_uri == ""  # type: ignore[attr-defined]
    assert deployment["mlflow"].model_name == ""  # type: ignore[attr-defined]
    assert deployment["model_rollout"].protocol == "mlflow"  # type: ignore[attr-defined]
    house = scopes()["house_prices"]  # ... the house model's component reads them
    seen = house.view("dataset_source", deployment["dataset_source"])
    assert (seen.source_uri, house.view("mlflow", deployment["mlflow"]).model_name) == (
        "/data/elsewhere.csv",
        "prices",
    )
    assert house.view("model_rollout", deployment["model_rollout"]).protocol == "v2"


def test_a_model_may_carry_its_spec_inline_and_name_its_own_rollout_target(
    tmp_path: Path,
) -> None:
    """data.spec may be the spec itself (the fields of a spec file), checked when the
    component loads as a file is; serving.namespace and serving.cluster send one model's
    rollout elsewhere, the deployment's applying to every model that names none."""
    import json

    from mlops_assets.resources.dataset_source import DatasetSourceResource

    spec = json.loads((DEFS / WINE / "spec.json").read_text())
    attributes = {
        "name": "cellar",
        "registered_model": "cellar-classifier",
        "data": {"source": "sample://wine", "spec": spec},
        "serving": {"namespace": "team-cellar"},
    }
    model = ModelLifecycle.resolve_from_dict(attributes).scope(tmp_path)
    source = model.view("dataset_source", DatasetSourceResource())
    assert (source.spec.name, source.spec.task) == ("wine_cultivars", "classification")
    assert (
        source.spec.feature_columns
        == DatasetSourceResource(spec_path=str(DEFS / WINE / "spec.json")).spec.feature_columns
    )
    deployment = ModelRolloutResource(cluster="in-cluster", namespace="mlops-serving")
    rollout = model.view("model_rollout", deployment)
    assert (rollout.cluster, rollout.namespace) == ("in-cluster", "team-cellar")
    wine = scopes()[WINE].view("model_rollout", deployment)
    assert wine.namespace == "mlops-serving"

    broken = {**spec, "task": "ranking"}
    with pytest.raises(ValueError, match=r"model 'cellar' \(.*defs\.yaml\): data\.spec: .*ranking"):
        ModelLifecycle.resolve_from_dict(
            {**attributes, "data": {"source": "sample://wine", "spec": broken}}
        ).scope(tmp_path)
