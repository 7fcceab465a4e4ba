"""What the environment sets; each setting read and checked once, so that a wrong one stops the
container at once with its name.

``MLOPS_SERVING_PROTOCOL`` (mlflow/v2), ``MLOPS_SERVING_BATCH`` (requests predicted together:
``auto``, the default, 16 for a model that answers each row alone and 1 for any other; or 1 to
64), ``MLOPS_SERVING_MAX_BODY_BYTES`` (8 MiB), ``MLOPS_TRAFFIC_LOG`` (on/off),
``MLOPS_TRAFFIC_STORE`` (a folder, or ``s3://bucket/prefix`` with ``MLOPS_S3_ENDPOINT_URL``,
``MLOPS_S3_REGION`` and the standard AWS credential variables), ``MLOPS_TRAFFIC_FLUSH_SECONDS``,
``MLOPS_TRAFFIC_BUFFER`` (requests, 10,000), ``MLOPS_TRAFFIC_BUFFER_BYTES`` (64 MiB); the
journal's folder is made in ``TMPDIR``. ``MLOPS_MODEL_NAME`` and ``MLOPS_MODEL_VERSION`` (set
by the image) name the model in answers, logs and metrics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

SERVING_PORT = 8000
MODEL_PATH = "/opt/ml/model"  # where MLflow's Dockerfile puts the model
DEFAULT_STORE = "/var/lib/mlops/store"  # the image's own folder; mount the store here
# MLOPS_SERVING_MAX_BODY_BYTES's default. A body costs a worker some 30 times its size while it
# is parsed, scored and logged (a 28.8 MB one took a worker from 286 MB to 1.23 GB), so 8 MiB
# keeps one request under ~270 MB; it holds some 37,000 rows of a 10-feature table sent as
# dataframe_split (221 bytes a row), and tables larger than that are batch scoring's work.
MAX_BODY_BYTES = 8 * 1024 * 1024
# MLOPS_TRAFFIC_BUFFER_BYTES's default: the bytes of a worker's journal not yet in the store (on
# local disk). The 10,000-request bound comes first for small requests (~450 bytes a row); this
# one for large ones: a few of the largest a worker reads (the lines of a row take ~2x its JSON).
BUFFER_BYTES = 64 * 1024 * 1024
PROTOCOLS = ("mlflow", "v2")
MOST_BATCHED = 64  # requests in one prediction, at most (MLOPS_SERVING_BATCH)
AUTO = "auto"  # MLOPS_SERVING_BATCH's default: each worker decides from its model


@dataclass(frozen=True)
class TrafficSettings:
    enabled: bool = True
    store: str = DEFAULT_STORE
    flush_seconds: float = 10.0
    buffer_requests: int = 10_000
    buffer_bytes: int = BUFFER_BYTES
    s3_endpoint_url: str = ""
    s3_region: str = "us-east-1"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TrafficSettings:
        switch = env.get("MLOPS_TRAFFIC_LOG", "on").strip().lower()
        if switch not in ("on", "off", "true", "false", "1", "0"):
            raise ValueError(f"MLOPS_TRAFFIC_LOG must be on or off, not '{switch}'")
        default = cls()
        return cls(
            enabled=switch in ("on", "true", "1"),
            store=env.get("MLOPS_TRAFFIC_STORE") or default.store,
            flush_seconds=float(env.get("MLOPS_TRAFFIC_FLUSH_SECONDS") or default.flush_seconds),
            buffer_requests=int(env.get("MLOPS_TRAFFIC_BUFFER") or default.buffer_requests),
            buffer_bytes=int(env.get("MLOPS_TRAFFIC_BUFFER_BYTES") or default.buffer_bytes),
            s3_endpoint_url=env.get("MLOPS_S3_ENDPOINT_URL", ""),
            s3_region=env.get("MLOPS_S3_REGION") or default.s3_region,
        )


def max_body_bytes(env: Mapping[str, str]) -> int:
    """MLOPS_SERVING_MAX_BODY_BYTES of ``env``: the largest request body a worker reads, in
    bytes (:data:`MAX_BODY_BYTES` when unset); anything but a whole number above 0 is named."""
    text = env.get("MLOPS_SERVING_MAX_BODY_BYTES", "").strip()
    if not text:
        return MAX_BODY_BYTES
    if not text.isdigit() or int(text) < 1:
        raise ValueError(
            f"MLOPS_SERVING_MAX_BODY_BYTES must be a whole number of bytes above 0, not '{text}'"
        )
    return int(text)


def serving_protocol(env: Mapping[str, str]) -> str:
    """MLOPS_SERVING_PROTOCOL of ``env``: mlflow (the default) or v2; anything else is named."""
    protocol = env.get("MLOPS_SERVING_PROTOCOL", "mlflow").strip().lower() or "mlflow"
    if protocol not in PROTOCOLS:
        raise ValueError(
            f"MLOPS_SERVING_PROTOCOL must be one of {', '.join(PROTOCOLS)}, not '{protocol}'"
        )
    return protocol


def serving_batch(env: Mapping[str, str]) -> int | None:
    """MLOPS_SERVING_BATCH of ``env``: how many requests a worker may predict in one call, 1
    (each alone) to :data:`MOST_BATCHED`; None for ``auto`` (the default), where each worker
    decides from its model (:func:`batch_for_model`). Anything else is named."""
    text = env.get("MLOPS_SERVING_BATCH", AUTO).strip().lower() or AUTO
    if text == AUTO:
        return None
    value = int(text) if text.isdigit() else 0
    if not 1 <= value <= MOST_BATCHED:
        raise ValueError(
            f"MLOPS_SERVING_BATCH must be {AUTO} or a whole number from 1 to {MOST_BATCHED}, "
            f"not '{text}'"
        )
    return value
