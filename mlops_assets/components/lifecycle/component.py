"""ModelLifecycle: one model's whole lifecycle, declared by one ``defs.yaml``.

Every instance builds, for its model, the asset graph (raw_data .. drift_report, served_image,
model_deployment, served_traffic, traffic_drift_report) with its checks under the key prefix
``<name>/``, in the group ``<name>``, on its own daily partitions, and its jobs, schedules and
sensors named ``<name>_<job>``. What it shares with the other models is what the deployment
configures once, as resources: the object store, MLflow, the image builder, the notifier, the
cluster (``mlops_assets.definitions.build_resources``).

The model's settings are the attributes below. The ones grouped under ``training``,
``policy`` and ``serving`` are the fields of the classes that use them, so their defaults and
descriptions are declared once, there; an attribute left out (or templated from an unset
variable: ``{{ env.MLOPS_MIN_R2 }}``) keeps the default.
"""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import BaseModel, Field, ValidationInfo, create_model, field_validator

from mlops_assets.components.lifecycle.automation.constants import AutomationSettings
from mlops_assets.components.lifecycle.automation.jobs import build_jobs
from mlops_assets.components.lifecycle.automation.schedules import build_schedules
from mlops_assets.components.lifecycle.automation.sensors import build_sensors
from mlops_assets.components.lifecycle.data.assets import build_data_assets
from mlops_assets.components.lifecycle.model.assets import build_model_assets
from mlops_assets.components.lifecycle.scaffold import ModelLifecycleScaffolder
from mlops_assets.components.lifecycle.scope import ModelScope, check_model_name
from mlops_assets.components.lifecycle.scoring.assets import build_scoring_assets
from mlops_assets.components.lifecycle.serving.deployment import build_deployment_assets
from mlops_assets.components.lifecycle.serving.image import build_image_assets
from mlops_assets.components.lifecycle.settings import PolicySettings, TrainingSettings
from mlops_assets.components.lifecycle.traffic.assets import build_traffic_assets
from mlops_assets.lib.env_settings import env_fields, model_fields_of
from mlops_assets.resources.image_builder import ImageBuilderResource
from mlops_assets.resources.model_rollout import ModelRolloutResource

# The fields of the deployment's model_rollout resource that are each model's own.
SERVING_FIELDS = tuple(model_fields_of(ModelRolloutResource))
NONE = type(None)


def _as_text(value: Any) -> Any:
    """A templated value as the text the field takes: ``{{ env.X }}`` renders JSON as a
    mapping and digits as a number, and YAML may give either."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def attributes_of(
    resource: type[BaseModel], name: str, only: Iterable[str] = (), overrides: Iterable[str] = ()
) -> Any:
    """A model of optional attributes, one per field of ``resource`` (those in ``only``, when
    given), each documented with the field's description and default; None keeps the
    default. ``overrides`` are deployment settings of ``resource`` a model may set for itself:
    left out, the deployment's value applies."""
    fields: dict[str, Any] = {}
    text_fields = set()
    deployment = env_fields(resource)
    for field_name, info in resource.model_fields.items():
        if only and field_name not in (*only, *overrides):
            continue
        default = (
            f"the deployment's ({deployment[field_name].name})"
            if field_name in overrides
            else repr(info.default)
        )
        fields[field_name] = (
            info.annotation | None,  # type: ignore[operator]
            Field(default=None, description=f"{info.description} Default: {default}."),
        )
        if info.annotation is str:
            text_fields.add(field_name)

    def given(value: Any, info: ValidationInfo) -> Any:
        """Empty is unset, as for the MLOPS_* variables: the default applies."""
        if value == "":
            return None
        return _as_text(value) if info.field_name in text_fields else value

    return create_model(  # type: ignore[call-overload]
        name,
        __base__=(dg.Model, dg.Resolvable),
        __validators__={"_given": field_validator("*", mode="before")(given)},
        **fields,
    )


TrainingAttributes = attributes_of(TrainingSettings, "TrainingAttributes")
PolicyAttributes = attributes_of(PolicySettings, "PolicyAttributes")
# Its rollout target: the deployment's cluster and namespace unless the model names its own.
ROLLOUT_TARGET = ("cluster", "namespace")
ServingAttributes = attributes_of(
    ModelRolloutResource, "ServingAttributes", SERVING_FIELDS, overrides=ROLLOUT_TARGET
)


def _given(attributes: BaseModel | None) -> dict[str, Any]:
    """The attributes set (not None): what overrides the defaults."""
    if attributes is None:
        return {}
    return {k: v for k, v in attributes.model_dump().items() if v is not None}


