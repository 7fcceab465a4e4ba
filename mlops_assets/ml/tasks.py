"""What a model's answer is, and how it is scored, for each task of the dataset spec.

Regression: the answer is a number per row. Classification (binary or multiclass): the model
answers with the most probable class and one probability per class (the registered model is a
:class:`mlops_assets.ml.answering.ClassAnswer`, in process and in the served image alike). Both
go through :func:`answer`, so batch inference, the registry gates, the drift report and the
served image's smoke test read a model's output one way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from mlops_assets.ml.spec import DatasetSpec

PREDICTION = "prediction"
PROBABILITY_PREFIX = "probability_"

# What the registry's MLflow model records for a classifier: the task and the classes the
# fitted estimator learned (its classes_).
TASK_KEY = "mlops.task"
CLASSES_KEY = "mlops.classes"

# Metrics each task reports (on val and test; the promotion metric is one of them).
REGRESSION_METRICS = ("rmse", "mae", "r2")
CLASSIFICATION_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc", "log_loss")
# Each task's loss (lower is better): what a search trial minimises on the val split, what the
# naive-baseline check compares, and the promotion metric when MLOPS_PROMOTION_METRIC is empty.
LOSS = {"regression": "rmse", "classification": "log_loss"}
# The quality the drift report compares between a labelled batch and the champion's test split.
QUALITY_METRIC = {"regression": "rmse", "classification": "balanced_accuracy"}
# Probabilities clipped away from 0 and 1 for log loss (as scikit-learn does), so a confident
# wrong answer costs a large, finite amount.
_EPS = 1e-15


def metrics_for(task: str) -> tuple[str, ...]:
    return CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS


def probability_column(label: str) -> str:
    return f"{PROBABILITY_PREFIX}{label}"


def probability_columns(spec: DatasetSpec) -> list[str]:
    return [probability_column(c) for c in spec.classes]


def class_probabilities(
    raw: Any, model_classes: Sequence[str], classes: Sequence[str]
) -> np.ndarray:
    """``raw`` (rows x ``model_classes``, as predict_proba returns it) re-ordered to the spec's
    ``classes``; a class the model never saw in training has probability 0."""
    values = np.asarray(raw, dtype=float)
    if values.ndim != 2 or values.shape[1] != len(model_classes):
        raise ValueError(
            f"the model answered with shape {values.shape}, not one probability for each of "
            f"its {len(model_classes)} classes ({', '.join(map(str, model_classes))})"
        )
    unknown = sorted(set(map(str, model_classes)) - set(classes))
    if unknown:
        raise ValueError(
            f"the model predicts classes the spec does not allow: {unknown} "
            f"(allowed: {', '.join(classes)})"
        )
    position = {str(label): i for i, label in enumerate(model_classes)}
    out = np.zeros((len(values), len(classes)))
    for j, label in enumerate(classes):
        if label in position:
            out[:, j] = values[:, position[label]]
    return out


def most_probable(probabilities: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    return np.asarray(classes, dtype=object)[np.argmax(probabilities, axis=1)]


# The attribute a model sets (true) when its predict already answers with classes and
# probabilities (ml/answering.py's ClassAnswer).
ANSWERS_WITH_CLASSES = "answers_with_classes"


def class_answer(raw: Any, model_classes: Sequence[str], classes: Sequence[str]) -> pd.DataFrame:
    """A classifier's answer from its predict_proba ``raw`` (columns in ``model_classes``
    order): ``prediction`` (the most probable class) and ``probability_<class>`` for each of
    ``classes``, in that order."""
    probabilities = class_probabilities(raw, model_classes, classes)
    frame = pd.DataFrame(probabilities, columns=[probability_column(c) for c in classes])
    frame.insert(0, PREDICTION, most_probable(probabilities, classes))
    return frame


def answer_frame(output: Any, spec: DatasetSpec, model_classes: Sequence[str] = ()) -> pd.DataFrame:
    """A model's output as the project stores it: ``prediction`` (the value, or the most
    probable class) and, for classification, ``probability_<class>`` for each spec class.

    ``output`` is a ClassAnswer's frame (a registered classifier, in process or served), a
    predict_proba matrix in ``model_classes`` order (a fitted estimator), or the numbers."""
    if isinstance(output, pd.DataFrame) and spec.task == "classification":
        return _checked_class_answer(output, spec)
    if isinstance(output, pd.DataFrame):
        column = output[PREDICTION] if PREDICTION in output else output.iloc[:, 0]
        return pd.DataFrame({PREDICTION: column.to_numpy(dtype=float)})
    if spec.task == "regression":
        return pd.DataFrame({PREDICTION: np.asarray(output, dtype=float).reshape(-1)})
    return class_answer(output, model_classes, spec.classes)


def _checked_class_answer(output: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """A ClassAnswer frame, checked to carry the spec's classes."""
    columns = [PREDICTION, *probability_columns(spec)]
    missing = [c for c in columns if c not in output.columns]
    if missing:
        raise ValueError(
            f"the model's answer has no column {', '.join(missing)} (it has "
            f"{', '.join(map(str, output.columns))}): was it trained for these classes "
            f"({', '.join(spec.classes)})?"
        )
    frame = output[columns].reset_index(drop=True)
    frame = frame.astype(dict.fromkeys(probability_columns(spec), float))
    frame[PREDICTION] = frame[PREDICTION].astype(str).astype(object)
    return frame


