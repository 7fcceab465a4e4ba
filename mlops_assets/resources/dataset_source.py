"""Where labelled data and incoming batches come from, and the contract they follow."""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from functools import cached_property
from pathlib import Path

from dagster import ConfigurableResource

from mlops_assets.ml.sample_data import generate_house_prices, to_csv_bytes
from mlops_assets.ml.spec import DatasetSpec, load_spec
from mlops_assets.ml.tabular import TableFile
from mlops_assets.resources.object_store import S3Config, s3_client, s3_server
from mlops_assets.settings import env_field

DATA_SUFFIXES = (".csv", ".parquet")
HTTP_TIMEOUT_SECONDS = 60


class SourceUnavailable(RuntimeError):
    """The source could not be read at all (missing path, HTTP error, unknown scheme).

    ``transient`` marks faults worth retrying (server errors, timeouts, connection failures);
    ``code`` is the server's answer where there was one (an HTTP status, an S3 error code).
    """

    def __init__(self, message: str, transient: bool = False, code: str = ""):
        super().__init__(message)
        self.transient = transient
        self.code = code


def is_data_file(name: str) -> bool:
    """A .csv or .parquet file that is not hidden: a file written under a '.' name and renamed
    when complete is not read half-written."""
    base = Path(name).name
    return base.lower().endswith(DATA_SUFFIXES) and not base.startswith(".")


def _data_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and is_data_file(p.name))


def _local_path(uri: str) -> Path | None:
    """The path a file:// URI or a plain path (or a drive letter) names; None for other schemes."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme == "file":
        return Path(urllib.parse.unquote(parts.path))
    if parts.scheme == "" or len(parts.scheme) == 1:
        return Path(uri).expanduser()
    return None


@contextmanager
def _s3_errors(action: str) -> Iterator[None]:
    """S3 client errors as SourceUnavailable: '<action> failed: <code or error>'."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        raise SourceUnavailable(
            f"{action} failed: {code}", transient=status >= 500, code=code
        ) from exc
    except BotoCoreError as exc:
        raise SourceUnavailable(f"{action} failed: {exc}", transient=True) from exc


def _sample(uri: urllib.parse.SplitResult) -> list[TableFile]:
    if uri.netloc != "house-prices":
        raise SourceUnavailable(f"unknown sample dataset '{uri.netloc}' in {uri.geturl()}")
    query = dict(urllib.parse.parse_qsl(uri.query))
    try:
        rows = int(query.get("rows", "1000"))
        seed = int(query.get("seed", "42"))
    except ValueError as exc:
        raise SourceUnavailable(f"bad sample parameters in {uri.geturl()}: {exc}") from exc
    drift = query.get("drift", "0") not in ("0", "false", "")
    frame = generate_house_prices(rows, seed=seed, drift=drift)
    if query.get("labels", "1") in ("0", "false"):
        frame = frame.drop(columns=["price"])
    name = f"house-prices-{rows}-seed{seed}{'-drift' if drift else ''}.csv"
    return [TableFile(name, to_csv_bytes(frame))]


def _http(url: str) -> list[TableFile]:
    request = urllib.request.Request(url, headers={"User-Agent": "mlops-assets"})
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS) as response:
            data = response.read()
    except urllib.error.HTTPError as exc:
        raise SourceUnavailable(
            f"GET {url} answered HTTP {exc.code} {exc.reason}",
            transient=exc.code >= 500,
            code=str(exc.code),
        ) from exc
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise SourceUnavailable(f"GET {url} failed: {exc}", transient=True) from exc
    name = Path(urllib.parse.urlsplit(url).path).name or "download.csv"
    return [TableFile(name, data)]


def _local(path: Path) -> list[TableFile]:
    if path.is_file():
        return [TableFile(path.name, path.read_bytes())]
    if path.is_dir():
        return [
            TableFile(p.relative_to(path).as_posix(), p.read_bytes()) for p in _data_files(path)
        ]
    raise SourceUnavailable(f"source path {path} does not exist")


def _s3(uri: urllib.parse.SplitResult, s3: S3Config | None) -> list[TableFile]:
    """One object, or every .csv/.parquet object under a prefix ending in '/'."""
    bucket, key = uri.netloc, uri.path.lstrip("/")
    client = s3_client(s3)
    with _s3_errors(f"reading {uri.geturl()} from {s3_server(s3)}"):
        if key and not key.endswith("/"):
            body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
            return [TableFile(Path(key).name, body)]
        files = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
            for item in page.get("Contents", []):
                name = item["Key"]
                if is_data_file(name):
                    body = client.get_object(Bucket=bucket, Key=name)["Body"].read()
                    files.append(TableFile(name[len(key) :], body))
        return sorted(files, key=lambda f: f.name)


def read_uri(uri: str, s3: S3Config | None = None) -> list[TableFile]:
    """Read every data file a source URI names, in a stable order."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme == "s3":
        return _s3(parts, s3)
    if parts.scheme == "sample":
        return _sample(parts)
    if parts.scheme in ("http", "https"):
        return _http(uri)
    path = _local_path(uri)
    if path is not None:
        return _local(path)
    raise SourceUnavailable(
        f"source {uri} has scheme '{parts.scheme}'; supported: a path, file://, http(s)://, "
        "s3://, sample://"
    )


def is_generated(uri: str) -> bool:
    """A sample:// source is generated on read: nothing ever lands there."""
    return urllib.parse.urlsplit(uri).scheme == "sample"


