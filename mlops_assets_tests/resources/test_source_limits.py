"""Every read of a source is bounded (seconds, bytes, rows, decoded Parquet) and a source
folder is read by one rule (links only to files inside it, no special files).

Each read that must fail at a limit runs in a child process of its own, which reports how
long the read took and how far its peak RSS rose above its RSS when the read began (VmHWM,
reset by /proc/self/clear_refs: getrusage's ru_maxrss would also hold the imports' peak and,
on Linux, the parent's RSS at the exec). The drills that found these bounds missing saw 6 GB
from an endless HTTP body and 8 GB from a 2 MB Parquet file of zeros.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from mlops_assets.resources.dataset_source import (
    DatasetSourceResource,
    SourceLimits,
    SourceRejected,
    _folder_entries,
    _open_beneath,
    _read_fd,
    _Reading,
    fingerprint_uri,
)
from mlops_assets_tests.receivers import QuietHandler, loopback_http

MiB = 1 << 20
# In every HTTP source URL: neither may appear in any message.
TOKEN = "tok-3f9a7c1e5b"
PASSWORD = "hunter2-pw"

CHILD = r"""
import json, sys, time
import boto3, pyarrow.compute, pyarrow.parquet  # before the baseline: imports are not the read's
from mlops_assets.resources.dataset_source import DatasetSourceResource, SourceUnavailable
from mlops_assets.resources.object_store import S3Config


def kib(name):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(name + ":"))


args = json.loads(sys.argv[1])
s3 = S3Config(endpoint_url=args["endpoint"]) if args["endpoint"] else None
source = DatasetSourceResource(
    source_uri=args["uri"], incoming_uri="unused", s3=s3, **args["limits"]
)
with open("/proc/self/clear_refs", "w") as clear:
    clear.write("5")  # the peak RSS (VmHWM) starts again from the RSS now
before = kib("VmRSS")
start = time.monotonic()
outcome = {"error": "", "kind": "", "transient": None, "setting": "", "files": {}}
try:
    outcome["files"] = {f.name: len(f.data) for f in source.read_source()}
except SourceUnavailable as exc:
    outcome.update(
        error=str(exc), kind=type(exc).__name__, transient=exc.transient,
        setting=getattr(exc, "setting", ""),
    )
outcome["seconds"] = time.monotonic() - start
peak = kib("VmHWM")
outcome.update(rss_growth_mib=(peak - before) / 1024, rss_peak_mib=peak / 1024)
print(json.dumps(outcome))
"""


@dataclass
class Outcome:
    error: str
    kind: str
    transient: bool | None
    setting: str
    seconds: float
    rss_growth_mib: float
    rss_peak_mib: float
    files: dict[str, int] = field(default_factory=dict)


def read_in_child(
    uri: str, endpoint: str = "", env: dict[str, str] | None = None, **limits: Any
) -> Outcome:
    """``DatasetSourceResource(source_uri=uri, **limits).read_source()`` in a fresh process."""
    args = json.dumps({"uri": uri, "endpoint": endpoint, "limits": limits})
    done = subprocess.run(
        [sys.executable, "-c", CHILD, args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    outcome = Outcome(**json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"{uri}: {outcome}")  # the measured figures, with -s
    return outcome


def assert_limit(outcome: Outcome, setting: str, *parts: str) -> None:
    """Failed permanently at ``setting``, naming it and each of ``parts``, quoting no secret."""
    assert outcome.kind == "SourceLimitExceeded", outcome
    assert outcome.transient is False
    assert outcome.setting == setting
    assert f"raise {setting} to read it" in outcome.error
    for part in parts:
        assert part in outcome.error, (part, outcome.error)
    assert TOKEN not in outcome.error
    assert PASSWORD not in outcome.error


# --- HTTP: a real server on loopback ---------------------------------------------------------


class SourceServer(QuietHandler):
    """Bodies that never end, arrive a byte at a time, or declare more than they send."""

    stop = threading.Event()
    authorizations: list[str] = []

    def do_GET(self) -> None:
        self.authorizations.append(self.headers.get("Authorization", ""))
        url = urlsplit(self.path)
        every = float(parse_qs(url.query).get("every", ["0.25"])[0])
        try:
            if url.path == "/drip.csv":
                self._start({})
                self.wfile.write(b"area,price\n")
                while not self.stop.wait(every):
                    self.wfile.write(b"1")
                    self.wfile.flush()
            elif url.path == "/endless.csv":
                self._start({})
                chunk = b"0" * 65536
                while not self.stop.is_set():
                    self.wfile.write(chunk)
            elif url.path == "/endless-lines.csv":
                self._start({})
                self.wfile.write(b"area,price\n")
                while not self.stop.is_set():
                    self.wfile.write(b"1,2\n" * 16384)
            elif url.path == "/declared.csv":
                self._start({"Content-Length": str(10 << 30)})
                self.wfile.write(b"area,price\n")
                self.wfile.flush()
                self.stop.wait(60)
            else:
                self.send_error(404)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the reader stopped, as it should

    def _start(self, headers: dict[str, str]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/csv")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()


@pytest.fixture(scope="module")
def http_base() -> Iterator[str]:
    """The server's base URL, with credentials that must be sent but never shown."""
    SourceServer.stop.clear()
    with loopback_http(SourceServer) as port:
        yield f"http://reader:{PASSWORD}@127.0.0.1:{port}"
        SourceServer.stop.set()


