"""Fingerprints of watched locations: they change with the data, and only with the data."""

from __future__ import annotations

import functools
import os
import socket
import traceback
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from mlops_assets.resources.dataset_source import SourceUnavailable, fingerprint_uri, read_uri
from mlops_assets_tests.receivers import QuietHandler, loopback_http


def touch_later(path: Path, text: str) -> None:
    """Write and move the mtime forward, as a later upload would."""
    path.write_text(text)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def test_a_folder_fingerprint_follows_its_data_files(tmp_path: Path) -> None:
    folder = tmp_path / "labelled"
    assert fingerprint_uri(str(folder)) is None
    folder.mkdir()
    assert fingerprint_uri(str(folder)) is None
    (folder / "a.csv").write_text("x\n1\n")
    first = fingerprint_uri(str(folder))
    assert first is not None
    assert fingerprint_uri(f"file://{folder}") == first
    (folder / ".partial.csv").write_text("in flight")
    (folder / "notes.txt").write_text("not data")
    assert fingerprint_uri(str(folder)) == first
    (folder / "b.csv").write_text("x\n2\n")
    second = fingerprint_uri(str(folder))
    assert second not in (None, first)
    touch_later(folder / "b.csv", "x\n3\n")
    assert fingerprint_uri(str(folder)) not in (None, first, second)


def test_a_missing_file_has_no_fingerprint(tmp_path: Path) -> None:
    batch = tmp_path / "2026-11-20.csv"
    assert fingerprint_uri(str(batch)) is None
    batch.write_text("x\n1\n")
    assert fingerprint_uri(str(batch)) is not None


def test_generated_sources_cannot_be_watched() -> None:
    with pytest.raises(SourceUnavailable, match="generated on read"):
        fingerprint_uri("sample://house-prices?rows=10")


