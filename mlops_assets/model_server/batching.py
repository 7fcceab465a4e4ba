"""Requests predicted together: how many a worker may put in one call of its model
(``MLOPS_SERVING_BATCH``, or ``auto``: decided from the model's steps and its input example),
and the :class:`Batcher` that does it."""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from . import signature
from .limits import rows_without_values

AUTO_BATCH = 16  # what auto gives a model that answers each row on its own


BATCHING_LINE = "serving worker {pid}: up to {batch} request(s) predicted together ({why})"
_BATCHING_ANNOUNCED = re.compile(
    r"^serving worker \d+: up to (\d+) request\(s\) predicted together \((.*)\)$", re.MULTILINE
)


def announced_batches(log: str) -> list[tuple[int, str]]:
    """What each worker that has started said about batching in the server's ``log``: how
    many requests it predicts together, and why."""
    return [(int(batch), why) for batch, why in _BATCHING_ANNOUNCED.findall(log)]


# Fitted scikit-learn classes (exact types, not subclasses) that work on each row on its own,
# value by value, so that a row's answer is the same bytes whatever rows come with it:
# imputing, scaling and encoding are elementwise; a tree model walks each row down its trees
# and adds up their leaves in tree order. A linear model is not among them: its rows are
# multiplied as one matrix, and the last digit can differ with the rows beside them.
ROW_WISE_STEPS = frozenset(
    {
        "sklearn.impute._base.SimpleImputer",
        "sklearn.preprocessing._data.StandardScaler",
        "sklearn.preprocessing._encoders.OneHotEncoder",
        "sklearn.preprocessing._encoders.OrdinalEncoder",
        "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingRegressor",
        "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
        "sklearn.tree._classes.DecisionTreeRegressor",
        "sklearn.tree._classes.DecisionTreeClassifier",
    }
)
_PIPELINE = "sklearn.pipeline.Pipeline"
_COLUMN_TRANSFORMER = "sklearn.compose._column_transformer.ColumnTransformer"
_CLASS_ANSWER = "mlops_assets.ml.answering.ClassAnswer"  # the project's classifier wrapper


def _type_name(value: Any) -> str:
    kind = type(value)
    return f"{kind.__module__}.{kind.__qualname__}"


def not_row_wise(estimator: Any) -> list[str]:
    """The parts of a fitted scikit-learn ``estimator`` not known to answer each row on its
    own (:data:`ROW_WISE_STEPS`), by class name; empty when every part is. A Pipeline's steps,
    a ColumnTransformer's transformers and the project's classifier wrapper are looked into."""
    if estimator is None or isinstance(estimator, str):  # a skipped step: "drop", "passthrough"
        return []
    name = _type_name(estimator)
    if name == _PIPELINE:
        return [part for _, step in estimator.steps for part in not_row_wise(step)]
    if name == _COLUMN_TRANSFORMER:
        return [part for _, step, _ in estimator.transformers_ for part in not_row_wise(step)]
    if name == _CLASS_ANSWER:
        return not_row_wise(estimator.model)
    return [] if name in ROW_WISE_STEPS else [type(estimator).__name__]


def same_answer(one: Any, other: Any) -> bool:
    """Whether two predictions are the same: the same type, and the same values (numbers as
    the same bytes)."""
    import numpy as np
    import pandas as pd

    if type(one) is not type(other):
        return False
    if isinstance(one, pd.DataFrame | pd.Series):
        return bool(one.equals(other))
    if isinstance(one, np.ndarray):
        if one.shape != other.shape or one.dtype != other.dtype:
            return False
        if one.dtype.kind in "biufc":
            return one.tobytes() == other.tobytes()
        return bool(np.array_equal(one, other))
    return bool(one == other)


def answers_rows_alone(model: Any, example: Any) -> bool:
    """Whether ``model`` (as MLflow loaded it) answers every row of the table ``example``,
    predicted together, exactly as it answers that row predicted alone."""
    together = split_rows(model.predict(example), [1] * len(example))
    if together is None:
        return False
    return all(
        same_answer(part, model.predict(example.iloc[[row]].reset_index(drop=True)))
        for row, part in enumerate(together)
    )


