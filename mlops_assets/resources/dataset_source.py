"""Where labelled data and incoming batches come from, and the contract they follow.

Every read of a source (the labelled data, or one day's incoming batch) from a path, file://,
http(s):// or s3:// is bounded, all its files together, by :class:`SourceLimits`: a deadline
for the whole read (not per socket read), bytes, rows, and what its Parquet files decode to.
Sizes that are known up front (Content-Length, S3 object sizes and listings, file sizes) are
checked before a byte is read; everything is counted again while it streams, and the read
stops at the limit. Generated sample:// sources are not bounded: nothing outside made them.

A source folder is read by one rule: its data files are regular files, or symbolic links
that resolve to regular files inside the folder. A link out of the folder, a dangling link,
or a FIFO, socket or device with a data file's name fails the whole read before any file is
read, naming each such entry; other names are never opened. Links to folders are not
descended. Each file is opened from the folder's own descriptor one path component at a
time with O_NOFOLLOW and checked with fstat, so a file swapped for a link or a pipe between
the check and the open is refused, never followed. The configured path itself is trusted
and may be a link; if it is a FIFO, socket or device, the read fails saying so.

A source URL's userinfo and query values never appear in a message (see ``redact_uri``).
Rejections (a limit, the folder rule, a special file) raise :class:`SourceRejected`, which
is never transient; :class:`SourceUnavailable` is transient only for faults worth retrying.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import stat
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import Any

from dagster import ConfigurableResource

from mlops_assets.lib.env_settings import env_field, model_field, model_value
from mlops_assets.lib.metadata import redact_uri
from mlops_assets.ml.sample_data import generate_house_prices, to_csv_bytes, wine_rows
from mlops_assets.ml.spec import DatasetSpec, load_spec
from mlops_assets.ml.tabular import TableFile
from mlops_assets.resources.object_store import S3Config, s3_client, s3_server

DATA_SUFFIXES = (".csv", ".parquet")
# Longest a single socket read may wait for its next byte (a fault worth retrying when it
# happens before the source's own deadline).
HTTP_TIMEOUT_SECONDS = 60
STREAM_CHUNK_BYTES = 1 << 20
# A socket read given the time left before the deadline may give up a little before it.
DEADLINE_SLACK_SECONDS = 0.1
# Parquet is decoded for counting in batches of about this many bytes of fixed-width columns.
PARQUET_BATCH_BYTES = 16 << 20

MAX_SECONDS = "MLOPS_SOURCE_MAX_SECONDS"
MAX_BYTES = "MLOPS_SOURCE_MAX_BYTES"
MAX_ROWS = "MLOPS_SOURCE_MAX_ROWS"
MAX_PARQUET_BYTES = "MLOPS_SOURCE_MAX_PARQUET_BYTES"


@dataclass(frozen=True)
class SourceLimits:
    """What one read of a source may take, all its files together (see
    :class:`DatasetSourceResource` for the settings and why the defaults are what they are)."""

    seconds: float = 900
    bytes: int = 1 << 30
    rows: int = 20_000_000
    parquet_bytes: int = 2 << 30


DEFAULT_LIMITS = SourceLimits()


class SourceUnavailable(RuntimeError):
    """The source could not be read at all (missing path, HTTP error, unknown scheme).

    ``transient`` marks faults worth retrying (server errors, timeouts, connection failures);
    ``code`` is the server's answer where there was one (an HTTP status, an S3 error code).
    """

    def __init__(self, message: str, transient: bool = False, code: str = ""):
        super().__init__(message)
        self.transient = transient
        self.code = code


class SourceRejected(SourceUnavailable):
    """The source breaks a rule of reading (a link out of its folder, a special file): the
    same source fails the same way again, so this is never transient."""

    def __init__(self, message: str):
        super().__init__(message, transient=False)


class SourceLimitExceeded(SourceRejected):
    """The source is larger or slower than a limit allows; ``setting`` raises the limit."""

    def __init__(self, message: str, setting: str):
        super().__init__(message)
        self.setting = setting


def is_data_file(name: str) -> bool:
    """A .csv or .parquet file that is not hidden: a file written under a '.' name and renamed
    when complete is not read half-written."""
    base = Path(name).name
    return base.lower().endswith(DATA_SUFFIXES) and not base.startswith(".")


def _local_path(uri: str) -> Path | None:
    """The path a file:// URI or a plain path (or a drive letter) names; None for other schemes."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme == "file":
        return Path(urllib.parse.unquote(parts.path))
    if parts.scheme == "" or len(parts.scheme) == 1:
        return Path(uri).expanduser()
    return None