class DataAttributes(dg.Model, dg.Resolvable):
    source: str = Field(
        description="Labelled training data: a file, a directory of .csv/.parquet files, an "
        "http(s) URL, an s3:// prefix, or a generated sample:// source. A token in it comes "
        "from the environment ({{ env.MY_SOURCE_URL }}), never from this file."
    )
    spec: str | dict[str, Any] = Field(
        default="",
        description="The dataset contract: a JSON spec file, relative to this defs.yaml's "
        "folder (draft one with `mlops-spec infer`), or the spec itself, inline (the same "
        "fields as the file's); empty means the house-price spec.",
    )
    incoming: str = Field(
        default="",
        description="Incoming batch of a daily partition; {date} becomes YYYY-MM-DD, {day} "
        "YYYYMMDD. Empty: no batches arrive (score_batch finds none).",
    )
    partitions_start: str = Field(
        default="2026-11-01", description="First daily partition of predictions and traffic."
    )

    @field_validator("source", "spec", "incoming", "partitions_start", mode="before")
    @classmethod
    def _text(cls, value: Any, info: ValidationInfo) -> Any:
        if info.field_name == "spec" and isinstance(value, dict):
            return value  # an inline spec
        return _as_text(value)


class AutomationAttributes(dg.Model, dg.Resolvable):
    running: bool | None = Field(
        default=None,
        description="true (or running): the model's schedules and sensors start running with "
        "the daemon; false (or stopped): turn them on in the UI. Default: false.",
    )
    interval_seconds: int | None = Field(
        default=None, description="Seconds between two evaluations of each sensor. Default: 30."
    )
    scoring_cron: str | None = Field(
        default=None,
        description="When daily_scoring scores the day that just ended. Default: '0 1 * * *'.",
    )
    retrain_cron: str | None = Field(
        default=None,
        description="When periodic_retrain runs refresh_model. Default: '0 3 * * 0'.",
    )
    timezone: str | None = Field(default=None, description="Time zone of both crons. Default: UTC.")
    lookback_days: int | None = Field(
        default=None,
        description="How many of the latest daily partitions the incoming_batches and "
        "traffic_labels sensors watch. Default: 7.",
    )

    @field_validator("*", mode="before")
    @classmethod
    def _given(cls, value: Any, info: ValidationInfo) -> Any:
        """Empty is unset (the default applies); running takes MLOPS_AUTOMATION's words,
        running and stopped."""
        if value == "":
            return None
        if info.field_name == "running" and isinstance(value, str):
            return value.strip().lower() in ("running", "true")
        if info.field_name in ("scoring_cron", "retrain_cron", "timezone"):
            return _as_text(value)
        return value


