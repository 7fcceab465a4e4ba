"""The code location as Dagster and a new user see it."""

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from dagster import AssetKey, Definitions

from mlops_assets.variables import all_settings
from mlops_assets_tests.conftest import MODEL, job_name, short

ROOT = Path(__file__).resolve().parents[1]

EXPECTED_CHECKS = {
    "raw_data": {
        "parses_as_table",
        "has_data_rows",
        "required_columns_present",
        "values_match_schema",
        "duplicate_share_within_limit",
    },
    "versioned_dataset": {
        "files_match_manifest",
        "no_train_test_leakage",
        "split_sizes_as_configured",
    },
    "trained_model": {"beats_naive_baseline", "meets_metric_thresholds"},
    "registered_model": {
        "challenger_alias_points_here",
        "champion_not_regressed",
        "champion_loads_and_predicts",
    },
    "predictions": {
        "one_prediction_per_row",
        "quarantine_share_within_limit",
        "no_missing_predictions",
        "predictions_in_plausible_range",
    },
    "drift_report": {"drift_share_below_threshold", "quality_not_degraded"},
    "served_image": {
        "image_exists_at_digest",
        "serves_champion_predictions",
        "runs_as_non_root",
    },
    "model_deployment": {"runs_the_served_image"},
    "served_traffic": {
        "traffic_matches_signature",
        "refused_share_below_threshold",
        "unlogged_share_below_threshold",
    },
    "traffic_drift_report": {"drift_share_below_threshold", "quality_not_degraded"},
}
SERVING = {"served_image", "model_deployment"}
TRAFFIC = {"served_traffic", "traffic_drift_report"}
# The models the repository ships, each a ModelLifecycle instance in defs/.
MODELS = ("house_prices", "wine_cultivars")


def of_model(model: str, keys: set[str]) -> set[str]:
    """Asset keys of ``model`` among ``keys``, without its prefix."""
    return {k.removeprefix(f"{model}/") for k in keys if k.startswith(f"{model}/")}


@pytest.fixture
def defs() -> Definitions:
    """The code location as the environment configures it now."""
    from mlops_assets.definitions import build_definitions

    return build_definitions()


@pytest.mark.parametrize("model", MODELS)
def test_graph_has_the_design_assets_edges_and_checks(defs: Definitions, model: str) -> None:
    """Every model has the whole graph under its own prefix, in its own group, and no edge
    crosses from one model to another."""
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {f"{m}/{a}" for m in MODELS for a in EXPECTED_CHECKS}
    assert {graph.get(k).group_name for k in graph.get_all_asset_keys() if k.path[0] == model} == {
        model
    }
    parents = {
        k: of_model(model, {p.to_user_string() for p in graph.get(graph_key).parent_keys})
        for graph_key in graph.get_all_asset_keys()
        if graph_key.path[0] == model
        for k in [graph_key.path[-1]]
    }
    for asset in parents:
        all_parents = graph.get(AssetKey([model, asset])).parent_keys
        assert {p.path[0] for p in all_parents} <= {model}, f"{asset} depends on another model"
    assert parents["versioned_dataset"] == {"raw_data"}
    assert parents["trained_model"] == {"versioned_dataset"}
    assert parents["registered_model"] == {"trained_model"}
    assert parents["predictions"] == {"registered_model"}
    assert parents["drift_report"] == {"predictions", "versioned_dataset"}
    assert parents["served_image"] == {"registered_model"}
    assert parents["model_deployment"] == {"served_image"}
    assert parents["served_traffic"] == set()  # what the served image wrote to the store
    assert parents["traffic_drift_report"] == {"served_traffic", "versioned_dataset"}
    checks: dict[str, set[str]] = {}
    for check_key in graph.asset_check_keys:
        if check_key.asset_key.path[0] == model:
            checks.setdefault(check_key.asset_key.path[-1], set()).add(check_key.name)
    assert checks == EXPECTED_CHECKS


def test_every_check_has_a_description(defs: Definitions) -> None:
    for checks_def in defs.asset_checks or []:
        for spec in checks_def.check_specs:
            assert spec.description, f"{spec.key} has no description"