def _size(count: int) -> str:
    """``1,073,741,824 bytes (1.0 GiB)``."""
    scaled, unit = float(count), "bytes"
    for bigger in ("KiB", "MiB", "GiB", "TiB"):
        if scaled < 1024:
            break
        scaled, unit = scaled / 1024, bigger
    return f"{count:,} bytes" + (f" ({scaled:.1f} {unit})" if unit != "bytes" else "")


def _secrets_of(uri: str) -> list[str]:
    """The parts of ``uri`` that may be secret (userinfo, the query and its values, the
    fragment), longest first; values too short to mean anything are left alone."""
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError:
        return [uri]
    found = [parts.netloc.rsplit("@", 1)[0]] if "@" in parts.netloc else []
    found += [parts.query, parts.fragment]
    for pair in parts.query.split("&"):
        found += [pair.partition("=")[2], urllib.parse.unquote(pair.partition("=")[2])]
    return sorted({s for s in found if len(s) >= 4}, key=len, reverse=True)


def _scrub(text: str, uri: str) -> str:
    """``text`` (an exception's message) with ``uri`` in its redacted form and no secret
    part of it left anywhere."""
    text = text.replace(uri, redact_uri(uri))
    for secret in _secrets_of(uri):
        text = text.replace(secret, "***")
    return text


def _cause(exc: BaseException, uri: str) -> BaseException | None:
    """``exc`` to chain to a SourceUnavailable, unless its own message quotes a secret of
    ``uri`` (a chained cause is shown in full in tracebacks and Dagster's event log)."""
    return exc if _scrub(str(exc), uri) == str(exc) else None


class _Reading:
    """One read of a source against its limits: the clock, and what all its files have taken
    so far. Every check raises :class:`SourceLimitExceeded` naming the file and the setting."""

    def __init__(self, shown: str, limits: SourceLimits):
        self.shown = shown
        self.limits = limits
        self.started = time.monotonic()
        self.bytes = 0
        self.rows = 0
        self.decoded = 0
        self.current = ""  # the file being read, for an error that does not name one

    def _exceeded(self, file: str, setting: str, limit: str, seen: str) -> SourceLimitExceeded:
        return SourceLimitExceeded(
            f"source {self.shown}: file '{file}' {seen}, over the limit of {limit} per source; "
            f"raise {setting} to read it",
            setting,
        )

    def seconds_left(self, file: str = "", slack: float = 0.0) -> float:
        """Seconds until the deadline of the whole read; past it, the deadline's error.
        After a read timed out, ``slack`` counts a read the deadline cut short as past it."""
        self.current = file = file or self.current
        elapsed = time.monotonic() - self.started
        if elapsed + slack >= self.limits.seconds:
            raise self._exceeded(
                file,
                MAX_SECONDS,
                f"{self.limits.seconds:g} s",
                f"was still being read after {elapsed:.1f} s ({_size(self.bytes)} read so far, "
                "reading stopped)",
            )
        return self.limits.seconds - elapsed

    def expect_bytes(self, file: str, size: int, how: str) -> None:
        """Before reading a file: its ``size``, as ``how`` declares it, must fit."""
        self.current = file
        total = self.bytes + size
        if total > self.limits.bytes:
            seen = f"is {_size(size)} ({how})"
            if self.bytes:
                seen += f", which brings the source to {_size(total)}"
            raise self._exceeded(
                file, MAX_BYTES, _size(self.limits.bytes), seen + "; nothing of it was read"
            )

    def expect_total(self, file: str, total: int, how: str) -> None:
        """Before reading any file: the source's files up to ``file`` hold ``total`` bytes."""
        if total > self.limits.bytes:
            raise self._exceeded(
                file,
                MAX_BYTES,
                _size(self.limits.bytes),
                f"brings the source to {_size(total)} ({how}); nothing was read",
            )

    def add_bytes(self, file: str, count: int) -> None:
        self.bytes += count
        if self.bytes > self.limits.bytes:
            raise self._exceeded(
                file,
                MAX_BYTES,
                _size(self.limits.bytes),
                f"had brought the source to {_size(self.bytes)} when reading stopped",
            )

    def add_rows(self, file: str, count: int, how: str) -> None:
        self.rows += count
        if self.rows > self.limits.rows:
            raise self._exceeded(
                file,
                MAX_ROWS,
                f"{self.limits.rows:,} rows",
                f"brings the source to {self.rows:,} rows ({how})",
            )

    def expect_decoded(self, file: str, size: int, how: str) -> None:
        if self.decoded + size > self.limits.parquet_bytes:
            raise self._exceeded(
                file,
                MAX_PARQUET_BYTES,
                f"{_size(self.limits.parquet_bytes)} decoded",
                f"decodes to at least {_size(size)}: {how} (checked before decoding)",
            )

    def add_decoded(self, file: str, size: int, rows: int) -> None:
        self.decoded += size
        if self.decoded > self.limits.parquet_bytes:
            raise self._exceeded(
                file,
                MAX_PARQUET_BYTES,
                f"{_size(self.limits.parquet_bytes)} decoded",
                f"had brought the source's Parquet to {_size(self.decoded)} decoded by its row "
                f"{rows:,}, when decoding stopped",
            )

    def file(self, name: str, data: bytes) -> TableFile:
        """A file read whole: a CSV's rows are its lines after the header, a Parquet file is
        held to its footer and then decoded for counting (see :func:`_account_parquet`)."""
        if name.lower().endswith(".parquet"):
            _account_parquet(name, data, self)
        return TableFile(name, data)


