"""Partitioned asset checks: each model's daily partitions are its own (ModelScope.partitions),
and its checks of a day are declared on them."""

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from dagster import PreviewWarning


@contextmanager
def partitioned_checks() -> Iterator[None]:
    """Where the daily assets' checks are declared on the same partitions: Dagster's preview
    warning for that, and only it, is silenced. Partitioned checks are what makes each day's
    checks judge that day, so the preview is accepted knowingly."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message="Specifying a partitions_def on an AssetCheckSpec is currently in preview",
            category=PreviewWarning,
        )
        yield