@pytest.mark.parametrize("every", [0.25, 5.0])
def test_a_dripping_http_body_fails_at_the_deadline_of_the_whole_read(
    http_base: str, every: float
) -> None:
    """A byte every 0.25 s keeps every socket read alive; a byte every 5 s (the drill's)
    outlasts the deadline within one read. Either way the read ends at the deadline."""
    outcome = read_in_child(f"{http_base}/drip.csv?every={every}&token={TOKEN}", max_seconds=2)
    assert_limit(
        outcome, "MLOPS_SOURCE_MAX_SECONDS", "file 'drip.csv'", "limit of 2 s", "token=***"
    )
    assert "was still being read after 2." in outcome.error
    assert 2 <= outcome.seconds < 4
    assert outcome.rss_growth_mib < 8


def test_an_endless_http_body_fails_at_the_byte_limit_in_bounded_memory(http_base: str) -> None:
    outcome = read_in_child(f"{http_base}/endless.csv?token={TOKEN}", max_bytes=8 * MiB)
    assert_limit(
        outcome,
        "MLOPS_SOURCE_MAX_BYTES",
        "file 'endless.csv'",
        "limit of 8,388,608 bytes (8.0 MiB)",
        "when reading stopped",
        "http://***@127.0.0.1",
        "token=***",
    )
    assert outcome.seconds < 10
    assert outcome.rss_growth_mib < 24  # the limit, and a chunk; the drill: 6 GB in 21 s


def test_endless_http_lines_fail_at_the_row_limit_while_streaming(http_base: str) -> None:
    outcome = read_in_child(f"{http_base}/endless-lines.csv?token={TOKEN}", max_rows=100_000)
    assert_limit(
        outcome,
        "MLOPS_SOURCE_MAX_ROWS",
        "file 'endless-lines.csv'",
        "limit of 100,000 rows",
        "counting the lines after its CSV header",
    )
    assert outcome.seconds < 10
    assert outcome.rss_growth_mib < 16


def test_a_content_length_over_the_limit_fails_before_the_body_is_read(http_base: str) -> None:
    SourceServer.authorizations.clear()
    outcome = read_in_child(f"{http_base}/declared.csv?token={TOKEN}")  # the default limit
    assert_limit(
        outcome,
        "MLOPS_SOURCE_MAX_BYTES",
        "file 'declared.csv' is 10,737,418,240 bytes (10.0 GiB) (its Content-Length)",
        "nothing of it was read",
        "limit of 1,073,741,824 bytes (1.0 GiB)",
    )
    assert outcome.seconds < 2
    assert outcome.rss_growth_mib < 8
    # The URL's userinfo went to the server as Basic authorization, not into the host name.
    basic = base64.b64encode(f"reader:{PASSWORD}".encode()).decode()
    assert SourceServer.authorizations == [f"Basic {basic}"]


# --- local files: sparse, many lines, Parquet ------------------------------------------------