def test_loading_the_code_location_loads_no_heavy_library():
    code = (
        "import sys, mlops_assets.definitions as location\n"
        "location.build_definitions()\n"
        "print(sorted(m for m in ('mlflow', 'evidently', 'sklearn', 'scipy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_code_location_does_not_ship_the_local_stack():
    """mlops_assets.stack starts servers for development; the runtime and the user-code image
    must not need it, so nothing outside it imports it, not even lazily inside a function."""
    package = ROOT / "mlops_assets"
    importers = [
        path.relative_to(ROOT).as_posix()
        for path in package.rglob("*.py")
        if "stack" not in path.relative_to(package).parts
        and re.search(r"mlops_assets\.stack|from \.+stack", path.read_text())
    ]
    assert importers == []


@pytest.mark.slow
def test_dg_checks_and_lists_the_code_location():
    """`dg check defs` and `dg list defs` (the current Dagster project tooling) load it."""
    dg = str(Path(sys.executable).with_name("dg"))
    check = subprocess.run([dg, "check", "defs"], capture_output=True, text=True, cwd=ROOT)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "All definitions loaded successfully" in check.stdout + check.stderr
    listed = subprocess.run(
        [dg, "list", "defs", "--json"], capture_output=True, text=True, cwd=ROOT, check=True
    )
    found = json.loads(listed.stdout)
    assert {a["asset_key"] for a in found["assets"]} == {
        f"{m}/{a}" for m in MODELS for a in EXPECTED_CHECKS
    }
    checks = {(c["asset_key"], c["name"]) for c in found["asset_checks"]}
    assert checks == {
        (f"{m}/{asset}", name)
        for m in MODELS
        for asset, names in EXPECTED_CHECKS.items()
        for name in names
    }
    assert {s["name"] for s in found["schedules"]} == {
        f"{m}_{s}" for m in MODELS for s in ("daily_scoring", "periodic_retrain", "daily_traffic")
    }
    assert "model_rollout" in {r["name"] for r in found["resources"]}


def test_readme_documents_every_setting_with_its_default():
    """The README's table is the one settings.py prints from the resource fields and the other
    settings: every setting, its default and its description, nothing stale."""
    from mlops_assets.variables import markdown_table

    readme = (ROOT / "README.md").read_text()
    assert markdown_table() in readme, "README's settings table is stale: paste the output of "
    "`python -m mlops_assets.variables`"
    for setting in all_settings():
        row = re.search(rf"^\| `{setting.name}` \| (.*?) \|", readme, re.MULTILINE)
        assert row, f"README does not list {setting.name}"
        if setting.default:
            assert setting.default in row.group(1), f"README default of {setting.name} is stale"


def test_every_resource_setting_reaches_its_field(monkeypatch: pytest.MonkeyPatch) -> None:
    """The wiring is derived from the fields: each setting of a resource, set in the
    environment, arrives in the built resource coerced to the field's type; secrets arrive as
    EnvVar (by name), never as their value."""
    from dagster import EnvVar

    from mlops_assets.definitions import from_env
    from mlops_assets.settings import env_fields, resource_classes

    samples = {str: "set-by-env", int: "7", float: "0.75", bool: "true"}
    for resource in resource_classes():
        fields = env_fields(resource)
        assert fields, f"{resource.__name__} has no settings"
        for field_name, entry in fields.items():
            annotation = resource.model_fields[field_name].annotation
            monkeypatch.setenv(entry.name, samples[annotation])
        # Fields no setting configures (derived in build_resources): any valid value.
        required: dict[str, Any] = {
            name: "placeholder" for name, f in resource.model_fields.items() if f.is_required()
        }
        built = from_env(resource, secrets=[n for n, e in fields.items() if e.secret], **required)
        for field_name, entry in fields.items():
            value = getattr(built, field_name)
            if entry.secret:
                # An EnvVar is configured by its name; the value appears only in a run.
                assert isinstance(value, EnvVar), field_name
                assert value == entry.name != samples[str], field_name
                continue
            annotation = resource.model_fields[field_name].annotation
            expected = {str: "set-by-env", int: 7, float: 0.75, bool: True}[annotation]
            assert value == expected, f"{entry.name} did not reach {resource.__name__}.{field_name}"


@pytest.mark.slow
def test_dagster_validates_the_workspace():
    dagster = Path(sys.executable).parent / "dagster"
    out = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_lifecycle_runs_without_an_image_builder_and_serving_has_its_own_job(
    defs: Definitions,
) -> None:
    def selected(job: str) -> tuple[set[str], set[str]]:
        graph = defs.resolve_job_def(job_name(job)).asset_layer.asset_graph
        assets = {short(k) for k in graph.executable_asset_keys}
        checks = {k.name for k in graph.asset_check_keys}
        return assets, checks

    lifecycle_assets, lifecycle_checks = selected("mlops_lifecycle")
    serving_checks = EXPECTED_CHECKS["served_image"] | EXPECTED_CHECKS["model_deployment"]
    assert lifecycle_assets == set(EXPECTED_CHECKS) - SERVING - TRAFFIC
    assert not lifecycle_checks & serving_checks
    assert selected("serve_champion") == (SERVING, serving_checks)
    assert selected("collect_traffic") == (
        TRAFFIC,
        EXPECTED_CHECKS["served_traffic"] | EXPECTED_CHECKS["traffic_drift_report"],
    )


def test_automation_jobs_select_the_model_chain_and_the_scoring_pair(defs: Definitions) -> None:
    def assets_of(job: str) -> set[str]:
        graph = defs.resolve_job_def(job_name(job)).asset_layer.asset_graph
        return {short(k) for k in graph.executable_asset_keys}

    assert assets_of("refresh_model") == {
        "raw_data",
        "versioned_dataset",
        "trained_model",
        "registered_model",
    }
    assert assets_of("score_batch") == {"predictions", "drift_report"}


def automation_status(**env: str) -> dict[str, str]:
    """Default status of each schedule and sensor of the code location built with ``env``
    (settings are read when the definitions are built, so no new process is needed)."""
    from mlops_assets.definitions import build_definitions

    with pytest.MonkeyPatch.context() as patch:
        for name in ("MLOPS_AUTOMATION", "MLOPS_IMAGE_REGISTRY"):
            patch.delenv(name, raising=False)
        for name, value in env.items():
            patch.setenv(name, value)
        repository = build_definitions().get_repository_def()
    return {
        d.name.removeprefix(f"{MODEL}_"): d.default_status.value
        for d in [*repository.schedule_defs, *repository.sensor_defs]
        if not d.name.startswith("wine_cultivars_")  # the house-price model's MLOPS_* say
    }


def test_automation_ships_stopped_and_alerts_ship_running():
    alerts = {"asset_check_alerts": "RUNNING", "run_failure_alerts": "RUNNING"}
    launchers = [
        "daily_scoring",
        "periodic_retrain",
        "daily_traffic",
        "new_labelled_data",
        "incoming_batches",
        "traffic_labels",
        "drift_policy",
        "champion_image",
    ]
    assert automation_status() == {**dict.fromkeys(launchers, "STOPPED"), **alerts}
    running = {**dict.fromkeys(launchers, "RUNNING"), **alerts}
    # champion_image builds images: it follows the champion only where a registry is set.
    assert automation_status(MLOPS_AUTOMATION="running") == {**running, "champion_image": "STOPPED"}
    assert (
        automation_status(MLOPS_AUTOMATION="running", MLOPS_IMAGE_REGISTRY="registry.test/ml")
        == running
    )


def test_alert_secrets_are_env_vars_wherever_their_channel_is_on(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A secret is never read into config: with its channel on it is an EnvVar (resolved when
    a tick or run starts, so a Secret mounted only in run pods still works, and a missing one
    fails loudly there); with its channel off it is not wired at all."""
    from dagster import EnvVar

    from mlops_assets.definitions import build_resources

    quiet = build_resources()["notifier"]
    assert (quiet.webhook_url, quiet.smtp_password) == ("", "")  # type: ignore[attr-defined]
    monkeypatch.setenv("MLOPS_ALERT_CHANNELS", "log,webhook,email")
    monkeypatch.setenv("MLOPS_SMTP_USERNAME", "alerts")
    loud = build_resources()["notifier"]
    for field, name in (
        ("webhook_url", "MLOPS_ALERT_WEBHOOK_URL"),
        ("smtp_password", "MLOPS_SMTP_PASSWORD"),
    ):
        value = getattr(loud, field)
        assert isinstance(value, EnvVar)
        assert value == name


def test_a_run_executes_its_steps_in_one_process_unless_configured_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlops_assets.definitions import build_definitions

    def job_executor() -> str:
        return build_definitions().resolve_job_def(job_name("mlops_lifecycle")).executor_def.name

    monkeypatch.delenv("MLOPS_EXECUTOR", raising=False)
    assert job_executor() == "in_process"
    monkeypatch.setenv("MLOPS_EXECUTOR", "multiprocess")
    assert (
        job_executor() == "multi_or_in_process_executor"
    )  # Dagster's own default: a process per step
    monkeypatch.setenv("MLOPS_EXECUTOR", "k8s_job")
    assert job_executor() == "k8s"
    monkeypatch.setenv("MLOPS_EXECUTOR", "threads")
    with pytest.raises(ValueError, match="one of in_process, multiprocess, k8s_job, not 'threads'"):
        build_definitions()