def answer(model: Any, features: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """``model`` (an MLflow pyfunc, a ClassAnswer, or a fitted scikit-learn estimator) applied
    to ``features`` (``model_input`` rows), as :func:`answer_frame`; index as ``features``."""
    # A ClassAnswer (ml/answering.py, which builds on this module) answers with its classes
    # already; it says so rather than be imported here.
    fitted = hasattr(model, "predict_proba") and not getattr(model, ANSWERS_WITH_CLASSES, False)
    if spec.task == "classification" and fitted:
        # A fitted estimator (training, a user's function): its probabilities, its classes.
        output = answer_frame(model.predict_proba(features), spec, [str(c) for c in model.classes_])
    else:
        output = model.predict(features)
    frame = answer_frame(output, spec)
    frame.index = features.index
    return frame


def score(y_true: Any, answers: pd.DataFrame, spec: DatasetSpec) -> dict[str, float]:
    """The task's metrics of ``answers`` (from :func:`answer`) against the true target."""
    if spec.task == "classification":
        return classification_metrics(
            y_true, answers[probability_columns(spec)].to_numpy(), spec.classes
        )
    return regression_metrics(y_true, answers[PREDICTION].to_numpy())


def regression_metrics(y_true: Any, y_pred: Any) -> dict[str, float]:
    y_true = np.asarray(y_true, dtype=float)
    y_pred = np.asarray(y_pred, dtype=float)
    error = y_pred - y_true
    ss_res = float(np.sum(error**2))
    ss_tot = float(np.sum((y_true - y_true.mean()) ** 2))
    return {
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mae": float(np.mean(np.abs(error))),
        "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else 0.0,
    }


def classification_metrics(
    y_true: Any, probabilities: np.ndarray, classes: Sequence[str]
) -> dict[str, float]:
    """Accuracy, balanced accuracy, macro F1 (of the most probable class), ROC AUC (binary; one
    vs rest, macro-averaged over the classes present, for multiclass) and log loss."""
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        f1_score,
        roc_auc_score,
    )

    labels = np.asarray([str(v) for v in y_true], dtype=object)
    predicted = most_probable(probabilities, classes)
    present = [i for i, c in enumerate(classes) if (labels == c).any()]
    metrics = {
        "accuracy": float(accuracy_score(labels, predicted)),
        "balanced_accuracy": float(balanced_accuracy_score(labels, predicted)),
        "macro_f1": float(
            f1_score(labels, predicted, labels=list(classes), average="macro", zero_division=0)
        ),
        "log_loss": _log_loss(labels, probabilities, classes),
    }
    # AUC needs both sides of a comparison: a class with no rows has no curve.
    aucs = []
    for i in present:
        positive = labels == classes[i]
        if 0 < positive.sum() < len(labels):
            aucs.append(roc_auc_score(positive, probabilities[:, i]))
    if len(classes) == 2 and aucs:
        metrics["roc_auc"] = float(aucs[0])
    elif aucs:
        metrics["roc_auc"] = float(np.mean(aucs))
    else:
        metrics["roc_auc"] = float("nan")
    return metrics


def _log_loss(labels: np.ndarray, probabilities: np.ndarray, classes: Sequence[str]) -> float:
    index = {c: i for i, c in enumerate(classes)}
    rows = np.arange(len(labels))
    cols = np.asarray([index[label] for label in labels], dtype=int)
    chosen = np.clip(probabilities[rows, cols], _EPS, 1.0)
    return float(-np.mean(np.log(chosen)))


def class_shares(y: Any, classes: Sequence[str]) -> np.ndarray:
    """Each class's share of ``y``: the majority-class baseline's probabilities."""
    labels = pd.Series([str(v) for v in y])
    counts = labels.value_counts()
    return np.asarray([counts.get(c, 0) for c in classes], dtype=float) / max(len(labels), 1)


def class_report(
    y_true: Any, predicted: Any, classes: Sequence[str]
) -> tuple[list[dict[str, Any]], list[list[int]]]:
    """Per-class precision, recall and support, and the confusion matrix (rows: true class,
    columns: predicted class, in the spec's order)."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    labels = [str(v) for v in y_true]
    guessed = [str(v) for v in predicted]
    precision, recall, _, support = precision_recall_fscore_support(
        labels, guessed, labels=list(classes), zero_division=0
    )
    per_class = [
        {
            "class": c,
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "support": int(support[i]),
        }
        for i, c in enumerate(classes)
    ]
    matrix = confusion_matrix(labels, guessed, labels=list(classes)).tolist()
    return per_class, matrix


def confusion_matrix_png(matrix: list[list[int]], classes: Sequence[str], title: str) -> bytes:
    """The confusion matrix as a picture a person can open (counts in each cell)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = np.asarray(matrix)
    size = 2.5 + 0.6 * len(classes)
    figure, axes = plt.subplots(figsize=(size, size))
    axes.imshow(values, cmap="Blues")
    axes.set_xticks(range(len(classes)), labels=list(classes), rotation=45, ha="right")
    axes.set_yticks(range(len(classes)), labels=list(classes))
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(title)
    limit = values.max() / 2 if values.size else 0
    for (i, j), count in np.ndenumerate(values):
        axes.text(
            j, i, str(count), ha="center", va="center", color="white" if count > limit else "black"
        )
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()