class _CsvLines:
    """Rows of a CSV file counted while its bytes arrive: the lines after its header (a quoted
    value with a line break in it counts twice)."""

    def __init__(self, reading: _Reading, name: str):
        self.reading = reading
        self.name = name
        self.counted = not name.lower().endswith(".parquet")
        self.newlines = 0
        self.charged = 0
        self.ends_line = True

    def add(self, chunk: bytes) -> None:
        if self.counted and chunk:
            self.newlines += chunk.count(b"\n")
            self.ends_line = chunk.endswith(b"\n")
            self._charge(max(self.newlines - 1, 0))

    def finish(self) -> None:
        if self.counted and not self.ends_line:
            self._charge(self.newlines)  # the last line has no line break of its own

    def _charge(self, rows: int) -> None:
        if rows > self.charged:
            how = "counting the lines after its CSV header"
            self.reading.add_rows(self.name, rows - self.charged, how)
            self.charged = rows


def _read_stream(
    name: str,
    reading: _Reading,
    read1: Callable[[int], bytes],
    set_timeout: Callable[[float], None],
) -> TableFile:
    """A body read with ``read1`` (whatever has arrived, at most n bytes), each read allowed
    only the time left before the deadline, every chunk counted as it arrives."""
    lines = _CsvLines(reading, name)
    chunks = []
    while True:
        set_timeout(min(HTTP_TIMEOUT_SECONDS, reading.seconds_left(name)))
        chunk = read1(STREAM_CHUNK_BYTES)
        if not chunk:
            break
        reading.add_bytes(name, len(chunk))
        lines.add(chunk)
        chunks.append(chunk)
    lines.finish()
    return reading.file(name, b"".join(chunks))


def _bits(data_type: Any) -> int:
    """Bits a row of one column takes at least, once decoded: its width when fixed, an
    offset for strings and binaries, a dictionary's index; 0 for nested types."""
    import pyarrow as pa

    if pa.types.is_dictionary(data_type):
        return int(data_type.index_type.bit_width)
    if _is_binary_like(data_type):
        return 32
    try:
        return int(data_type.bit_width)
    except ValueError:
        return 0


def _is_binary_like(data_type: Any) -> bool:
    import pyarrow as pa

    return bool(
        pa.types.is_string(data_type)
        or pa.types.is_large_string(data_type)
        or pa.types.is_binary(data_type)
        or pa.types.is_large_binary(data_type)
    )