@pytest.mark.slow
def test_s3_fingerprints_use_listings(seaweed: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlops_assets.resources.object_store import S3Config, s3_client

    for name, value in seaweed.env().items():
        monkeypatch.setenv(name, value)
    s3 = S3Config(endpoint_url=seaweed.endpoint_url)
    client = s3_client(s3)
    prefix = f"s3://{seaweed.bucket}/fingerprints/labelled/"
    assert fingerprint_uri(prefix, s3) is None
    client.put_object(Bucket=seaweed.bucket, Key="fingerprints/labelled/a.csv", Body=b"x\n1\n")
    first = fingerprint_uri(prefix, s3)
    assert first is not None
    client.put_object(Bucket=seaweed.bucket, Key="fingerprints/labelled/a.csv", Body=b"x\n2\n")
    assert fingerprint_uri(prefix, s3) not in (None, first)
    assert fingerprint_uri(f"s3://{seaweed.bucket}/fingerprints/labelled/a.csv", s3)
    assert fingerprint_uri(f"s3://{seaweed.bucket}/fingerprints/nothing.csv", s3) is None
    assert fingerprint_uri("s3://no-such-bucket-here/x/", s3) is None


@pytest.fixture
def http_folder(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    class QuietFiles(SimpleHTTPRequestHandler, QuietHandler):
        pass

    with loopback_http(functools.partial(QuietFiles, directory=str(tmp_path))) as port:
        yield f"http://127.0.0.1:{port}", tmp_path


def test_http_fingerprints_use_validators(http_folder: tuple[str, Path]) -> None:
    base, folder = http_folder
    assert fingerprint_uri(f"{base}/2026-11-20.csv") is None
    touch_later(folder / "2026-11-20.csv", "x\n1\n")
    first = fingerprint_uri(f"{base}/2026-11-20.csv")
    assert first is not None
    assert fingerprint_uri(f"{base}/2026-11-20.csv") == first
    touch_later(folder / "2026-11-20.csv", "x\n22\n")
    assert fingerprint_uri(f"{base}/2026-11-20.csv") not in (None, first)


# --- what messages quote of a source URL -----------------------------------------------------

TOKEN = "tok-8d2e6f0a94"
SIGNATURE = "sig-51c0ffee77"
PASSWORD = "pw-correct-horse"
STATUSES = {"/forbidden.csv": 403, "/gone.csv": 404, "/limited.csv": 429, "/busy.csv": 503}


class ErrorPages(QuietHandler):
    """An error page for each path, no redirects; the page quotes the request line."""

    def do_GET(self) -> None:
        status = STATUSES.get(self.path.split("?")[0], 404)
        body = f"no: {self.requestline}".encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.send_response(STATUSES.get(self.path.split("?")[0], 404))
        self.end_headers()


@pytest.fixture
def secret_url() -> Iterator[Callable[[str], str]]:
    """A URL on the error server for a path, with credentials, a token and a signature."""
    with loopback_http(ErrorPages) as port:
        yield (
            lambda path: (
                f"http://reader:{PASSWORD}@127.0.0.1:{port}{path}"
                f"?token={TOKEN}&X-Amz-Signature={SIGNATURE}#frag"
            )
        )


def assert_no_secret(exc: BaseException) -> None:
    """Not in the message, nor in anything chained to it (Dagster shows the whole chain)."""
    shown = "".join(traceback.format_exception(exc))
    for secret in (TOKEN, SIGNATURE, PASSWORD):
        assert secret not in shown


@pytest.mark.parametrize(
    ("path", "status", "transient"),
    [
        ("/forbidden.csv", 403, False),
        ("/gone.csv", 404, False),
        ("/limited.csv", 429, True),
        ("/busy.csv", 503, True),
    ],
)
def test_http_errors_name_the_status_and_no_secret_of_the_url(
    secret_url: Callable[[str], str], path: str, status: int, transient: bool
) -> None:
    url = secret_url(path)
    with pytest.raises(SourceUnavailable) as raised:
        read_uri(url)
    port = urllib.parse.urlsplit(url).port
    shown = f"http://***@127.0.0.1:{port}{path}?token=***&X-Amz-Signature=***"
    assert str(raised.value).startswith(f"GET {shown} answered HTTP {status} ")
    assert raised.value.transient is transient
    assert raised.value.code == str(status)
    assert_no_secret(raised.value)


def test_fingerprint_errors_quote_no_secret_of_the_url(secret_url: Callable[[str], str]) -> None:
    with pytest.raises(SourceUnavailable, match=r"^HEAD http://\*\*\*@.*token=\*\*\*") as raised:
        fingerprint_uri(secret_url("/forbidden.csv"))
    assert raised.value.transient is False
    assert_no_secret(raised.value)
    assert fingerprint_uri(secret_url("/gone.csv")) is None


def test_connection_failures_are_transient_and_quote_no_secret() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # nothing listens once it is closed
    url = f"http://reader:{PASSWORD}@127.0.0.1:{port}/a.csv?token={TOKEN}"
    with pytest.raises(SourceUnavailable, match="Connection refused") as raised:
        read_uri(url)
    assert raised.value.transient is True
    assert str(raised.value).startswith(f"GET http://***@127.0.0.1:{port}/a.csv?token=*** failed")
    assert_no_secret(raised.value)


def test_a_malformed_url_fails_for_good_and_quotes_no_secret() -> None:
    """http.client quotes a URL with a space in it whole; the message must not."""
    url = f"http://127.0.0.1:9/a.csv?token={TOKEN} x&X-Amz-Signature={SIGNATURE}"
    with pytest.raises(SourceUnavailable, match="control characters") as raised:
        read_uri(url)
    assert raised.value.transient is False
    assert_no_secret(raised.value)


def test_an_unknown_scheme_quotes_no_secret() -> None:
    with pytest.raises(SourceUnavailable, match=r"source ftp://\*\*\*@host/a.csv\?token=\*\*\*"):
        read_uri(f"ftp://reader:{PASSWORD}@host/a.csv?token={TOKEN}")