def _digest(entries: Sequence[tuple[object, ...]]) -> str | None:
    if not entries:
        return None
    text = "\n".join("\0".join(str(part) for part in entry) for entry in sorted(entries))
    return hashlib.sha256(text.encode()).hexdigest()


def _local_fingerprint(path: Path) -> str | None:
    if path.is_file():
        stat = path.stat()
        return _digest([(path.name, stat.st_size, stat.st_mtime_ns)])
    if path.is_dir():
        entries = []
        for file in _data_files(path):
            stat = file.stat()
            entries.append((file.relative_to(path).as_posix(), stat.st_size, stat.st_mtime_ns))
        return _digest(entries)
    return None


def _s3_fingerprint(uri: urllib.parse.SplitResult, s3: S3Config | None) -> str | None:
    bucket, key = uri.netloc, uri.path.lstrip("/")
    client = s3_client(s3)
    single = bool(key) and not key.endswith("/")

    def wanted(name: str) -> bool:
        return name == key if single else is_data_file(name)

    try:
        with _s3_errors(f"listing {uri.geturl()} on {s3_server(s3)}"):
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
            entries = [
                (item["Key"], item.get("ETag", ""), item.get("Size", 0))
                for page in pages
                for item in page.get("Contents", [])
                if wanted(item["Key"])
            ]
    except SourceUnavailable as exc:
        if exc.code == "NoSuchBucket":
            return None
        raise
    return _digest(entries)


def _http_fingerprint(url: str) -> str | None:
    """ETag, or Last-Modified and length, from a HEAD request; the body's hash otherwise."""
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "mlops-assets"})
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS) as response:
            headers = response.headers
    except urllib.error.HTTPError as exc:
        if exc.code in (404, 410):
            return None
        if exc.code not in (405, 501):  # servers that refuse HEAD get a GET below
            raise SourceUnavailable(
                f"HEAD {url} answered HTTP {exc.code} {exc.reason}", transient=exc.code >= 500
            ) from exc
        headers = None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise SourceUnavailable(f"HEAD {url} failed: {exc}", transient=True) from exc
    if headers is not None:
        validator = headers.get("ETag") or (
            f"{headers.get('Last-Modified', '')}/{headers.get('Content-Length', '')}"
            if headers.get("Last-Modified")
            else ""
        )
        if validator:
            return _digest([(url, validator)])
    try:
        body = _http(url)[0].data
    except SourceUnavailable as exc:
        if exc.code in ("404", "410"):
            return None
        raise
    return _digest([(url, hashlib.sha256(body).hexdigest())])


def fingerprint_uri(uri: str, s3: S3Config | None = None) -> str | None:
    """A digest that changes when the data at ``uri`` changes, or None when nothing is there.

    Reads listings and headers, not contents (sizes and mtimes, S3 ETags, HTTP validators),
    so a sensor can ask every few seconds. Generated sample:// sources have no fingerprint.
    """
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme == "sample":
        raise SourceUnavailable(f"{uri} is generated on read; there is no location to watch")
    if parts.scheme == "s3":
        return _s3_fingerprint(parts, s3)
    if parts.scheme in ("http", "https"):
        return _http_fingerprint(uri)
    path = _local_path(uri)
    if path is not None:
        return _local_fingerprint(path)
    raise SourceUnavailable(f"source {uri} has scheme '{parts.scheme}'; nothing to watch")


class DatasetSourceResource(ConfigurableResource):
    """The dataset contract (spec) and the locations of labelled data and incoming batches."""

    spec_path: str = env_field(
        "MLOPS_DATASET_SPEC",
        "",
        "JSON dataset spec file; empty means the house-price spec.",
    )
    source_uri: str = env_field(
        "MLOPS_SOURCE_URI",
        "sample://house-prices?rows=5000&seed=42",
        "Labelled training data: a file, a directory of .csv/.parquet files, an http(s) URL, "
        "or sample://house-prices?rows=N&seed=S[&drift=1].",
    )
    incoming_uri: str = env_field(
        "MLOPS_INCOMING_URI",
        "sample://house-prices?rows=2000&seed={day}",
        "Incoming batch of a daily partition; {date} becomes YYYY-MM-DD, {day} YYYYMMDD.",
    )
    # The S3 configuration of s3:// sources (the object store's); None means AWS defaults.
    s3: S3Config | None = None

    @cached_property
    def spec(self) -> DatasetSpec:
        return load_spec(self.spec_path)

    def read_source(self) -> list[TableFile]:
        return read_uri(self.source_uri, self.s3)

    def incoming_batch_uri(self, day: date) -> str:
        return self.incoming_uri.format(date=day.isoformat(), day=day.strftime("%Y%m%d"))

    def read_incoming(self, day: date) -> list[TableFile]:
        return read_uri(self.incoming_batch_uri(day), self.s3)

    def source_fingerprint(self) -> str | None:
        """What the labelled-data sensor compares between ticks (see ``fingerprint_uri``)."""
        return fingerprint_uri(self.source_uri, self.s3)

    def incoming_fingerprint(self, day: date) -> str | None:
        return fingerprint_uri(self.incoming_batch_uri(day), self.s3)
