"""The code location: every model ``mlops_assets/defs/`` declares (a folder per model, each a
ModelLifecycle instance), with the deployment's resources, alerts and executor configured
from env vars."""

from __future__ import annotations

import os
import warnings
from collections.abc import Collection
from pathlib import Path
from typing import Any, TypeVar

from dagster import (
    BetaWarning,
    ComponentTree,
    Definitions,
    EnvVar,
    ExecutorDefinition,
    PreviewWarning,
    definitions,
    in_process_executor,
)

from mlops_assets.components.lifecycle.automation.alerts import build_alert_sensors
from mlops_assets.components.lifecycle.component import ModelLifecycle
from mlops_assets.components.lifecycle.scope import ModelScope
from mlops_assets.lib.console import console_logger
from mlops_assets.lib.env_settings import env_fields
from mlops_assets.lib.pod_resources import standard_pod
from mlops_assets.resources.asset_values import RunScopedIOManager
from mlops_assets.resources.dataset_source import DatasetSourceResource
from mlops_assets.resources.image_builder import ImageBuilderResource
from mlops_assets.resources.mlflow_registry import MlflowResource
from mlops_assets.resources.model_rollout import ModelRolloutResource
from mlops_assets.resources.notifier import NotifierResource
from mlops_assets.resources.object_store import ObjectStoreResource, S3Config
from mlops_assets.settings import home, setting

R = TypeVar("R")

# Dagster itself re-creates every sensor when it builds the repository, passing
# SensorDefinition's beta `owners` parameter; nothing here uses it. Without this filter (one
# exact message) every process that loads the code location, each run worker and step, prints
# the same BetaWarning. pytest resets filters per test, so pyproject.toml names it for the suite.
warnings.filterwarnings(
    "ignore",
    message=r"Parameter `owners` of initializer `SensorDefinition\.__init__` is currently in beta",
    category=BetaWarning,
)
# The same for what Dagster does to a component's definitions: it attaches code references
# (the defs.yaml line that declares each, which the UI shows), copying each sensor with every
# parameter it has, the beta ones too.
warnings.filterwarnings(
    "ignore",
    message=r"Class `(CodeReferencesMetadataValue|LocalFileCodeReference)` is currently in beta",
    category=BetaWarning,
)
warnings.filterwarnings(
    "ignore",
    message=r"Parameter `use_user_code_server` of initializer "
    r"`AutomationConditionSensorDefinition\.__init__` is currently in beta",
    category=BetaWarning,
)
# ... and each asset check, which the copy returns as an AssetsDefinition that the repository
# turns back into an AssetChecksDefinition, with every parameter.
warnings.filterwarnings(
    "ignore",
    message=r"Parameter `execution_type` of function `AssetsDefinition\.__init__` is currently in beta",
    category=BetaWarning,
)


def k8s_executor_config() -> dict[str, object]:
    """Step pods of the standard size (MLOPS_K8S_*, read when the definitions are built); each
    model's trained_model step has its model's training size in its own op tags."""
    return {"step_k8s_config": standard_pod()}


EXECUTORS = ("in_process", "multiprocess", "k8s_job")


def executor() -> ExecutorDefinition | None:
    """How a run's steps execute (MLOPS_EXECUTOR).

    in_process (default): every step in the run's own process, so the libraries a step needs
    (pandas, scikit-learn, MLflow, Evidently) are imported once per run, not once per step.
    multiprocess: Dagster's default, a process per step. k8s_job: every step in its own
    Kubernetes Job (k8s_executor_config).
    """
    choice = setting("MLOPS_EXECUTOR")
    if choice == "in_process":
        return in_process_executor
    if choice == "multiprocess":
        return None
    if choice != "k8s_job":
        raise ValueError(f"MLOPS_EXECUTOR must be one of {', '.join(EXECUTORS)}, not '{choice}'")
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor.configured(k8s_executor_config())


def from_env(resource: type[R], secrets: Collection[str] | None = None, **fixed: Any) -> R:
    """``resource`` configured by its settings: a field declared with ``env_field`` takes its
    variable's text when that is set (pydantic coerces it), else the field's default. A secret
    field named in ``secrets`` is an EnvVar: Dagster resolves it when a run or tick starts and
    shows only its name; one not named stays empty (its feature is off). Without ``secrets``,
    a resource with ``secrets_needed()`` names them from its own configuration."""
    fields = env_fields(resource)
    values: dict[str, Any] = {}
    for field_name, entry in fields.items():
        if field_name in fixed or entry.secret:
            continue
        text = os.environ.get(entry.name, "")
        if text:
            values[field_name] = text
    built = resource(**values, **fixed)
    if secrets is None:
        needed = getattr(built, "secrets_needed", None)
        secrets = needed() if needed else ()
    if not secrets:
        return built
    wired = {f: EnvVar(e.name) for f, e in fields.items() if e.secret and f in secrets}
    return resource(**values, **wired, **fixed)


