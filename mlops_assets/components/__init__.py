"""The project's Dagster components: ``dg list components`` shows them in any dg project that
installs the package (the ``dagster_dg_cli.registry_modules`` entry point)."""

from mlops_assets.components.lifecycle.component import ModelLifecycle

__all__ = ["ModelLifecycle"]
