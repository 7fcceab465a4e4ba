"""How assets and checks that talk to servers ride out transient faults, and fail at once on
faults no retry can cure: a full disk, a signal to stop, a configuration that cannot work."""

import functools
import inspect
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

from dagster import Backoff, DagsterExecutionInterruptedError, Failure, Jitter, RetryPolicy

from mlops_assets.ml.estimator import EstimatorError
from mlops_assets.resources.object_store import is_permanent_os_error

# Three more attempts after about 2, 4 and 8 seconds. Clients retry single requests
# themselves (boto3 standard mode); this covers a server that is down for a few seconds.
# Bad input raises Failure(allow_retries=False), so it fails at once; so do the permanent
# faults of permanent_error and the configuration errors of CONFIGURATION_ERRORS (see fail_fast).
SERVER_RETRY = RetryPolicy(
    max_retries=3, delay=2, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS
)

F = TypeVar("F", bound=Callable[..., Any])

# Errors that say the configuration cannot work (an estimator that cannot be imported, params
# it refuses, a class no model can carry): a retry runs the same config on the same data, so
# it fails the same way, only later.
CONFIGURATION_ERRORS: tuple[type[Exception], ...] = (EstimatorError,)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from or while handling, each once."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def permanent_error(exc: BaseException) -> BaseException | None:
    """The fault in ``exc`` or its causes that no retry can cure (a full disk, a read-only
    file system, an exhausted quota, SQLite's "database or disk is full"), or None."""
    for current in _causes(exc):
        if is_permanent_os_error(current):
            return current
        if isinstance(current, sqlite3.OperationalError) and "disk is full" in str(current):
            return current
    return None


def configuration_error(exc: BaseException) -> BaseException | None:
    """The error of CONFIGURATION_ERRORS in ``exc`` or its causes, or None."""
    return next((e for e in _causes(exc) if isinstance(e, CONFIGURATION_ERRORS)), None)


# What Dagster raises in a step when its process gets SIGTERM or SIGINT. With a retry policy,
# Dagster retries the step in the same process: a run told to stop (a pod eviction, `podman
# stop`, `kill`) went on, and finished what it was told to stop doing.
INTERRUPTS = (DagsterExecutionInterruptedError, KeyboardInterrupt)


def _as_failure(exc: BaseException) -> Failure | None:
    if isinstance(exc, INTERRUPTS):
        return Failure(
            allow_retries=False,
            description="interrupted: the process was told to stop (SIGTERM or SIGINT), so the "
            "step is not retried; the next run finishes what it left",
        )
    if isinstance(exc, Failure):
        return None
    configured = configuration_error(exc)
    if configured is not None:
        return Failure(allow_retries=False, description=str(configured))
    found = permanent_error(exc)
    if found is None:
        return None
    return Failure(
        allow_retries=False,
        description=f"{found} ({type(found).__name__}); a retry cannot cure this, so none is "
        "made: free space or make the store writable, then run again",
    )


def _reraise(exc: BaseException) -> NoReturn:
    """Raise ``exc`` as the Failure that fails the step at once, or as it is."""
    failure = _as_failure(exc)
    if failure is None:
        raise exc
    raise failure from exc


def fail_fast(fn: F) -> F:
    """Wrap an asset's or check's function so that a permanent fault, a configuration error,
    or a signal to stop, fails the step at once instead of being retried with backoff by
    SERVER_RETRY. Dagster
    reads the wrapped function's signature, so resources and inputs are unchanged."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator(*args: Any, **kwargs: Any) -> Iterator[Any]:
            try:
                yield from fn(*args, **kwargs)
            except (Exception, *INTERRUPTS) as exc:
                _reraise(exc)

        return generator  # type: ignore[return-value]

    @functools.wraps(fn)
    def function(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (Exception, *INTERRUPTS) as exc:
            _reraise(exc)

    return function  # type: ignore[return-value]