def _dense_bytes(column: Any) -> int:
    """What a decoded column takes with every value written out. A dictionary column is
    measured without expanding it: its values' lengths taken by its indices."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_dictionary(column.type):
        values = column.dictionary
        if _is_binary_like(values.type):
            lengths = pc.take(pc.binary_length(values), column.indices)
            return int(pc.sum(lengths).as_py() or 0) + 4 * len(column)
        try:
            return len(column) * int(values.type.bit_width) // 8
        except ValueError:
            return int(column.nbytes)
    return int(column.nbytes)


def _account_parquet(name: str, data: bytes, reading: _Reading) -> None:
    """Hold a Parquet file to the row and decoded-size limits.

    First its footer, before any data is decoded: the rows it declares, and at least the
    larger of its uncompressed size and its rows times the fixed-width columns' widths.
    Then the data itself, decoded batch by batch and dropped: a footer describes encoded
    pages, and a value repeated by a dictionary (or a lying footer) decodes to far more.
    String columns are read as dictionaries and measured without being expanded, and a
    batch holds about PARQUET_BATCH_BYTES of fixed-width columns, so counting needs little
    memory whatever the file decodes to. A file that does not parse is left to the
    contract's parses_as_table check."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        footer = pq.ParquetFile(pa.BufferReader(data))
    except (pa.ArrowException, OSError):
        return
    meta, schema = footer.metadata, footer.schema_arrow
    declared_rows = int(meta.num_rows)
    reading.add_rows(name, declared_rows, f"its Parquet footer declares {declared_rows:,}")
    row_bits = sum(_bits(field.type) for field in schema)
    uncompressed = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    by_width = declared_rows * row_bits // 8
    reading.expect_decoded(
        name,
        max(uncompressed, by_width),
        f"its footer declares {declared_rows:,} rows of at least {row_bits / 8:g} bytes "
        f"each and {_size(uncompressed)} uncompressed",
    )
    strings = [field.name for field in schema if _is_binary_like(field.type)]
    batch_rows = max(1, min(65_536, PARQUET_BATCH_BYTES * 8 // max(row_bits, 1)))
    rows = 0
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data), read_dictionary=strings)
        for batch in parquet.iter_batches(batch_size=batch_rows, use_threads=False):
            reading.seconds_left(name)
            before, rows = rows, rows + batch.num_rows
            if rows > declared_rows:
                reading.add_rows(
                    name,
                    rows - max(before, declared_rows),
                    f"decoding found {rows:,} though its footer declares {declared_rows:,}",
                )
            reading.add_decoded(name, sum(_dense_bytes(c) for c in batch.columns), rows)
    except (pa.ArrowException, OSError):
        return


def _special_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "not a regular file"


ONLY_REGULAR = "only regular files, and links to them inside the folder, are read"
NOFOLLOW_OPEN = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class _Entry:
    """A data file of a source folder: its name there, and the path (relative to the folder,
    no links in it) of the regular file it reads; or why it is refused."""

    name: str
    real: str
    problem: str
    stat: os.stat_result


def _folder_entries(root: Path) -> list[_Entry]:
    """Every entry of ``root`` (a resolved folder) with a data file's name, in name order,
    each with its verdict under the folder rule. Links to folders are not descended."""

    def unlistable(exc: OSError) -> None:
        raise SourceUnavailable(f"cannot list {exc.filename}: {exc.strerror}") from exc

    entries = []
    for folder, folders, files in os.walk(root, onerror=unlistable):
        folders.sort()
        for base in files:
            if not is_data_file(base):
                continue
            path = os.path.join(folder, base)
            name = os.path.relpath(path, root).replace(os.sep, "/")
            entry = _verdict(root, name, path)
            if entry is not None:
                entries.append(entry)
    return sorted(entries, key=lambda e: e.name.split("/"))  # as paths sort, part by part


def _verdict(root: Path, name: str, path: str) -> _Entry | None:
    """The entry at ``path`` under the folder rule; None if it went away meanwhile."""
    try:
        own = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISREG(own.st_mode):
        return _Entry(name, name, "", own)
    if not stat.S_ISLNK(own.st_mode):
        return _Entry(name, "", f"'{name}' is {_special_kind(own.st_mode)}; {ONLY_REGULAR}", own)
    target = os.path.realpath(path)
    if os.path.commonpath([str(root), target]) != str(root):
        problem = f"'{name}' is a symbolic link to {target}, outside the folder; {ONLY_REGULAR}"
        return _Entry(name, "", problem, own)
    try:
        resolved = os.stat(target)
    except OSError:
        problem = f"'{name}' is a symbolic link to nothing ({target}); {ONLY_REGULAR}"
        return _Entry(name, "", problem, own)
    if not stat.S_ISREG(resolved.st_mode):
        kind = _special_kind(resolved.st_mode)
        return _Entry(name, "", f"'{name}' is a link to {kind}; {ONLY_REGULAR}", own)
    real = os.path.relpath(target, root).replace(os.sep, "/")
    return _Entry(name, real, "", resolved)


