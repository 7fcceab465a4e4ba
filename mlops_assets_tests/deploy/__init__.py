"""Tests of deploy/: what can be proven about the Kubernetes deployment without a cluster."""

from typing import NoReturn

import pytest


def skip_loudly(reason: str) -> NoReturn:
    """Skip, printing the reason in the test's output as well as pytest's summary (-ra)."""
    message = f"SKIPPED LOUDLY: {reason}"
    print(message)
    pytest.skip(message)