def build_resources() -> dict[str, object]:
    """Every resource from its settings; only the values derived from MLOPS_HOME are set here."""
    root = home()
    s3 = from_env(S3Config)  # one S3 configuration: object store, s3:// sources
    tracking_uri = setting("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}"
    object_store = ObjectStoreResource(
        root=setting("MLOPS_OBJECT_STORE_ROOT") or str(root / "store"), s3=s3
    )
    return {
        # Asset values beside the data, one per run: on Kubernetes every run (and with
        # k8s_job_executor every step) is a pod with a file system of its own.
        "io_manager": RunScopedIOManager(object_store=object_store),
        "object_store": object_store,
        "dataset_source": from_env(DatasetSourceResource, s3=s3),
        "mlflow": from_env(
            MlflowResource,
            tracking_uri=tracking_uri,
            artifact_root=str(root / "mlartifacts") if tracking_uri.startswith("sqlite") else "",
        ),
        "image_builder": from_env(ImageBuilderResource),
        "model_rollout": from_env(ModelRolloutResource),
        "notifier": from_env(NotifierResource),
    }


def component_tree() -> ComponentTree:
    """The tree of ``mlops_assets/defs/``, from the module itself: the same wherever the package
    is installed (a wheel has no pyproject.toml to find it by), and without parsing
    pyproject.toml each time the definitions are built (tests build them often)."""
    import mlops_assets.defs

    return ComponentTree.from_module(mlops_assets.defs, Path(__file__).resolve().parent.parent)


def model_scopes() -> dict[str, ModelScope]:
    """Every model ``defs/`` declares, as its definitions see it, by name: for tools and
    benchmarks that use a model's view of the deployment's resources outside a run."""
    tree = component_tree()
    found = {}
    for folder in sorted(p.parent for p in tree.defs_module_path.glob("*/defs.yaml")):
        relative = folder.relative_to(tree.defs_module_path)
        component = tree.load_component(relative, expected_type=ModelLifecycle)
        found[component.name] = component.scope(folder)
    return found


def load_defs_folder(tree: ComponentTree | None = None) -> Definitions:
    """What ``defs/`` declares (one ModelLifecycle instance per model), loaded as
    ``load_from_defs_folder`` does but without its last step: enriching the location with a
    JSON catalogue of every installed component type.

    That catalogue (for the UI's component browser and project scaffolding) imports each
    plugin's components, dagster_aws's among them (boto3, sqlalchemy, alembic), and generates
    their pydantic schemas: about a second and 700 modules in every process that loads the
    location (each run worker, step, gRPC server, test); `dg list components` and `dg docs`
    build it when asked. The tree stays on the definitions, as Dagster attaches it.
    """
    tree = tree or component_tree()
    with warnings.catch_warnings():
        # load_from_defs_folder silences these too: its own preview loader, called for every
        # plain Python module in defs/.
        warnings.filterwarnings(
            "ignore",
            message=r"Function `load_definitions_from_modules?` is currently in preview",
            category=PreviewWarning,
        )
        folder = tree.build_defs_at_path(tree.defs_module_path)
    return Definitions.merge(folder, Definitions(component_tree=tree))


def build_definitions(resources: dict[str, object] | None = None) -> Definitions:
    """Every model in ``defs/`` (settings read now, not on import), the deployment's alerts,
    and the resources from the environment, or the ones given (tests)."""
    tree = component_tree()
    models = load_defs_folder(tree)
    routes = {m.name: m.alert_route() for m in tree.get_all_components(of_type=ModelLifecycle)}
    return Definitions.merge(
        models,
        Definitions(
            resources=build_resources() if resources is None else resources,
            sensors=build_alert_sensors(int(setting("MLOPS_SENSOR_INTERVAL_SECONDS")), routes),
            executor=executor(),
            loggers={"console": console_logger},
        ),
    )


@definitions
def defs() -> Definitions:
    return build_definitions()