def _open_beneath(root_fd: int, real: str, name: str) -> int:
    """``real`` (relative to the folder ``root_fd`` is open on) opened one component at a time
    with O_NOFOLLOW: a component swapped for a link after the check fails here instead of
    leading out of the folder; a regular file swapped for a pipe fails the fstat check."""
    parts = real.split("/")
    fd = root_fd
    try:
        for part in parts[:-1]:
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            if fd != root_fd:
                os.close(fd)
            fd = inner
        opened = os.open(parts[-1], NOFOLLOW_OPEN, dir_fd=fd)
    except FileNotFoundError as exc:
        raise SourceUnavailable(f"'{name}' went away while the source was read", True) from exc
    except OSError as exc:
        raise SourceRejected(
            f"'{name}' changed after it was checked and cannot be opened without following a "
            f"link ({exc.strerror}); {ONLY_REGULAR}"
        ) from exc
    finally:
        if fd != root_fd:
            os.close(fd)
    return opened


def _read_fd(fd: int, name: str, reading: _Reading) -> TableFile:
    """A regular file's bytes from an open descriptor: its size checked first, then read
    (in one piece, as a rule) up to the byte limit, a file that grows meanwhile included."""
    with os.fdopen(fd, "rb", buffering=0) as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise SourceRejected(f"'{name}' is {_special_kind(info.st_mode)}; {ONLY_REGULAR}")
        reading.expect_bytes(name, info.st_size, "its size on disk")
        lines = _CsvLines(reading, name)
        chunks = []
        want = info.st_size + 1  # one byte more shows whether it grew since
        while True:
            reading.seconds_left(name)
            room = reading.limits.bytes - reading.bytes
            chunk = file.read(max(min(want, room + 1), 1))
            if not chunk:
                break
            reading.add_bytes(name, len(chunk))
            lines.add(chunk)
            chunks.append(chunk)
            want = STREAM_CHUNK_BYTES
        lines.finish()
    return reading.file(name, b"".join(chunks))  # one chunk is not copied


def _local(path: Path, reading: _Reading) -> list[TableFile]:
    try:
        info = os.stat(path)  # the configured path itself may be a link
    except FileNotFoundError:
        raise SourceUnavailable(f"source path {path} does not exist") from None
    except OSError as exc:
        raise SourceUnavailable(f"source path {path} cannot be read: {exc.strerror}") from exc
    if stat.S_ISDIR(info.st_mode):
        return _local_folder(path, reading)
    if not stat.S_ISREG(info.st_mode):
        raise SourceRejected(
            f"source path {path} is {_special_kind(info.st_mode)}, not a file or a folder: "
            "only regular files are read (a pipe or a device may block or never end)"
        )
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise SourceUnavailable(f"source path {path} cannot be read: {exc.strerror}") from exc
    return [_read_fd(fd, path.name, reading)]


def _local_folder(path: Path, reading: _Reading) -> list[TableFile]:
    root = Path(os.path.realpath(path))
    try:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise SourceUnavailable(f"source folder {path} cannot be read: {exc.strerror}") from exc
    try:
        entries = _folder_entries(root)
        refused = [e.problem for e in entries if e.problem]
        if refused:
            count = f"{len(refused)} entr{'y' if len(refused) == 1 else 'ies'}"
            raise SourceRejected(
                f"source folder {path}: {count} break{'s' if len(refused) == 1 else ''} the "
                "folder rule, so nothing was read:\n" + "\n".join(f"- {p}" for p in refused)
            )
        total = 0
        for entry in entries:
            total += entry.stat.st_size
            reading.expect_total(entry.name, total, "the sizes on disk of its files up to it")
        return [_read_fd(_open_beneath(root_fd, e.real, e.name), e.name, reading) for e in entries]
    finally:
        os.close(root_fd)


@contextmanager
def _s3_errors(action: str, uri: str, reading: _Reading | None = None) -> Iterator[None]:
    """S3 client errors as SourceUnavailable: '<action> failed: <code or error>'; past the
    deadline, the deadline's error."""
    import urllib3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        raise SourceUnavailable(
            f"{action} failed: {code}", transient=status >= 500 or status == 429, code=code
        ) from exc
    except (BotoCoreError, urllib3.exceptions.HTTPError, OSError) as exc:
        if reading is not None:
            reading.seconds_left(slack=DEADLINE_SLACK_SECONDS)  # cut short by the deadline?
        raise SourceUnavailable(
            f"{action} failed: {_scrub(str(exc), uri)}", transient=True
        ) from _cause(exc, uri)


