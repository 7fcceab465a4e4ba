"""How long trained_model takes with a search time budget, and what the budget covered.

On an empty MLOPS_HOME with the default house-price source (5,000 rows), materialise
raw_data and versioned_dataset, then trained_model with ``search_timeout_seconds`` set (no
trial count). Report the trained_model step's wall time (its STEP_START to STEP_SUCCESS
events), the search's own account (its trials, its seconds with their logging: nan for a
version that does not record it) and the nested trial runs MLflow holds.

    .venv/bin/python bench/search_budget.py --budget 10 --model-type hist_gradient_boosting
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

PARTITION = "2026-11-20"


def measure(budget: float, model_type: str) -> dict[str, float]:
    warnings.filterwarnings("ignore")
    from dagster import AssetKey, DagsterInstance
    from mlflow import MlflowClient

    from mlops_assets.definitions import build_definitions, build_resources

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "mlops"
        os.environ["MLOPS_HOME"] = str(home)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        os.environ.pop("MLOPS_SOURCE_URI", None)  # the default: 5,000 house-price rows
        os.environ["GIT_PYTHON_REFRESH"] = "quiet"
        (Path(tmp) / "dagster").mkdir()
        instance = DagsterInstance.local_temp(
            str(Path(tmp) / "dagster"), overrides={"telemetry": {"enabled": False}}
        )
        job = build_definitions(build_resources()).resolve_job_def("house_prices_refresh_model")
        data = job.execute_in_process(
            instance=instance,
            asset_selection=[
                AssetKey(["house_prices", "raw_data"]),
                AssetKey(["house_prices", "versioned_dataset"]),
            ],
        )
        assert data.success
        config = {"model_type": model_type, "search_timeout_seconds": budget}
        started = time.perf_counter()
        result = job.execute_in_process(
            instance=instance,
            asset_selection=[AssetKey(["house_prices", "trained_model"])],
            run_config={"ops": {"house_prices__trained_model": {"config": config}}},
        )
        wall = time.perf_counter() - started
        assert result.success
        times = {
            entry.dagster_event.event_type_value: entry.timestamp
            for entry in instance.all_logs(result.run_id)
            if entry.dagster_event is not None
            and entry.dagster_event.step_key == "trained_model"
            and entry.dagster_event.event_type_value in ("STEP_START", "STEP_SUCCESS")
        }
        [event] = result.get_asset_materialization_events()
        metadata = event.materialization.metadata
        uri = f"sqlite:///{home / 'mlflow.db'}"
        client = MlflowClient(uri, uri)
        parent = client.get_run(str(metadata["mlflow_run_id"].value))
        children = client.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
            max_results=50000,
        )
        instance.dispose()
        return {
            "step_seconds": times["STEP_SUCCESS"] - times["STEP_START"],
            "run_seconds": wall,
            "trials": float(str(metadata["search_trials"].value)),
            "nested_runs": float(len(children)),
            "search_seconds": parent.data.metrics.get("search_seconds", float("nan")),
            "longest_trial": max(c.data.metrics["trial_seconds"] for c in children),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=10.0)
    parser.add_argument("--model-type", default="hist_gradient_boosting")
    args = parser.parse_args()
    found = measure(args.budget, args.model_type)
    print(
        f"model {args.model_type}, budget {args.budget:g} s: trained_model step "
        f"{found['step_seconds']:.1f} s (run {found['run_seconds']:.1f} s), "
        f"{found['trials']:.0f} trials, {found['nested_runs']:.0f} nested runs, "
        f"longest trial {found['longest_trial']:.1f} s, search incl. logging "
        f"{found['search_seconds']:.1f} s"
    )


if __name__ == "__main__":
    main()