def batch_for_model(model: Any, setting: int | None, example: Any = None) -> tuple[int, str]:
    """How many requests a worker serving ``model`` (as MLflow loaded it) predicts in one
    call, and why: ``setting`` when MLOPS_SERVING_BATCH gives one; for ``auto`` (None),
    :data:`AUTO_BATCH` when every part of the model is known to answer each row on its own
    and its input example (the table ``example``, when the model has one) confirms it, else 1,
    each request alone, as MLflow's server does."""
    if setting is not None:
        return setting, "MLOPS_SERVING_BATCH"
    try:
        raw = model.get_raw_model()
    except (AttributeError, NotImplementedError):
        return 1, "auto: not a scikit-learn model, so each request is predicted alone"
    unknown = not_row_wise(raw)
    if unknown:
        return 1, (
            f"auto: {', '.join(dict.fromkeys(unknown))} not known to answer each row alone "
            "whatever rows come with it, so each request is predicted alone"
        )
    import pandas as pd

    if not isinstance(example, pd.DataFrame) or len(example) < 2:
        return AUTO_BATCH, "auto: every step answers each row on its own (no input example)"
    if not answers_rows_alone(model, example):
        return 1, (
            "auto: the model's input example answered differently predicted together, so "
            "each request is predicted alone"
        )
    return AUTO_BATCH, (
        f"auto: every step answers each row on its own, as its {len(example)}-row input "
        "example confirms"
    )


# The JSON values a column of each MLflow type may hold for its requests' rows to be read
# together (:meth:`Batcher.predict_rows`): pandas' reading of a table guesses each column's
# type from all its values before MLflow casts it to the signature's, so rows are read with
# others only where that guess cannot change a value: numbers for a number's column (whole
# numbers within 64 bits; for a float32 column within 2**53, which float64 holds exactly: a
# larger one is rounded once alone, twice beside a float), whole numbers for a whole number's,
# text for text (a number beside a null reads as a float: 5.0, where alone it is 5), true or
# false for a boolean (a null beside a number reads as NaN, which casts to true, where alone
# it is false), and null where it reads the same either way. Not among the types: datetime
# (pandas guesses the format from the first value), binary (base64), arrays, objects, maps,
# ``any``.
_INT64 = (-(2**63), 2**63 - 1)
JSON_VALUES: dict[str, tuple[tuple[type, ...], bool, tuple[int, int]]] = {
    # MLflow type: (value types, null allowed, whole numbers' range)
    "double": ((int, float), True, _INT64),
    "float": ((int, float), True, (-(2**53), 2**53)),
    "long": ((int,), False, _INT64),
    "integer": ((int,), False, _INT64),
    "string": ((str,), True, (0, 0)),
    "boolean": ((bool,), True, (0, 0)),
}


def split_rows_alone(split: Any) -> bool:
    """Whether a ``dataframe_split`` document's table is plain rows that could be read with
    another's of the same columns: ``columns`` (distinct names) and ``data`` (a list of rows
    as lists) and nothing else, and no row without a value (it is refused on its own)."""
    if not isinstance(split, dict) or split.keys() != {"columns", "data"}:
        return False
    columns, rows = split["columns"], split["data"]
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        return False
    if len(set(columns)) != len(columns) or not isinstance(rows, list) or not rows:
        return False
    return all(isinstance(row, list) and not all(v is None or v != v for v in row) for row in rows)


def values_fit(
    rows: list[list[Any]], kinds: list[tuple[tuple[type, ...], bool, tuple[int, int]]]
) -> bool:
    """Whether every value of ``rows`` is of its column's kind (:data:`JSON_VALUES`): of
    one of its types exactly (a boolean is not a number here), a whole number within its
    bound, or a null where allowed."""
    for row in rows:
        for value, (types, nullable, (least, most)) in zip(row, kinds, strict=True):
            if value is None:
                fits = nullable
            else:
                kind = type(value)
                fits = kind in types and (kind is not int or least <= value <= most)
            if not fits:
                return False
    return True


class PredictAlone(Exception):
    """A request whose rows were read and predicted with others' and failed (:meth:`Batcher.
    predict_rows`): MLflow's function is to read it, and the batcher to predict it alone
    (``predict(..., alone=True)``), so that it gets its own answer and no other request fails
    with it again."""