def test_a_sparse_csv_over_the_limit_fails_by_its_size_before_a_byte_is_read(
    tmp_path: Path,
) -> None:
    sparse = tmp_path / "labelled.csv"
    sparse.write_bytes(b"area,price\n")
    os.truncate(sparse, 2 << 30)  # 2 GiB that take no disk: the drill copied them densely
    outcome = read_in_child(str(sparse))  # the default limit
    assert_limit(
        outcome,
        "MLOPS_SOURCE_MAX_BYTES",
        f"source {sparse}: file 'labelled.csv' is 2,147,483,648 bytes (2.0 GiB) (its size on disk)",
        "limit of 1,073,741,824 bytes (1.0 GiB)",
    )
    assert outcome.seconds < 1
    assert outcome.rss_growth_mib < 8


def test_a_folder_over_the_limit_fails_at_the_file_that_passes_it_before_any_is_read(
    tmp_path: Path,
) -> None:
    (tmp_path / "a.csv").write_bytes(b"area,price\n" + b"1,2\n" * 1000)
    for name in ("b.csv", "c.csv"):
        (tmp_path / name).touch()
        os.truncate(tmp_path / name, 600 * MiB)
    outcome = read_in_child(str(tmp_path))
    assert_limit(
        outcome,
        "MLOPS_SOURCE_MAX_BYTES",
        "file 'c.csv' brings the source to 1,258,295,211 bytes (1.2 GiB) (the sizes on disk of "
        "its files up to it); nothing was read",
    )
    assert outcome.seconds < 1
    assert outcome.rss_growth_mib < 8


def test_a_csv_with_too_many_lines_fails_at_the_row_limit(tmp_path: Path) -> None:
    batch = tmp_path / "2026-11-20.csv"
    batch.write_bytes(b"area,price\n" + b"1,2\n" * 1001)
    outcome = read_in_child(str(batch), max_rows=1000)
    assert_limit(
        outcome,
        "MLOPS_SOURCE_MAX_ROWS",
        "file '2026-11-20.csv' brings the source to 1,001 rows",
        "limit of 1,000 rows",
    )
    assert read_in_child(str(batch), max_rows=1001).files == {"2026-11-20.csv": 11 + 4 * 1001}


