"""The classifier as it is registered and served: it answers with classes and probabilities.

MLflow's scikit-learn flavour serves one method's output; ``predict_proba`` alone would answer
with bare numbers whose order only the model's metadata names. ``ClassAnswer`` wraps the fitted
Pipeline and its ``predict`` returns, per row, the most probable class and one named
probability column per class of the spec, in process and from the served image alike
(``{"predictions": [{"prediction": "benign", "probability_benign": 0.97, ...}]}``).

The project's source travels in every classifier's MLflow model (``code_paths``); this module
and :mod:`mlops_assets.ml.tasks`, which builds the answer, import nothing beyond what the served
image has: numpy, pandas and scikit-learn. The code location imports this module only where a
model is built or read, since it imports scikit-learn.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin

from mlops_assets.ml.tasks import class_answer


class ClassAnswer(ClassifierMixin, BaseEstimator):
    """A fitted classifier whose ``predict`` answers with the class and its probabilities.

    ``classes`` are the spec's classes, in the spec's order: a class the model never saw in
    training has probability 0.
    """

    answers_with_classes = True  # tasks.ANSWERS_WITH_CLASSES: answer() takes predict as it is

    def __init__(self, model: Any = None, classes: tuple[str, ...] = ()):
        self.model = model
        self.classes = classes

    @property
    def classes_(self) -> np.ndarray:
        return np.asarray(self.model.classes_)

    def fit(self, x: Any, y: Any) -> ClassAnswer:
        self.model.fit(x, y)
        return self

    def predict_proba(self, x: Any) -> np.ndarray:
        """The wrapped model's probabilities, columns in ``classes_`` order (scikit-learn's)."""
        return np.asarray(self.model.predict_proba(x))

    def predict(self, x: Any) -> pd.DataFrame:
        return class_answer(self.predict_proba(x), [str(c) for c in self.classes_], self.classes)
