"""A model's answer and its scores, per task (pure functions)."""

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.metrics import log_loss, roc_auc_score

from mlops_assets.ml.dataset import split
from mlops_assets.ml.estimator import EstimatorError, TrainingConfig, make_estimator
from mlops_assets.ml.spec import DatasetSpec
from mlops_assets.ml.tasks import (
    answer_frame,
    class_probabilities,
    class_report,
    classification_metrics,
)
from mlops_assets.ml.train import fit

CLASSES = ("benign", "malignant")


def test_probabilities_follow_the_spec_order_and_a_class_never_seen_is_zero():
    raw = np.array([[0.2, 0.8], [0.9, 0.1]])  # the model's order: classes_ sorted
    out = class_probabilities(raw, ["a", "c"], ("c", "b", "a"))
    assert out.tolist() == [[0.8, 0.0, 0.2], [0.1, 0.0, 0.9]]
    with pytest.raises(ValueError, match="classes the spec does not allow: \\['z'\\]"):
        class_probabilities(raw, ["a", "z"], ("a", "b"))
    with pytest.raises(ValueError, match="not one probability for each of its 3 classes"):
        class_probabilities(raw, ["a", "b", "c"], ("a", "b", "c"))


def test_the_answer_is_the_most_probable_class_with_every_probability():
    spec = DatasetSpec.from_dict(
        {
            "name": "d",
            "task": "classification",
            "target": {"name": "y", "allowed": CLASSES},
            "numeric": [{"name": "x"}],
        }
    )
    frame = answer_frame(np.array([[0.3, 0.7], [0.6, 0.4]]), spec, ["benign", "malignant"])
    assert list(frame.columns) == ["prediction", "probability_benign", "probability_malignant"]
    assert frame["prediction"].tolist() == ["malignant", "benign"]


def test_classification_metrics_agree_with_scikit_learn():
    y = ["benign", "malignant", "malignant", "benign", "malignant"]
    p = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3], [0.1, 0.9]])
    m = classification_metrics(y, p, CLASSES)
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["balanced_accuracy"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert m["roc_auc"] == pytest.approx(roc_auc_score([0, 1, 1, 0, 1], p[:, 1]))
    assert m["log_loss"] == pytest.approx(log_loss(y, p, labels=list(CLASSES)))
    per_class, matrix = class_report(y, ["benign", "malignant", "benign", "benign", "malignant"],
                                     CLASSES)  # fmt: skip
    assert matrix == [[2, 0], [1, 2]]
    assert per_class[1] == {"class": "malignant", "precision": 1.0, "recall": 2 / 3, "support": 3}


def breast_cancer():
    data = load_breast_cancer(as_frame=True)
    frame = data.frame.drop(columns="target")
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    frame["diagnosis"] = [data.target_names[i] for i in data.target]
    spec = DatasetSpec.from_dict(
        {
            "name": "cancer",
            "task": "classification",
            "target": {"name": "diagnosis", "allowed": list(CLASSES)},
            "numeric": [{"name": c} for c in frame.columns if c != "diagnosis"],
        }
    )
    return split(frame, spec), spec


@pytest.mark.parametrize("model_type", ["hist_gradient_boosting", "random_forest",
                                        "logistic_regression"])  # fmt: skip
def test_every_classifier_type_beats_the_majority_class_on_real_data(model_type):
    splits, spec = breast_cancer()
    m = fit(splits, spec, TrainingConfig(model_type)).metrics
    assert m["test_balanced_accuracy"] > 0.9 > m["baseline_test_balanced_accuracy"] == 0.5
    assert m["test_log_loss"] < 0.5 * m["baseline_test_log_loss"]
    assert m["baseline_test_accuracy"] == pytest.approx(
        (splits["test"]["diagnosis"] == "benign").mean()  # the majority class in train
    )
    assert "train_target_min" not in m


def test_an_estimator_of_the_wrong_task_is_refused_by_name():
    with pytest.raises(EstimatorError, match="'ridge' is for regression"):
        make_estimator(TrainingConfig("ridge"), "classification")
    with pytest.raises(EstimatorError, match="'logistic_regression' is for classification"):
        make_estimator(TrainingConfig("logistic_regression"), "regression")
    with pytest.raises(EstimatorError, match=r"'sklearn\.linear_model\.Lasso' is not a classifier"):
        make_estimator(TrainingConfig("sklearn.linear_model.Lasso"), "classification")
    with pytest.raises(EstimatorError, match="is a classifier; the dataset spec's task is regr"):
        make_estimator(TrainingConfig("sklearn.svm.SVC"), "regression")
    svc = make_estimator(TrainingConfig("sklearn.svm.SVC", {"probability": True}), "classification")
    assert svc.probability is True


def test_a_classification_search_is_seeded_and_scores_log_loss_on_val():
    from mlops_assets.ml.estimator import SearchConfig
    from mlops_assets.ml.search import search

    splits, spec = breast_cancer()
    config = TrainingConfig("logistic_regression", search=SearchConfig(trials=4))
    first = search(splits["train"], splits["val"], spec, config, config.search)
    again = search(splits["train"], splits["val"], spec, config, config.search)
    assert first.objective == "val_log_loss"
    assert first.best_params == again.best_params
    assert 0 < first.best_value < 0.5
    assert isinstance(pd.Series(first.best_params)["C"], float)


def test_a_registered_classifier_answers_with_named_classes_and_probabilities():
    from mlops_assets.ml.answering import ClassAnswer
    from mlops_assets.ml.estimator import model_input
    from mlops_assets.ml.serving import compare_answers, parse_answers

    splits, spec = breast_cancer()
    pipeline = fit(splits, spec, TrainingConfig("logistic_regression")).pipeline
    rows = model_input(splits["test"].head(4), spec)
    answered = ClassAnswer(pipeline, spec.classes).predict(rows)
    assert list(answered.columns) == [
        "prediction",
        "probability_benign",
        "probability_malignant",
    ]
    assert answered["prediction"].tolist() == pipeline.predict(rows).tolist()
    # What the scoring server sends back for that frame reads as the same answer.
    body = '{"predictions": ' + answered.to_json(orient="records") + "}"
    served = answer_frame(parse_answers(body), spec)
    assert compare_answers(served, answer_frame(answered, spec)).matches  # JSON: to 1e-6
    with pytest.raises(ValueError, match="no column probability_benign"):
        answer_frame(answered.drop(columns="probability_benign"), spec)