def _s3_object(client: Any, bucket: str, key: str, name: str, reading: _Reading) -> TableFile:
    reading.seconds_left(name)
    response = client.get_object(Bucket=bucket, Key=key)
    body = response["Body"]
    try:
        reading.expect_bytes(name, int(response.get("ContentLength", 0)), "its S3 object size")
        # urllib3's read1 returns what has arrived; StreamingBody.read waits for n bytes.
        read1 = getattr(getattr(body, "_raw_stream", None), "read1", None) or body.read

        def set_timeout(seconds: float) -> None:
            with suppress(AttributeError):  # a body read to its end has no socket left
                body.set_socket_timeout(max(seconds, 0.001))

        return _read_stream(name, reading, read1, set_timeout)
    finally:
        body.close()


def _sample(uri: urllib.parse.SplitResult) -> list[TableFile]:
    if uri.netloc == "wine":
        return _wine_sample(uri)
    if uri.netloc != "house-prices":
        raise SourceUnavailable(
            f"unknown sample dataset '{uri.netloc}' in {uri.geturl()} (house-prices or wine)"
        )
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


def _wine_sample(uri: urllib.parse.SplitResult) -> list[TableFile]:
    """sample://wine: scikit-learn's wine table, whole; with rows=N&seed=S, N of its wines
    drawn at random (labels=0 leaves the cultivar out)."""
    query = dict(urllib.parse.parse_qsl(uri.query))
    try:
        rows = int(query["rows"]) if "rows" in query else None
        seed = int(query.get("seed", "42"))
        frame = wine_rows(rows, seed, labels=query.get("labels", "1") not in ("0", "false"))
    except ValueError as exc:
        raise SourceUnavailable(f"bad sample parameters in {uri.geturl()}: {exc}") from exc
    name = "wine.csv" if rows is None else f"wine-{rows}-seed{seed}.csv"
    return [TableFile(name, to_csv_bytes(frame))]


def _http_request(url: str, method: str = "GET") -> urllib.request.Request:
    """A request for ``url`` whose userinfo, if any, goes as Basic authorization, sent only
    to this URL's host (never on to a redirect's), and never as part of the host name."""
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    target = urllib.parse.urlunsplit(parts._replace(netloc=host, fragment=""))
    request = urllib.request.Request(target, method=method, headers={"User-Agent": "mlops-assets"})
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_unredirected_header("Authorization", f"Basic {token}")
    return request


def _socket_timeout(response: Any) -> Callable[[float], None]:
    """Sets the timeout of the next read of an http.client response's socket (the path
    botocore's StreamingBody.set_socket_timeout takes), so no read outlasts the deadline."""

    def set_timeout(seconds: float) -> None:
        sock = getattr(getattr(getattr(response, "fp", None), "raw", None), "_sock", None)
        if sock is not None:
            sock.settimeout(max(seconds, 0.001))

    return set_timeout


HTTP_FAULTS = (urllib.error.URLError, http.client.HTTPException, OSError, ValueError)


def _http_status(method: str, shown: str, exc: urllib.error.HTTPError) -> SourceUnavailable:
    return SourceUnavailable(
        f"{method} {shown} answered HTTP {exc.code} {exc.reason}",
        transient=exc.code >= 500 or exc.code in (408, 429),
        code=str(exc.code),
    )


def _http_fault(method: str, url: str, exc: BaseException) -> SourceUnavailable:
    """A failure to talk to the server; a malformed URL is permanent, the rest transient."""
    permanent = isinstance(exc, (ValueError, http.client.InvalidURL))
    return SourceUnavailable(
        f"{method} {redact_uri(url)} failed: {_scrub(str(exc), url)}", transient=not permanent
    )


def _http(url: str, reading: _Reading) -> list[TableFile]:
    name = Path(urllib.parse.urlsplit(url).path).name or "download.csv"
    try:
        request = _http_request(url)
        timeout = min(HTTP_TIMEOUT_SECONDS, reading.seconds_left(name))
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length", "")
            if length.isdigit():
                reading.expect_bytes(name, int(length), "its Content-Length")
            return [_read_stream(name, reading, response.read1, _socket_timeout(response))]
    except urllib.error.HTTPError as exc:
        raise _http_status("GET", reading.shown, exc) from exc
    except HTTP_FAULTS as exc:
        reading.seconds_left(name, DEADLINE_SLACK_SECONDS)  # cut short by the deadline?
        raise _http_fault("GET", url, exc) from _cause(exc, url)


