"""How a setting is declared: an environment variable with its default and description,
either on a resource's field (:func:`env_field`) or on its own (:class:`Setting`); and the
fields of a deployment resource that each model sets for itself (:func:`model_field`).

Its own module, which imports nothing of the project: the resources declare their fields
with it, and :mod:`mlops_assets.settings` lists the deployment's settings by reading those fields, so the
two never import each other.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from pydantic import Field

ENV_KEY = "mlops_env"
MODEL_KEY = "mlops_model"
SECRET_KEY = "mlops_secret"


def env_field(name: str, default: Any, description: str, *, secret: bool = False) -> Any:
    """A resource field set by the environment variable ``name``: its default and description
    are the setting's. A secret is wired as an EnvVar, so its value is never part of config.
    (A model's source URLs, which may carry a token, are its component's attributes, never a
    resource's config.)"""
    return Field(
        default=default,
        description=description,
        json_schema_extra={ENV_KEY: name, SECRET_KEY: secret},
    )


def model_field(attribute: str, default: Any, description: str) -> Any:
    """A field of a deployment resource that each model sets for itself, from its component's
    ``attribute`` (``data.source``): no environment variable configures it for the deployment,
    and its default is what a model that leaves the attribute out gets."""
    return Field(
        default=default,
        description=description,
        json_schema_extra={MODEL_KEY: attribute},
    )


def model_value(resource: Any, field_name: str, error: type[Exception] = ValueError) -> str:
    """The value a model set on ``resource``'s model field ``field_name``. A deployment's
    resource, which no model has set, has none (a model's assets get theirs through
    ModelScope.view): ``error`` says so, naming the attribute, rather than acting on
    nothing."""
    value = str(getattr(resource, field_name))
    if not value:
        attribute = model_fields_of(type(resource))[field_name]
        raise error(
            f"no {attribute} is set: it is each model's (its defs.yaml), and this "
            f"{type(resource).__name__} was not given one"
        )
    return value


def setting_text(default: Any) -> str:
    """A default as a variable would hold it (true, not True)."""
    return str(default).lower() if isinstance(default, bool) else str(default)


def model_fields_of(resource: type) -> dict[str, str]:
    """Field name -> the component attribute that sets it, for one resource class."""
    found = {}
    for field_name, info in resource.model_fields.items():  # type: ignore[attr-defined]
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if MODEL_KEY in extra:
            found[field_name] = str(extra[MODEL_KEY])
    return found


@dataclass(frozen=True)
class Setting:
    name: str
    default: str
    description: str
    secret: bool = False

    def value(self) -> str:
        return os.environ.get(self.name, "") or self.default


def env_fields(resource: type) -> dict[str, Setting]:
    """Field name -> the setting that configures it, for one resource class."""
    found = {}
    for field_name, info in resource.model_fields.items():  # type: ignore[attr-defined]
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if ENV_KEY not in extra:
            continue
        found[field_name] = Setting(
            str(extra[ENV_KEY]),
            setting_text(info.default),
            info.description or "",
            bool(extra.get(SECRET_KEY)),
        )
    return found
