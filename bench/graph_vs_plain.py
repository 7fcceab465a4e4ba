"""Whole graph through Dagster vs the same computations in one plain Python process.

For each row count, two fresh worker processes run on an empty MLOPS_HOME:

- graph: ``mlops_lifecycle`` for one partition via ``execute_in_process`` (every asset
  and check, the event log, the IO manager);
- plain: the same ml/ functions and resources called directly, in the same order, with no
  checks and no Dagster.

Each worker reports the wall time of the work (imports excluded) and its peak RSS. The
incoming batch is a tenth of the training rows.

    .venv/bin/python bench/graph_vs_plain.py --rows 10000 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import cast

PARTITION = "2026-11-20"


def _env(home: Path, rows: int, extra_env: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        MLOPS_HOME=str(home),
        MLOPS_SOURCE_URI=f"sample://house-prices?rows={rows}&seed=42",
        MLOPS_INCOMING_URI=f"sample://house-prices?rows={max(rows // 10, 100)}&seed={{day}}",
        GIT_PYTHON_REFRESH="quiet",
    )
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(extra_env or {})
    return env


def run_graph() -> float:
    import warnings

    warnings.filterwarnings("ignore")
    from dagster import DagsterInstance

    from mlops_assets.definitions import build_definitions

    defs = build_definitions()

    job = defs.resolve_job_def("house_prices_mlops_lifecycle")
    with tempfile.TemporaryDirectory() as dagster_home:
        instance = DagsterInstance.local_temp(
            dagster_home, overrides={"telemetry": {"enabled": False}}
        )
        start = time.perf_counter()
        result = job.execute_in_process(instance=instance, partition_key=PARTITION)
        elapsed = time.perf_counter() - start
        if not result.success:
            raise SystemExit("graph run failed")
    return elapsed


def run_plain() -> float:
    """The graph's computations, called directly."""
    import warnings
    from datetime import date

    warnings.filterwarnings("ignore")
    import numpy as np

    from mlops_assets.components.lifecycle.data.assets import snapshot_digest
    from mlops_assets.definitions import build_resources, model_scopes
    from mlops_assets.ml.dataset import clean, content_digest, split
    from mlops_assets.ml.dataset_store import DatasetStore, frame_to_parquet
    from mlops_assets.ml.drift import PREDICTION, drift_report, sample
    from mlops_assets.ml.estimator import TrainingConfig, model_input
    from mlops_assets.ml.promotion import decide
    from mlops_assets.ml.tabular import read_validated
    from mlops_assets.ml.train import SKOPS_TRUSTED_TYPES, fit, serving_requirements
    from mlops_assets.resources.dataset_source import DatasetSourceResource
    from mlops_assets.resources.mlflow_registry import CHALLENGER, CHAMPION, MlflowResource
    from mlops_assets.resources.object_store import ObjectStoreResource

    resources = build_resources()
    model = model_scopes()["house_prices"]  # the house model's view of the deployment's
    store = cast(ObjectStoreResource, resources["object_store"])
    source = model.view("dataset_source", cast(DatasetSourceResource, resources["dataset_source"]))
    mlflow = model.view("mlflow", cast(MlflowResource, resources["mlflow"]))
    policy = model.policy
    spec = source.spec

    start = time.perf_counter()
    files = source.read_source()
    digest = snapshot_digest(files)
    for file in files:
        store.put_bytes(f"raw/{digest}/files/{file.name}", file.data)
    frame = read_validated(files, spec).frame
    cleaned, stats = clean(frame, spec)
    splits = split(cleaned, spec)
    dataset_digest = content_digest(splits, spec)
    datasets = DatasetStore(store, spec.name)
    staged = datasets.stage(
        splits, dataset_digest, spec, {"uri": source.source_uri, "digest": digest}, stats
    )
    manifest = datasets.publish(staged).manifest
    result = fit(splits, spec, TrainingConfig())
    logged = mlflow.log_training_run(
        result.pipeline,
        result.params,
        result.metrics,
        model_input(splits["train"].head(5), spec),
        splits["train"],
        spec.target.name,
        {"mlops.dataset_digest": dataset_digest, "mlops.dataset_tag": manifest["tag"]},
        SKOPS_TRUSTED_TYPES,
        serving_requirements(),
    )
    version = mlflow.register(logged.model_uri, {})
    mlflow.move_alias(CHALLENGER, version, "newly registered")
    if decide(result.metrics["test_rmse"], None, "rmse", 0.0).promote:
        mlflow.move_alias(CHAMPION, version, "no champion yet")
    day = date.fromisoformat(PARTITION)
    batch = read_validated(source.read_incoming(day), spec, require_target=False).frame
    model = mlflow.load_model(CHAMPION)
    batch[PREDICTION] = np.asarray(model.predict(model_input(batch, spec)), dtype=float)
    store.put_bytes(f"predictions/{PARTITION}.parquet", frame_to_parquet(batch))
    reference = sample(splits["train"], policy.drift_sample_rows).copy()
    reference[PREDICTION] = model.predict(model_input(reference, spec))
    _, report_json, report_html = drift_report(batch, reference, spec, policy.drift_sample_rows)
    store.put_bytes(f"reports/{PARTITION}/report.json", report_json.encode())
    store.put_bytes(f"reports/{PARTITION}/report.html", report_html.encode())
    return time.perf_counter() - start


def worker(mode: str) -> None:
    elapsed = run_graph() if mode == "graph" else run_plain()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": elapsed, "peak_mb": peak_mb}))


def measure(mode: str, rows: int, extra_env: dict[str, str] | None = None) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as home:
        out = subprocess.run(
            [sys.executable, __file__, "--worker", mode],
            env=_env(Path(home), rows, extra_env),
            capture_output=True,
            text=True,
            check=False,
        )
    if out.returncode != 0:
        raise SystemExit(f"{mode} worker failed for {rows} rows:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--worker", choices=["graph", "plain"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
        return
    print(
        f"{'rows':>10} {'graph s':>9} {'plain s':>9} {'ratio':>6} {'graph MB':>9} {'plain MB':>9}"
    )
    for rows in args.rows:
        graph = measure("graph", rows)
        plain = measure("plain", rows)
        print(
            f"{rows:>10,} {graph['seconds']:>9.1f} {plain['seconds']:>9.1f} "
            f"{graph['seconds'] / plain['seconds']:>6.2f} {graph['peak_mb']:>9.0f} "
            f"{plain['peak_mb']:>9.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