def _s3(uri: urllib.parse.SplitResult, s3: S3Config | None, reading: _Reading) -> list[TableFile]:
    """One object, or every .csv/.parquet object under a prefix ending in '/'."""
    bucket, key = uri.netloc, uri.path.lstrip("/")
    client = s3_client(s3)
    action = f"reading {reading.shown} from {redact_uri(s3_server(s3))}"
    with _s3_errors(action, uri.geturl(), reading):
        if key and not key.endswith("/"):
            return [_s3_object(client, bucket, key, Path(key).name, reading)]
        listed = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
            for item in page.get("Contents", []):
                if is_data_file(item["Key"]):
                    listed.append((item["Key"], int(item.get("Size", 0))))
        listed.sort()
        total = 0
        for name, size in listed:
            total += size
            reading.expect_total(name[len(key) :], total, "its objects up to it, as S3 lists them")
        return [_s3_object(client, bucket, name, name[len(key) :], reading) for name, _ in listed]


def read_uri(
    uri: str, s3: S3Config | None = None, limits: SourceLimits = DEFAULT_LIMITS
) -> list[TableFile]:
    """Read every data file a source URI names, in a stable order, within ``limits`` (all
    its files together; a generated sample:// source is not limited). A folder's files are
    read by the folder rule of this module's docstring."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme == "sample":
        return _sample(parts)
    reading = _Reading(redact_uri(uri), limits)
    if parts.scheme == "s3":
        return _s3(parts, s3, reading)
    if parts.scheme in ("http", "https"):
        return _http(uri, reading)
    path = _local_path(uri)
    if path is not None:
        return _local(path, reading)
    raise SourceUnavailable(
        f"source {reading.shown} has scheme '{parts.scheme}'; supported: a path, file://, "
        "http(s)://, s3://, sample://"
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
    """Sizes and mtimes of the data files; an entry the folder rule refuses counts by what it
    is, so that its appearance starts a run that says why it is refused."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISDIR(info.st_mode):
        refused = () if stat.S_ISREG(info.st_mode) else (_special_kind(info.st_mode),)
        return _digest([(path.name, info.st_size, info.st_mtime_ns, *refused)])
    entries = _folder_entries(Path(os.path.realpath(path)))
    return _digest(
        [
            (e.name, e.stat.st_size, e.stat.st_mtime_ns, *((e.problem,) if e.problem else ()))
            for e in entries
        ]
    )


def _s3_fingerprint(uri: urllib.parse.SplitResult, s3: S3Config | None) -> str | None:
    bucket, key = uri.netloc, uri.path.lstrip("/")
    client = s3_client(s3)
    single = bool(key) and not key.endswith("/")

    def wanted(name: str) -> bool:
        return name == key if single else is_data_file(name)

    shown = redact_uri(uri.geturl())
    try:
        with _s3_errors(f"listing {shown} on {redact_uri(s3_server(s3))}", uri.geturl()):
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


def _http_fingerprint(url: str, limits: SourceLimits) -> str | None:
    """ETag, or Last-Modified and length, from a HEAD request; the body's hash otherwise (the
    body read within ``limits``, as a read of the source would)."""
    shown = redact_uri(url)
    try:
        request = _http_request(url, method="HEAD")
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS) as response:
            headers = response.headers
    except urllib.error.HTTPError as exc:
        if exc.code in (404, 410):
            return None
        if exc.code not in (405, 501):  # servers that refuse HEAD get a GET below
            raise _http_status("HEAD", shown, exc) from exc
        headers = None
    except HTTP_FAULTS as exc:
        raise _http_fault("HEAD", url, exc) from _cause(exc, url)
    if headers is not None:
        validator = headers.get("ETag") or (
            f"{headers.get('Last-Modified', '')}/{headers.get('Content-Length', '')}"
            if headers.get("Last-Modified")
            else ""
        )
        if validator:
            return _digest([(url, validator)])
    try:
        body = _http(url, _Reading(shown, limits))[0].data
    except SourceUnavailable as exc:
        if exc.code in ("404", "410"):
            return None
        raise
    return _digest([(url, hashlib.sha256(body).hexdigest())])


def fingerprint_uri(
    uri: str, s3: S3Config | None = None, limits: SourceLimits = DEFAULT_LIMITS
) -> str | None:
    """A digest that changes when the data at ``uri`` changes, or None when nothing is there.

    Reads listings and headers, not contents (sizes and mtimes, S3 ETags, HTTP validators),
    so a sensor can ask every few seconds; only an HTTP server without validators has its
    body read, within ``limits``. Generated sample:// sources have no fingerprint.
    """
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme == "sample":
        raise SourceUnavailable(f"{uri} is generated on read; there is no location to watch")
    if parts.scheme == "s3":
        return _s3_fingerprint(parts, s3)
    if parts.scheme in ("http", "https"):
        return _http_fingerprint(uri, limits)
    path = _local_path(uri)
    if path is not None:
        return _local_fingerprint(path)
    raise SourceUnavailable(
        f"source {redact_uri(uri)} has scheme '{parts.scheme}'; nothing to watch"
    )


