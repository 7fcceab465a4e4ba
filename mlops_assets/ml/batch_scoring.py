"""Score a day's batch row by row: every row the contract passed gets its answer, unless the
model cannot score it, and then it is set aside with the reason instead of failing the day.

The project's own models impute missing values (their Pipeline has an imputer for every
column), so a blank is scored. A model of the user's may not: when the whole batch cannot be
scored and some rows have blanks, those rows are set aside ("the model cannot score a blank")
and the rest are scored. A batch that fails without blanks fails as it is: that is the model's
fault, not the rows'.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from mlops_assets.ml.estimator import model_input
from mlops_assets.ml.spec import DatasetSpec
from mlops_assets.ml.tabular import ScoringBatch
from mlops_assets.ml.tasks import answer

SOURCE_FILE, SOURCE_ROW = "source_file", "source_row"


@dataclass(frozen=True)
class ScoredRows:
    """The rows scored (the batch's columns, the answer's, and where each row came from), and
    the rows the model could not score (their origin, and why)."""

    scored: pd.DataFrame
    unscorable: pd.DataFrame  # file, row
    unscorable_rules: list[str]


def score_rows(model: Any, batch: ScoringBatch, spec: DatasetSpec) -> ScoredRows:
    rows, origin = batch.scorable, batch.origin
    unscorable = origin.iloc[0:0]
    rules: list[str] = []
    try:
        answers = answer(model, model_input(rows, spec), spec)
    except Exception as failed:
        blank = rows[spec.feature_columns].isna()
        has_blank = blank.any(axis=1).to_numpy()
        if not has_blank.any():
            raise
        answers = answer(model, model_input(rows[~has_blank], spec), spec)  # raises, if still
        why = f"the model cannot score a blank ({type(failed).__name__}: {_first_line(failed)})"
        rules = [
            "; ".join(f"column '{c}': {why}" for c in blank.columns[blank.iloc[position]])
            for position in has_blank.nonzero()[0]
        ]
        unscorable = origin[has_blank].reset_index(drop=True)
        rows, origin = rows[~has_blank], origin[~has_blank]
    scored = rows.drop(columns=list(answers.columns), errors="ignore").join(answers)
    scored[SOURCE_FILE] = origin["file"].to_numpy()
    scored[SOURCE_ROW] = origin["row"].to_numpy()
    return ScoredRows(scored.reset_index(drop=True), unscorable, rules)


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [""])[0][:200]