class _Pending:
    """One request's rows waiting for the model (a table MLflow read, or a ``dataframe_split``
    still to be read), and what came of them."""

    def __init__(
        self,
        data: Any,
        params: dict[str, Any] | None,
        abandoned: threading.Event,
        split: dict[str, Any] | None = None,
        alone: bool = False,
    ) -> None:
        self.data = data
        self.params = params
        self.abandoned = abandoned
        self.split = split
        self.alone = alone  # predicted in a call of its own
        self.turn = threading.Event()  # settled, or its thread is to lead
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None

    def settle(self, result: Any = None, error: BaseException | None = None) -> None:
        self.result, self.error, self.done = result, error, True


class Batcher:
    """One prediction at a time, in order of arrival; the requests that arrived while the
    model was busy are predicted together, in one call, at most ``most`` of them.

    Whichever waiting request's thread finds the model free makes the call for everyone
    waiting (its own request among them), so a request that finds the model free is
    predicted on its own thread at once, as without batching. When the call is done it wakes
    the threads whose requests it settled, and hands the next call to the oldest request
    still waiting: one thread wakes for each request, not every waiting thread for each call
    (that took 22% of a worker's GIL at 16 connections).

    A ``dataframe_split`` request is read here too (:meth:`predict_rows`): MLflow's reading of
    a one-row request into the signature's types costs about 0.9 ms, as much as a fifth of the
    model's call, and the same for eight rows. Requests' rows are read as one table, by
    MLflow's own reading, once per call, where each value is of its column's kind so that
    pandas' guess at a column's type cannot change it (:data:`JSON_VALUES`); each request
    gets its own rows of the table (for the traffic log) and its own rows' predictions.
    Paired against the image before (bench/serving_against.py, 12 rounds of 8 s at 16
    connections): 1.50x the throughput, 0.78x the p99.

    A single-row request keeps a worker busy about 6 ms, nearly all of it the fixed cost of a
    call (MLflow's schema enforcement, the Pipeline's pandas column selection and each step's
    validation): 16 rows take about as long as one. Requests are put together only where that
    cannot change what each would be told alone: tables (no params) with the same columns of
    the same types, none of them an untyped (object) column whose type MLflow would infer from
    its values, unless the signature says it is text. Each request gets its own rows'
    predictions back, of the type the model returned. When the call fails, or its result
    cannot be split by rows, each request is predicted alone: a bad request gets its own error,
    the others their answers. A request whose client was answered 504 before its turn is not
    predicted.

    A tree model scores each row on its own and answers the same bytes either way. A linear
    model's numbers can differ in the last digit (a few parts in 1e16: the rows are multiplied
    as one matrix), which is why the default, MLOPS_SERVING_BATCH=auto, batches only a model
    whose every step is known to answer each row alone (:func:`batch_for_model`).
    """

    def __init__(
        self,
        model: Any,
        most: int,
        input_schema: Any = None,
        calls: Callable[[int], object] | None = None,
        read: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        self.model = model
        self.most = max(1, most)
        self.calls = calls  # told how many requests each call of the model predicts
        # How a ``dataframe_split`` is read (MLflow's reading, cast to the signature); given,
        # and when the signature names every column with a type read row by row, requests'
        # rows are read together too (see predict_rows).
        specs = signature.columns(input_schema)
        self.read = (
            read
            if read is not None
            and specs
            and input_schema.has_input_names()
            and all(signature.type_name(spec, "") in JSON_VALUES for spec in specs)
            else None
        )
        self._kinds = (
            {str(spec.name): JSON_VALUES[signature.type_name(spec, "")] for spec in specs}
            if self.read is not None
            else {}
        )
        # Columns whose object values MLflow passes through as they are (None: no signature).
        self._text: set[str] | None = None
        if input_schema is not None:
            self._text = {
                str(spec.name)
                for spec in specs
                if signature.type_name(spec, "") in ("string", "binary")
            }
        # Guards _waiting, _busy and _coming; the one thread making the model's calls (the
        # leader) waits on it for requests on their way. The others wait on their own events.
        self._turn = threading.Condition()
        self._waiting: list[_Pending] = []
        self._busy = False  # a thread is the leader
        self._coming = 0  # requests being read on their way here (see coming())

    # How long a call of the model waits for requests still being read (their JSON parsed on
    # their scoring threads): at 16 connections a call took 3.7 requests on average without
    # waiting, and a call's cost is nearly all fixed. Paired against the image before
    # (bench/serving_against.py, 16 rounds): 1.20x the throughput, 0.89x the p99. A request
    # alone (nothing being read) never waits.
    gather_seconds = 0.002

    @contextmanager
    def coming(self) -> Iterator[threading.Event]:
        """Around a request read on its way to :meth:`predict` (given what this yields): until
        it arrives (or fails on the way), a thread about to call the model waits for it, up to
        :attr:`gather_seconds`."""
        arrived = threading.Event()
        with self._turn:
            self._coming += 1
        try:
            yield arrived
        finally:
            with self._turn:
                if not arrived.is_set():
                    self._coming -= 1
                    self._turn.notify()

    @property
    def waiting(self) -> int:
        """Requests waiting for their turn at the model."""
        with self._turn:
            return len(self._waiting)

    def predict(
        self,
        data: Any,
        params: dict[str, Any] | None,
        abandoned: threading.Event,
        arrived: threading.Event | None = None,
        alone: bool = False,
    ) -> Any:
        """The model's prediction of ``data``, made on this thread or by another waiting one
        (``arrived``: what :meth:`coming` yielded for this request, if it was counted), in a
        call of its own if ``alone``."""
        return self._wait(_Pending(data, params, abandoned, alone=alone), arrived)

    def predict_rows(
        self, split: dict[str, Any], abandoned: threading.Event, arrived: threading.Event | None
    ) -> tuple[Any, Any] | None:
        """A ``dataframe_split`` request's table as MLflow reads it and the model's prediction
        of it, both read and made together with the rows of the requests waiting with it (of
        the same columns): reading a request costs as much as the model's call on its rows,
        nearly all of it fixed, and each value is cast on its own. None when its rows must be
        read by MLflow's function, as without batching: the batcher does not read rows
        (:attr:`read`), or the table is not plain rows (:func:`split_rows_alone`) of the
        signature's columns (another column's type is pandas' guess from its values) holding
        values of their kinds (:func:`values_fit`). Raises :class:`PredictAlone` when reading
        or predicting them together failed: each is then read by MLflow's function and
        predicted alone, and gets its own answer."""
        if (
            self.read is None
            or not split_rows_alone(split)
            or not self._kinds.keys() >= set(split["columns"])
            or not values_fit(split["data"], [self._kinds[c] for c in split["columns"]])
        ):
            return None
        result: tuple[Any, Any] = self._wait(_Pending(None, None, abandoned, split), arrived)
        return result

    def _wait(self, pending: _Pending, arrived: threading.Event | None) -> Any:
        """Waits for ``pending`` to be settled. One thread at a time is the leader: the first
        to find the model free, then the oldest waiting request's, handed the turn by the one
        before. The leader makes one call for everyone waiting (its own request first) and
        wakes each of them; the others sleep on their own event, so that a call wakes only
        the threads whose requests it settled and the next leader."""
        with self._turn:
            self._waiting.append(pending)
            if arrived is not None and not arrived.is_set():
                arrived.set()
                self._coming -= 1
            leading = not self._busy
            self._busy = True
            if not leading:
                self._turn.notify()  # the leader may be waiting for this one
        if not leading:
            pending.turn.wait()  # settled, or handed the turn
        if not pending.done:
            self._lead()
        if pending.error is not None:
            raise pending.error
        return pending.result

    def _lead(self) -> None:
        """One call of the model for the requests waiting (this thread's own first), then the
        turn handed to the oldest request still waiting, or the model left free."""
        with self._turn:
            # Requests being read will be here in a moment: wait for them a little, so that
            # one call predicts them too (the call's cost is nearly all fixed).
            deadline = time.monotonic() + self.gather_seconds
            while self._coming and len(self._waiting) < self.most:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._turn.wait(left)
            batch, self._waiting = self._waiting[: self.most], self._waiting[self.most :]
        try:
            self._predict_batch(batch)
        except BaseException as exc:
            for pending in batch:
                if not pending.done:
                    pending.settle(error=exc)
            raise
        finally:
            with self._turn:
                following = self._waiting[0] if self._waiting else None
                self._busy = following is not None
            for pending in batch:
                pending.turn.set()
            if following is not None:
                following.turn.set()

    def _predict_batch(self, batch: list[_Pending]) -> None:
        for pending in batch:
            if pending.abandoned.is_set():
                pending.settle(error=TimeoutError("answered 504 before its turn"))
        live = [p for p in batch if not p.done]
        if not live:  # every one was answered 504 while it waited
            return
        for group in self._groups(live) if len(live) > 1 else [live]:
            self._predict(group)

    def _called(self, requests: int) -> None:
        if self.calls is not None:
            self.calls(requests)

    def _groups(self, batch: list[_Pending]) -> list[list[_Pending]]:
        """``batch`` in groups that can be predicted together, in order of arrival."""
        groups: dict[Any, list[_Pending]] = {}
        for number, pending in enumerate(batch):
            key = self._key(pending)
            groups.setdefault(("alone", number) if key is None else key, []).append(pending)
        return list(groups.values())

    def _key(self, pending: _Pending) -> Any:
        import pandas as pd

        if pending.alone:
            return None
        if pending.split is not None:
            return "rows", tuple(pending.split["columns"])
        data = pending.data
        if (
            pending.params
            or not isinstance(data, pd.DataFrame)
            or not data.index.equals(pd.RangeIndex(len(data)))
        ):
            return None
        columns, types = tuple(data.columns), tuple(data.dtypes)
        if self._text is not None and any(
            getattr(kind, "kind", "") == "O" and str(column) not in self._text
            for column, kind in zip(columns, types, strict=True)
        ):
            return None
        return columns, types

    def _predict(self, group: list[_Pending]) -> None:
        if group[0].split is not None:
            self._read_and_predict(group)
            return
        if len(group) > 1:
            parts = self._together(group)
            if parts is not None:
                for pending, part in zip(group, parts, strict=True):
                    pending.settle(part)
                return
        for pending in group:
            try:
                self._called(1)
                pending.settle(self.model.predict(pending.data, params=pending.params))
            except BaseException as exc:  # the request's thread raises it
                pending.settle(error=exc)

    def _together(self, group: list[_Pending]) -> list[Any] | None:
        import pandas as pd

        try:
            joined = pd.concat([p.data for p in group], ignore_index=True)
            self._called(len(group))
            result = self.model.predict(joined, params=None)
        except Exception:
            return None
        return split_rows(result, [len(p.data) for p in group])

    def _read_and_predict(self, group: list[_Pending]) -> None:
        """Reads the rows of ``group`` (requests' splits of the same columns) as one table
        and predicts it in one call; each request is settled with its rows and their
        prediction, or with :class:`PredictAlone` when anything failed."""
        assert self.read is not None
        splits = [p.split for p in group if p.split is not None]
        sizes = [len(split["data"]) for split in splits]
        together = {
            "columns": splits[0]["columns"],
            "data": [row for split in splits for row in split["data"]],
        }
        try:
            frame = self.read(together)
            # split_rows_alone keeps rows of nulls apart (refused alone); should a row still
            # read as no values at all, it is refused alone too.
            if rows_without_values(frame):
                raise ValueError("a row without values")
            self._called(len(group))
            parts = split_rows(self.model.predict(frame, params=None), sizes)
        except Exception:
            parts = None
        if parts is None:
            for pending in group:
                pending.settle(error=PredictAlone())
            return
        tables = split_rows(frame, sizes) or []
        for pending, table, part in zip(group, tables, parts, strict=True):
            pending.settle((table, part))


def split_rows(result: Any, sizes: list[int]) -> list[Any] | None:
    """``result``, a prediction of ``sum(sizes)`` rows, as one part per size, each as the
    model would have answered those rows alone; None when it cannot be split by rows."""
    import numpy as np
    import pandas as pd

    ends = list(itertools.accumulate(sizes))
    bounds = list(zip([0, *ends[:-1]], ends, strict=True))
    total = ends[-1] if ends else 0
    if isinstance(result, pd.DataFrame | pd.Series):
        if not result.index.equals(pd.RangeIndex(total)):
            return None
        parts = [result.iloc[start:end] for start, end in bounds]
        for part in parts:  # numbered from 0, as alone; the rows' values are not copied
            part.index = pd.RangeIndex(len(part))
        return parts
    if isinstance(result, np.ndarray):
        if result.ndim == 0 or result.shape[0] != total:
            return None
        return [result[start:end] for start, end in bounds]
    if isinstance(result, list) and len(result) == total:
        return [result[start:end] for start, end in bounds]
    return None