class TextAttributes(dg.Model, dg.Resolvable):
    """Attributes that are all text, empty when not given (templated values as text)."""

    @field_validator("*", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return "" if value is None else _as_text(value)


class KubernetesAttributes(TextAttributes):
    """Pod sizes of this model's runs and steps on Kubernetes (quantities, e.g. 500m, 2Gi);
    each left out is the deployment's MLOPS_K8S_* setting."""

    cpu: str = Field(default="", description="CPU request of its run and step pods.")
    memory: str = Field(default="", description="Memory request of its run and step pods.")
    memory_limit: str = Field(default="", description="Memory limit of its run and step pods.")
    training_cpu: str = Field(default="", description="CPU request of the pods that train.")
    training_memory: str = Field(default="", description="Memory request of the pods that train.")
    training_memory_limit: str = Field(
        default="", description="Memory limit of the pods that train."
    )


class AlertAttributes(TextAttributes):
    """Where this model's alerts (its failed checks and runs) go; each left out is the
    deployment's (MLOPS_ALERT_*)."""

    channels: str = Field(
        default="", description="Channels for this model's alerts: log, webhook, email."
    )
    email_to: str = Field(default="", description="Who gets this model's alerts by email.")
    webhook_url_env: str = Field(
        default="",
        description="The environment variable that holds this model's webhook URL (a secret: "
        "never the URL itself); read when an alert is sent.",
    )


@dg.scaffold_with(ModelLifecycleScaffolder)
class ModelLifecycle(dg.Component, dg.Model, dg.Resolvable):
    """One model's whole lifecycle as assets with checks, jobs, schedules and sensors: data
    in, a versioned dataset, a trained and registered model gated against its champion, a
    served image, batch scoring and drift reports, and the policies that retrain or roll
    back. Its asset keys, group, jobs, schedules and sensors carry its name."""

    name: str = Field(
        description="The model's name in Dagster: the prefix of its asset keys "
        "(<name>/raw_data), its group, and the start of its jobs', schedules' and sensors' "
        "names (<name>_refresh_model). A letter, then letters, digits or _."
    )
    registered_model: str = Field(
        description="Its registered model in MLflow (aliases challenger and champion)."
    )
    experiment: str = Field(
        default="", description="MLflow experiment of its training runs; empty: its name."
    )
    data: DataAttributes
    training: TrainingAttributes | None = Field(  # type: ignore[valid-type]
        default=None, description="How trained_model fits (estimator, parameters, search)."
    )
    policy: PolicyAttributes | None = Field(  # type: ignore[valid-type]
        default=None,
        description="Thresholds of its checks, its promotion gate and its drift policy.",
    )
    serving: ServingAttributes | None = Field(  # type: ignore[valid-type]
        default=None, description="How its served image serves and is rolled out."
    )
    automation: AutomationAttributes | None = None
    kubernetes: KubernetesAttributes | None = None
    alerts: AlertAttributes | None = None

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return check_model_name(value)

    @field_validator("registered_model", "experiment", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return _as_text(value)

    def scope(self, folder: Path, image_registry: str = "") -> ModelScope:
        """The model as its definitions see it; a relative spec path is read from ``folder``
        (the one that holds this instance's defs.yaml)."""
        if not self.data.source.strip():
            raise ValueError(
                f"model '{self.name}' ({folder / 'defs.yaml'}): data.source is empty: set it to "
                "the labelled data (a file, a folder, an http(s):// URL or an s3:// prefix)"
            )
        spec, inline = self.data.spec, ""
        if isinstance(spec, dict):
            inline, spec = check_inline_spec(self.name, folder, spec), ""
        elif spec:
            spec = str(folder / spec) if not Path(spec).is_absolute() else spec
            check_spec(self.name, folder, spec)
        return ModelScope(
            name=self.name,
            policy=PolicySettings(**_given(self.policy)),
            training=TrainingSettings(**_given(self.training)),
            data={
                "source_uri": self.data.source,
                "incoming_uri": self.data.incoming,
                "spec_path": spec,
                "spec_inline": inline,
            },
            registry=self.registry(),
            serving=_given(self.serving),
            automation=AutomationSettings(image_registry=image_registry, **_given(self.automation)),
            partitions_start=self.data.partitions_start,
            pods=_set(self.kubernetes),
            alerts=self.alert_route(),
        )

    def registry(self) -> dict[str, str]:
        """Its names in MLflow: the fields of the deployment's mlflow resource it sets."""
        return {
            "model_name": self.registered_model,
            "experiment_name": self.experiment or self.name,
        }

    def alert_route(self) -> dict[str, str]:
        """Where its alerts go, for the deployment's alert sensors (empty: the deployment's
        channels)."""
        return _set(self.alerts)

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        # Where images are pushed is the deployment's (the image builder's registry setting):
        # the model's image sensor runs only where there is one.
        registry = env_fields(ImageBuilderResource)["registry"].value()
        return build_model_defs(self.scope(context.path, registry))


def attribute_doc(path: str) -> tuple[Any, str]:
    """The default and description of the attribute at ``path`` (``policy.min_r2``): for
    ``training``, ``policy`` and ``serving``, those of the field that takes it; for
    ``automation``, its AutomationSettings default."""
    group, _, name = path.rpartition(".")
    sources: dict[str, type[BaseModel]] = {
        "training": TrainingSettings,
        "policy": PolicySettings,
        "serving": ModelRolloutResource,
    }
    if group in sources:
        info = sources[group].model_fields[name]
        return info.default, info.description or ""
    model: Any = ModelLifecycle
    if group:
        annotation = ModelLifecycle.model_fields[group].annotation
        model = next(a for a in typing.get_args(annotation) or (annotation,) if a is not NONE)
    info = model.model_fields[name]
    description = re.sub(r" Default: .*$", "", info.description or "")
    if group == "automation":
        return getattr(AutomationSettings(), name), description
    return info.default, description


def _set(attributes: BaseModel | None) -> dict[str, str]:
    """The text attributes given (not empty)."""
    return {k: v for k, v in (attributes.model_dump() if attributes else {}).items() if v}


def check_inline_spec(model: str, folder: Path, spec: dict[str, Any]) -> str:
    """An inline spec as the JSON text the dataset source reads, checked as a spec file is."""
    from mlops_assets.ml.spec import DatasetSpec

    where = f"model '{model}' ({folder / 'defs.yaml'}): data.spec"
    try:
        DatasetSpec.from_dict(spec, source=where)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{where}: {exc}") from exc
    return json.dumps(spec)


def check_spec(model: str, folder: Path, spec: str) -> None:
    """The model's spec file is there and is a valid spec, or the code location does not load,
    saying which file and why (`dg check defs` prints it)."""
    from mlops_assets.ml.spec import load_spec

    where = f"model '{model}' ({folder / 'defs.yaml'}): data.spec"
    if not Path(spec).is_file():
        raise ValueError(
            f"{where}: the dataset spec file {spec} does not exist; draft one from the data "
            f"with `mlops-spec infer <data file> --target <column> -o {spec}`"
        )
    try:
        load_spec(spec)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from exc


def build_model_defs(model: ModelScope) -> dg.Definitions:
    """Everything of one model: its assets and checks, jobs, schedules and sensors."""
    jobs = build_jobs(model)
    scoring, scoring_checks = build_scoring_assets(model)  # each declares its partitioned checks
    traffic = build_traffic_assets(model)
    built = [
        *build_data_assets(model),
        *build_model_assets(model),
        *build_image_assets(model),
        *build_deployment_assets(model),
        *scoring,
        *scoring_checks,
    ]
    return dg.Definitions.merge(
        dg.Definitions(
            assets=[a for a in built if not isinstance(a, dg.AssetChecksDefinition)],
            asset_checks=[a for a in built if isinstance(a, dg.AssetChecksDefinition)],
            jobs=jobs.all(),
            schedules=build_schedules(model, jobs),
            sensors=build_sensors(model, jobs),
        ),
        traffic,
    )
