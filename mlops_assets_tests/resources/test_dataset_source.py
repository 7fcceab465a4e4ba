"""Fingerprints of watched locations: they change with the data, and only with the data."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from mlops_assets.resources.dataset_source import SourceUnavailable, fingerprint_uri
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
