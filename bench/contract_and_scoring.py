"""The data contract and batch scoring at scale, in one process, as the assets run them:
``raw_data``'s contract on a labelled CSV of ``--rows`` rows, and ``predictions``' reading and
scoring of a batch of the same size with a model trained on 10,000 rows.

    .venv/bin/python bench/contract_and_scoring.py --rows 1000000

It runs against whatever ``mlops_assets`` it imports, so the same script times an earlier
commit (a worktree on PYTHONPATH) beside this one; where the earlier code scored a batch
whole (read_validated, then answer), it does that. It prints the seconds of each phase; time
the whole process with an outside timer for the paired ratio (README, Benchmark).
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()

    from mlops_assets.ml import tabular
    from mlops_assets.ml.dataset import clean, split
    from mlops_assets.ml.estimator import TrainingConfig, model_input
    from mlops_assets.ml.sample_data import generate_house_prices, to_csv_bytes
    from mlops_assets.ml.spec import HOUSE_PRICES
    from mlops_assets.ml.tabular import TableFile, inspect_table, read_validated
    from mlops_assets.ml.tasks import answer
    from mlops_assets.ml.train import fit

    labelled = TableFile("houses.csv", to_csv_bytes(generate_house_prices(args.rows, seed=1)))
    batch = TableFile(
        "batch.csv",
        to_csv_bytes(generate_house_prices(args.rows, seed=2).drop(columns=["price"])),
    )
    small = read_validated(
        [TableFile("t.csv", to_csv_bytes(generate_house_prices(10_000, seed=3)))], HOUSE_PRICES
    ).frame
    model = fit(split(clean(small, HOUSE_PRICES)[0], HOUSE_PRICES), HOUSE_PRICES, TrainingConfig())
    pipeline = model.pipeline

    started = time.perf_counter()
    inspection = inspect_table(labelled, HOUSE_PRICES)
    assert inspection.ok, inspection.violations
    contract = time.perf_counter() - started

    started = time.perf_counter()
    if hasattr(tabular, "read_batch"):  # row by row, as predictions scores now
        from mlops_assets.ml.batch_scoring import score_rows

        rows = tabular.read_batch([batch], HOUSE_PRICES)
        read = time.perf_counter() - started
        scored = score_rows(pipeline, rows, HOUSE_PRICES).scored
    else:  # the whole batch, as it was scored before
        frame = read_validated([batch], HOUSE_PRICES, require_target=False).frame
        read = time.perf_counter() - started
        scored = frame.join(answer(pipeline, model_input(frame, HOUSE_PRICES), HOUSE_PRICES))
    scoring = time.perf_counter() - started - read
    assert len(scored) == args.rows
    print(
        f"rows {args.rows}: contract {contract:.2f} s, batch read {read:.2f} s, "
        f"scoring {scoring:.2f} s"
    )


if __name__ == "__main__":
    main()
