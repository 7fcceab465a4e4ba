"""Every environment variable the project reads: the deployment's settings
(:mod:`mlops_assets.settings`) and the variables the shipped house_prices model templates its
attributes from (its defs.yaml). ``python -m mlops_assets.variables`` prints the README's
tables; a test holds the README to them, and the tests clear every one of them.

Its own module, beside the code location rather than under it: it reads the component's
schema, which the settings must not import.
"""

from __future__ import annotations

import re
import sys
from functools import cache
from pathlib import Path
from typing import Any

from mlops_assets.lib.env_settings import Setting, setting_text
from mlops_assets.settings import deployment_settings

# The shipped model whose attributes read the MLOPS_* variables that configured the one model.
HOUSE_MODEL = Path(__file__).resolve().parent / "defs" / "house_prices" / "defs.yaml"
TEMPLATE = re.compile(r"\{\{\s*env\.(\w+)(?:\s+or\s+'([^']*)')?\s*\}\}")


def model_settings() -> tuple[Setting, ...]:
    """The house_prices model's variables: each ``{{ env.MLOPS_X }}`` its defs.yaml templates,
    with the default and description of the attribute it sets (read from the YAML, so the
    table cannot list a variable the model does not read)."""
    import yaml

    from mlops_assets.components.lifecycle.component import attribute_doc

    attributes = yaml.safe_load(HOUSE_MODEL.read_text())["attributes"]
    found = []
    for path, value in _leaves(attributes):
        template = TEMPLATE.fullmatch(value.strip()) if isinstance(value, str) else None
        if not template:
            continue
        name, literal = template.groups()
        default, description = attribute_doc(path)
        text = literal if literal is not None else setting_text(default)
        found.append(Setting(name, text, f"`{path}`: {description}"))
    return tuple(found)


def _leaves(node: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    leaves: list[tuple[str, Any]] = []
    for key, value in node.items():
        path = f"{prefix}{key}"
        leaves.extend(_leaves(value, f"{path}.") if isinstance(value, dict) else [(path, value)])
    return leaves


@cache
def all_settings() -> tuple[Setting, ...]:
    """Every variable the project reads, the deployment's and the house_prices model's; derived
    once per process (values are read by Setting.value)."""
    deployment = deployment_settings()
    names = {s.name for s in deployment}
    return (*deployment, *(s for s in model_settings() if s.name not in names))


def markdown_table() -> str:
    """The README's configuration tables: the deployment's settings, then the house_prices
    model's variables."""

    def table(settings: tuple[Setting, ...], what: str) -> list[str]:
        rows = [f"| variable | default | {what} |", "|---|---|---|"]
        for entry in settings:
            default = f"`{entry.default}`" if entry.default else "(empty)"
            rows.append(f"| `{entry.name}` | {default} | {entry.description} |")
        return rows

    return "\n".join(
        [
            *table(deployment_settings(), "what it sets"),
            "",
            "The house_prices model's attributes, templated from these variables in "
            "`mlops_assets/defs/house_prices/defs.yaml`:",
            "",
            *table(model_settings(), "attribute: what it sets"),
        ]
    )


if __name__ == "__main__":
    sys.stdout.write(markdown_table() + "\n")
