"""One model as its assets, checks, jobs, schedules and sensors see it: its name (the prefix of
its asset keys and of its jobs' and sensors' names) and its settings.

A model's settings reach the functions of its definitions the way Dagster's resources do, as
parameters: :meth:`ModelScope.bind` supplies ``policy``, ``training_settings`` and ``scope``
(this scope) from the model, and hands ``dataset_source``, ``mlflow`` and ``model_rollout``
(resources configured once for the deployment: where S3 is, which MLflow server, which
cluster) to the function as this model sees them: its source and spec, its registered model
and experiment, its serving settings. So one function body serves every model, and two
models never share a setting they did not both declare.
"""

from __future__ import annotations

import functools
import inspect
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from dagster import AssetKey, DailyPartitionsDefinition

from mlops_assets.components.lifecycle.automation.constants import MODEL_TAG, AutomationSettings
from mlops_assets.components.lifecycle.settings import PolicySettings, TrainingSettings

F = TypeVar("F", bound=Callable[..., Any])
R = TypeVar("R")

# A model's name prefixes its asset keys and its jobs', schedules' and sensors' names.
MODEL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def check_model_name(name: str) -> str:
    if not MODEL_NAME.match(name):
        raise ValueError(
            f"'{name}' cannot name a model: it prefixes asset keys and job names, so it must "
            "start with a letter and hold only letters, digits and _"
        )
    return name


@dataclass(frozen=True)
class ModelScope:
    """One model of the deployment.

    ``data``, ``registry`` and ``serving`` are the fields of the deployment's dataset_source,
    mlflow and model_rollout resources that this model sets (its source, its registered
    model, its serving settings).
    """

    name: str
    policy: PolicySettings = field(default_factory=PolicySettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    data: Mapping[str, Any] = field(default_factory=dict)
    registry: Mapping[str, Any] = field(default_factory=dict)
    serving: Mapping[str, Any] = field(default_factory=dict)
    automation: AutomationSettings = field(default_factory=AutomationSettings)
    # Pod sizes on Kubernetes that differ from the deployment's (lib/pod_resources).
    pods: Mapping[str, str] = field(default_factory=dict)
    # Where its alerts go, when not where the deployment's do (automation/alerts.routed).
    alerts: Mapping[str, str] = field(default_factory=dict)
    partitions_start: str = "2026-11-01"
    # Days after the one that ended that are partitions too (1: today; tests score today).
    partitions_end_offset: int = 0

    def key(self, asset: str) -> AssetKey:
        """The model's asset ``asset``: ``house_prices/raw_data``."""
        return AssetKey([self.name, asset])

    def keys(self, *assets: str) -> list[AssetKey]:
        return [self.key(asset) for asset in assets]

    def job_name(self, job: str) -> str:
        """The model's job, schedule or sensor ``job``: ``house_prices_refresh_model``."""
        return f"{self.name}_{job}"

    def step(self, name: str) -> str:
        """The model's step (op) ``name``: the one that materialises its asset ``name``
        (house_prices__raw_data), or an op of its jobs (house_prices__promote_to_champion)."""
        return self.key(name).to_python_identifier()

    def tags(self, tags: Mapping[str, str] | None = None) -> dict[str, str]:
        """``tags`` with the model's own (MODEL_TAG): every run of its jobs carries it."""
        return {**(tags or {}), MODEL_TAG: self.name}

    @property
    def registered_model(self) -> str:
        return str(self.registry.get("model_name", ""))

    @functools.cached_property
    def partitions(self) -> DailyPartitionsDefinition:
        return DailyPartitionsDefinition(
            start_date=self.partitions_start, end_offset=self.partitions_end_offset
        )

    def views(self) -> dict[str, Mapping[str, Any]]:
        return {"dataset_source": self.data, "mlflow": self.registry, "model_rollout": self.serving}

    def view(self, name: str, resource: R) -> R:
        """The deployment's resource ``name`` (dataset_source, mlflow, model_rollout) as this
        model sees it: with its own source, registered model or serving settings."""
        fields = self.views().get(name)
        return resource.model_copy(update=dict(fields)) if fields else resource  # type: ignore[attr-defined, no-any-return]

    def values(self) -> dict[str, Any]:
        return {"policy": self.policy, "training_settings": self.training, "scope": self}

    def bind(self, fn: F) -> F:
        """``fn`` with this model's settings supplied (see the module's docstring). Dagster
        reads the signature of what it returns: the model's values are not in it, the
        deployment resources are (as before), and inputs are unchanged."""
        signature = inspect.signature(fn)
        values = {n: v for n, v in self.values().items() if n in signature.parameters}
        views = {n: v for n, v in self.views().items() if n in signature.parameters}

        def supplied(kwargs: dict[str, Any]) -> dict[str, Any]:
            for name in views:
                if name in kwargs:
                    kwargs[name] = self.view(name, kwargs[name])
            return {**kwargs, **values}

        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def generator(*args: Any, **kwargs: Any) -> Any:
                return (yield from fn(*args, **supplied(kwargs)))

            bound: Any = generator
        else:

            @functools.wraps(fn)
            def function(*args: Any, **kwargs: Any) -> Any:
                return fn(*args, **supplied(kwargs))

            bound = function
        # Annotations resolved here, where fn's module is known: Dagster resolves a signature's
        # text annotations in the module of the function that carries it, this one.
        hints = typing.get_type_hints(fn)
        bound.__signature__ = signature.replace(
            parameters=[
                p.replace(annotation=hints.get(p.name, p.annotation))
                for p in signature.parameters.values()
                if p.name not in values
            ],
            return_annotation=hints.get("return", signature.return_annotation),
        )
        bound.__annotations__ = {k: v for k, v in hints.items() if k not in values}
        return bound  # type: ignore[no-any-return]