@pytest.fixture(scope="module")
def parquet_of_zeros(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200,000,000 int64 zeros (1.6 GB decoded) in a zstd Parquet file of under 1 MB."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path_factory.mktemp("zeros") / "zeros.parquet"
    table = pa.table({"area": pa.array([0] * 1_000_000, pa.int64())})
    with pq.ParquetWriter(path, table.schema, compression="zstd") as writer:
        for _ in range(200):
            writer.write_table(table)
    assert path.stat().st_size < 2 * MiB
    return path


def test_a_parquet_of_zeros_fails_on_its_footer_rows_before_decoding(
    parquet_of_zeros: Path,
) -> None:
    outcome = read_in_child(str(parquet_of_zeros))  # the default limits
    assert_limit(
        outcome,
        "MLOPS_SOURCE_MAX_ROWS",
        "file 'zeros.parquet' brings the source to 200,000,000 rows (its Parquet footer "
        "declares 200,000,000)",
        "limit of 20,000,000 rows",
    )
    assert outcome.seconds < 1
    assert outcome.rss_growth_mib < 16  # the drill: past 8 GB in 28 s


def test_a_parquet_of_zeros_fails_on_its_footer_size_before_decoding(
    parquet_of_zeros: Path,
) -> None:
    outcome = read_in_child(str(parquet_of_zeros), max_rows=10**12, max_parquet_bytes=256 * MiB)
    assert_limit(
        outcome,
        "MLOPS_SOURCE_MAX_PARQUET_BYTES",
        "file 'zeros.parquet' decodes to at least 1,600,000,000 bytes (1.5 GiB): its footer "
        "declares 200,000,000 rows of at least 8 bytes each",
        "(checked before decoding)",
        "limit of 268,435,456 bytes (256.0 MiB) decoded",
    )
    assert outcome.seconds < 1
    assert outcome.rss_growth_mib < 16


def test_a_parquet_whose_footer_understates_its_size_fails_while_decoding(
    tmp_path: Path,
) -> None:
    """One 1,000-character value repeated by a dictionary: the footer declares 21 KB of
    pages, the data decodes to 200 MB. Counting stops at the limit, in little memory."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "notes.parquet"
    notes = pa.DictionaryArray.from_arrays(pa.array([0] * 200_000, pa.int32()), ["x" * 1000])
    # Without the Arrow schema the column reads back as plain strings, as most writers' do.
    pq.write_table(pa.table({"note": notes}), path, compression="zstd", store_schema=False)
    assert str(pq.ParquetFile(path).schema_arrow.field("note").type) == "string"
    footer = pq.ParquetFile(path).metadata
    assert footer.row_group(0).total_byte_size < 64 * 1024
    outcome = read_in_child(str(path), max_parquet_bytes=32 * MiB)
    assert_limit(
        outcome,
        "MLOPS_SOURCE_MAX_PARQUET_BYTES",
        "file 'notes.parquet' had brought the source's Parquet to",
        "when decoding stopped",
        "limit of 33,554,432 bytes (32.0 MiB) decoded",
    )
    assert outcome.seconds < 2
    assert outcome.rss_growth_mib < 32
    assert read_in_child(str(path)).files == {"notes.parquet": path.stat().st_size}


def test_a_parquet_source_within_the_limits_is_read_whole(tmp_path: Path) -> None:
    from mlops_assets.ml.sample_data import generate_house_prices

    folder = tmp_path / "labelled"
    folder.mkdir()
    generate_house_prices(100_000, seed=1).to_parquet(folder / "houses.parquet")
    (folder / "more.csv").write_bytes(b"area,price\n1,2\n")
    source = DatasetSourceResource(source_uri=str(folder), incoming_uri="unused")
    files = {f.name: f.data for f in source.read_source()}
    assert files == {
        "houses.parquet": (folder / "houses.parquet").read_bytes(),
        "more.csv": b"area,price\n1,2\n",
    }


# --- the folder rule: links, FIFOs ----------------------------------------------------------


def test_links_out_of_a_source_folder_fail_the_read_before_anything_is_read(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "good.csv").write_text("area,price\n1,2\n")
    outside = tmp_path / "private.csv"
    outside.write_text("password\nswordfish\n")
    (folder / "passwd.csv").symlink_to("/etc/passwd")
    (folder / "private.csv").symlink_to(outside)
    (folder / "gone.csv").symlink_to(folder / "nothing-here.csv")
    source = DatasetSourceResource(source_uri=str(folder), incoming_uri="unused")
    with pytest.raises(SourceRejected) as raised:
        source.read_source()
    message = str(raised.value)
    assert raised.value.transient is False
    assert "3 entries break the folder rule, so nothing was read" in message
    assert "'passwd.csv' is a symbolic link to /etc/passwd, outside the folder" in message
    assert f"'private.csv' is a symbolic link to {outside}, outside the folder" in message
    assert "'gone.csv' is a symbolic link to nothing" in message
    assert "only regular files, and links to them inside the folder, are read" in message
    assert "swordfish" not in message
    assert "root:" not in message
    # The sensor still sees the folder change, so that a run reports why it is refused.
    assert fingerprint_uri(str(folder)) is not None


def test_links_that_stay_inside_a_source_folder_are_followed(tmp_path: Path) -> None:
    folder = tmp_path / "labelled"
    (folder / "2026").mkdir(parents=True)
    (folder / "2026" / "november.csv").write_text("area,price\n1,2\n")
    (folder / "latest.csv").symlink_to(Path("2026") / "november.csv")
    (folder / "elsewhere").mkdir()
    (folder / "elsewhere" / "ignored.csv").write_text("area,price\n3,4\n")
    (folder / "linked-folder").symlink_to(folder / "elsewhere")  # links to folders: not descended
    linked = tmp_path / "linked"
    linked.symlink_to(folder)  # the configured path itself may be a link
    source = DatasetSourceResource(source_uri=str(linked), incoming_uri="unused")
    files = {f.name: f.data for f in source.read_source()}
    assert files == {
        "2026/november.csv": b"area,price\n1,2\n",
        "elsewhere/ignored.csv": b"area,price\n3,4\n",
        "latest.csv": b"area,price\n1,2\n",
    }


def test_a_fifo_source_is_named_as_one_and_never_blocks(tmp_path: Path) -> None:
    fifo = tmp_path / "2026-11-20.csv"
    os.mkfifo(fifo)
    outcome = read_in_child(str(fifo))
    assert outcome.kind == "SourceRejected"
    assert outcome.transient is False
    assert f"source path {fifo} is a FIFO (named pipe), not a file or a folder" in outcome.error
    assert "does not exist" not in outcome.error
    assert outcome.seconds < 1


def test_a_fifo_in_a_source_folder_fails_the_read_and_never_blocks(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("area,price\n1,2\n")
    os.mkfifo(tmp_path / "b.csv")
    outcome = read_in_child(str(tmp_path))
    assert outcome.kind == "SourceRejected"
    assert outcome.transient is False
    assert "1 entry breaks the folder rule, so nothing was read" in outcome.error
    assert "'b.csv' is a FIFO (named pipe); only regular files" in outcome.error
    assert outcome.seconds < 1
    os.unlink(tmp_path / "b.csv")
    os.mkfifo(tmp_path / "notes.pipe")  # not a data file's name: never opened
    assert read_in_child(str(tmp_path)).files == {"a.csv": 15}


def test_a_file_swapped_for_a_link_after_the_check_is_refused_not_followed(
    tmp_path: Path,
) -> None:
    """Between the check of the folder and the open of each file, an entry (or a folder on
    its path) replaced by a link out of the folder, or by a FIFO, is refused at the open."""
    folder = tmp_path / "drop"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.csv").write_text("area,price\n1,2\n")
    (folder / "sub" / "b.csv").write_text("area,price\n3,4\n")
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "a.csv").write_text("secret\n")
    (outside / "sub" / "b.csv").write_text("secret\n")
    entries = {e.name: e for e in _folder_entries(folder)}
    assert set(entries) == {"a.csv", "sub/b.csv"}
    assert not any(e.problem for e in entries.values())

    (folder / "a.csv").unlink()
    (folder / "a.csv").symlink_to(outside / "a.csv")
    os.rename(folder / "sub", tmp_path / "old-sub")
    (folder / "sub").symlink_to(outside / "sub")
    root_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in ("a.csv", "sub/b.csv"):
            with pytest.raises(SourceRejected, match="changed after it was checked"):
                _open_beneath(root_fd, entries[name].real, name)
        (folder / "a.csv").unlink()
        os.mkfifo(folder / "a.csv")
        fd = _open_beneath(root_fd, "a.csv", "a.csv")  # O_NONBLOCK: opening a FIFO never waits
        with pytest.raises(SourceRejected, match=r"'a.csv' is a FIFO \(named pipe\)"):
            _read_fd(fd, "a.csv", _Reading(str(folder), SourceLimits()))
    finally:
        os.close(root_fd)


# --- S3: SeaweedFS ----------------------------------------------------------------------------


@pytest.mark.slow
def test_s3_objects_over_the_limit_fail_by_their_sizes_before_they_are_read(
    seaweed: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlops_assets.resources.object_store import S3Config, s3_client

    for name, value in seaweed.env().items():
        monkeypatch.setenv(name, value)
    client = s3_client(S3Config(endpoint_url=seaweed.endpoint_url))
    prefix = "source-limits/labelled/"
    client.put_object(Bucket=seaweed.bucket, Key=f"{prefix}a.csv", Body=b"area,price\n1,2\n")
    client.put_object(Bucket=seaweed.bucket, Key=f"{prefix}big.csv", Body=b"0" * (3 * MiB))
    env = seaweed.env()
    one = read_in_child(
        f"s3://{seaweed.bucket}/{prefix}big.csv", seaweed.endpoint_url, env, max_bytes=MiB
    )
    assert_limit(
        one,
        "MLOPS_SOURCE_MAX_BYTES",
        "file 'big.csv' is 3,145,728 bytes (3.0 MiB) (its S3 object size); nothing of it was read",
        "limit of 1,048,576 bytes (1.0 MiB)",
    )
    every = read_in_child(
        f"s3://{seaweed.bucket}/{prefix}", seaweed.endpoint_url, env, max_bytes=MiB
    )
    assert_limit(
        every,
        "MLOPS_SOURCE_MAX_BYTES",
        "file 'big.csv' brings the source to 3,145,743 bytes (3.0 MiB) (its objects up to it, "
        "as S3 lists them); nothing was read",
    )
    for outcome in (one, every):
        assert outcome.seconds < 5
        assert outcome.rss_growth_mib < 32  # the S3 client (its service model) takes about 14 MiB
    within = read_in_child(
        f"s3://{seaweed.bucket}/{prefix}", seaweed.endpoint_url, env, max_bytes=4 * MiB
    )
    assert within.files == {"a.csv": 15, "big.csv": 3 * MiB}