class DatasetSourceResource(ConfigurableResource):
    """The dataset contract (spec), the locations of labelled data and incoming batches, and
    the limits every read of them is held to (see the module's docstring for the rules)."""

    # Each model's own (its component's data attributes; ModelScope.bind sets them).
    spec_path: str = model_field(
        "data.spec", "", "JSON dataset spec file; empty means the house-price spec."
    )
    spec_inline: str = model_field(
        "data.spec", "", "The spec itself as JSON text (inline in defs.yaml); set, it is the spec."
    )
    source_uri: str = model_field("data.source", "", "Labelled training data.")
    incoming_uri: str = model_field("data.incoming", "", "Incoming batch of a daily partition.")
    max_seconds: float = env_field(
        MAX_SECONDS,
        DEFAULT_LIMITS.seconds,
        "Deadline in seconds for reading a whole source (the labelled data, or one day's batch; "
        "every scheme but sample://), however slowly it arrives: 15 minutes moves the byte "
        "limit over a 10 Mbit/s link.",
    )
    max_bytes: int = env_field(
        MAX_BYTES,
        DEFAULT_LIMITS.bytes,
        "Bytes a source may hold, all its files together; checked before reading where the "
        "size is known (Content-Length, S3 sizes, file sizes) and while streaming. A source is "
        "held in memory while checked and stored: 1 GiB is about twice the 10,000,000-row "
        "CSV of bench/cold_lifecycle.py.",
    )
    max_rows: int = env_field(
        MAX_ROWS,
        DEFAULT_LIMITS.rows,
        "Rows a source may hold, all its files together (a CSV's lines after its header, a "
        "Parquet file's rows); each becomes a row of strings in pandas, which bytes alone do "
        "not bound. Twice the benchmark's 10,000,000.",
    )
    max_parquet_bytes: int = env_field(
        MAX_PARQUET_BYTES,
        DEFAULT_LIMITS.parquet_bytes,
        "Bytes a source's Parquet files may decode to (Arrow columns, every value written "
        "out): the footer is checked before any data is decoded, the data while it is. 2 GiB: "
        "a 10,000,000-row table of the house-price kind decodes to about 1 GiB.",
    )
    # The S3 configuration of s3:// sources (the object store's); None means AWS defaults.
    s3: S3Config | None = None

    @cached_property
    def spec(self) -> DatasetSpec:
        if self.spec_inline:
            return DatasetSpec.from_dict(json.loads(self.spec_inline), source="data.spec")
        return load_spec(self.spec_path)

    @property
    def limits(self) -> SourceLimits:
        limits = SourceLimits(
            self.max_seconds, self.max_bytes, self.max_rows, self.max_parquet_bytes
        )
        for setting, value in zip(
            (MAX_SECONDS, MAX_BYTES, MAX_ROWS, MAX_PARQUET_BYTES),
            (limits.seconds, limits.bytes, limits.rows, limits.parquet_bytes),
            strict=True,
        ):
            if value <= 0:
                raise SourceUnavailable(f"{setting} must be positive, not {value}")
        return limits

    @property
    def labelled_uri(self) -> str:
        """The model's labelled data (see model_value)."""
        return model_value(self, "source_uri", SourceUnavailable)

    def read_source(self) -> list[TableFile]:
        return read_uri(self.labelled_uri, self.s3, self.limits)

    def incoming_batch_uri(self, day: date) -> str:
        return self.incoming_uri.format(date=day.isoformat(), day=day.strftime("%Y%m%d"))

    def read_incoming(self, day: date) -> list[TableFile]:
        return read_uri(self.incoming_batch_uri(day), self.s3, self.limits)

    def source_fingerprint(self) -> str | None:
        """What the labelled-data sensor compares between ticks (see ``fingerprint_uri``)."""
        return fingerprint_uri(self.labelled_uri, self.s3, self.limits)

    def incoming_fingerprint(self, day: date) -> str | None:
        return fingerprint_uri(self.incoming_batch_uri(day), self.s3, self.limits)
