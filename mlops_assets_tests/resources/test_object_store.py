"""The object store contract, on a local folder and on a real S3 server (SeaweedFS)."""

from pathlib import Path

import pytest

from mlops_assets.resources.object_store import ObjectStoreError, ObjectStoreResource, S3Config
from mlops_assets.stack.seaweedfs import GRPC_OFFSET, SOCKET_DIR, SeaweedS3


# The S3 half needs a real server (SeaweedFS): it runs in the whole suite, not the fast lane.
@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.slow)])
def store(request, tmp_path):
    if request.param == "local":
        return ObjectStoreResource(root=str(tmp_path / "store"))
    seaweed = request.getfixturevalue("seaweed")
    monkeypatch = request.getfixturevalue("monkeypatch")
    for name, value in seaweed.env().items():
        monkeypatch.setenv(name, value)
    return ObjectStoreResource(
        root=f"s3://{seaweed.bucket}/{tmp_path.name}",
        s3=S3Config(endpoint_url=seaweed.endpoint_url),
    )


def test_round_trip_listing_and_existence(store):
    store.put_bytes("a/b/one.json", b"1")
    store.put_bytes("a/two.json", b"2")
    store.put_bytes("c/three.json", b"3")
    assert store.get_bytes("a/b/one.json") == b"1"
    assert store.exists("a/two.json")
    assert not store.exists("a/nope.json")
    assert store.list_keys("a/") == ["a/b/one.json", "a/two.json"]
    assert store.list_keys("missing/") == []


def test_files_stream_in_and_out_in_multipart_sized_pieces(store, tmp_path):
    import os

    source = tmp_path / "image.oci.tar"
    source.write_bytes(os.urandom(9 * 1024 * 1024))  # above boto3's 8 MiB multipart threshold
    store.put_file("images/m/v1.oci.tar", source)
    assert store.size("images/m/v1.oci.tar") == source.stat().st_size
    copy = tmp_path / "copy.tar"
    store.get_file("images/m/v1.oci.tar", copy)
    assert copy.read_bytes() == source.read_bytes()
    with pytest.raises(FileNotFoundError):
        store.size("images/m/v2.oci.tar")


def test_overwrite_replaces_the_whole_object(store):
    store.put_bytes("refs/latest.json", b'{"digest": "old"}')
    store.put_bytes("refs/latest.json", b'{"digest": "new"}')
    assert store.get_bytes("refs/latest.json") == b'{"digest": "new"}'


def test_missing_object_names_its_uri(store):
    with pytest.raises(FileNotFoundError, match=r"object .*missing\.bin does not exist"):
        store.get_bytes("missing.bin")


def test_uri_names_the_backend(store):
    expected = "s3://" if store.is_s3 else "file://"
    assert store.uri("x/y.parquet").startswith(expected)
    assert store.uri("x/y.parquet").endswith("/x/y.parquet")


def test_local_keys_cannot_escape_the_root(tmp_path):
    store = ObjectStoreResource(root=str(tmp_path / "store"))
    with pytest.raises(ValueError, match="escapes the store root"):
        store.put_bytes("../outside.txt", b"x")


@pytest.mark.slow
def test_server_down_fails_naming_server_and_operation(tmp_path, monkeypatch):
    server = SeaweedS3(data_dir=tmp_path / "data", log_dir=tmp_path / "logs")
    server.start()
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    store = ObjectStoreResource(
        root=f"s3://{server.bucket}/p", s3=S3Config(endpoint_url=server.endpoint_url)
    )
    store.put_bytes("k", b"v")
    server.stop(grace_seconds=0)  # gone at once, as in a crash
    with pytest.raises(ObjectStoreError) as info:
        store.put_bytes("k2", b"v")
    message = str(info.value)
    assert "PutObject" in message
    assert server.endpoint_url in message
    assert server.secret_key not in message


@pytest.mark.slow
def test_seaweedfs_stops_by_itself_keeps_what_it_stored_and_leaves_nothing_in_tmp(
    tmp_path, monkeypatch
):
    server = SeaweedS3(data_dir=tmp_path / "data", log_dir=tmp_path / "logs")
    server.start()
    try:
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        store = ObjectStoreResource(
            root=f"s3://{server.bucket}/p", s3=S3Config(endpoint_url=server.endpoint_url)
        )
        store.put_bytes("kept.json", b"1")
        processes = [server.server.process, server.gateway.process]
        ports = list(server.ports)
        server.stop()
        # Each exited on SIGTERM within the grace period: none was killed.
        assert [p.returncode for p in processes] == [0, 0], (
            tmp_path / "logs" / "seaweedfs.log"
        ).read_text()[-3000:]
        # weed's sockets are named by port, its log files by pid.
        mine = {f"-{port + offset}.sock" for port in ports for offset in (0, GRPC_OFFSET)}
        mine |= {f".{p.pid}" for p in processes}
        left = [
            path.name
            for path in SOCKET_DIR.iterdir()
            if path.name.startswith(("seaweedfs-", "weed.")) and path.name.endswith(tuple(mine))
        ]
        assert not left, f"SeaweedFS left {left} in {SOCKET_DIR}"

        server.start()  # the same data folder
        assert store.get_bytes("kept.json") == b"1"
    finally:
        server.stop(grace_seconds=0)


def _processes_naming(path) -> list[str]:
    """The command lines of the running processes that name ``path``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            command = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # ended meanwhile
            continue
        if str(path) in command:
            found.append(command)
    return found


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["seaweedfs", "registry"])
def test_a_server_that_is_not_ready_in_time_is_stopped(kind, tmp_path):
    """A failed start stops what it started: a suite whose S3 server never got ready (a full
    disk) left its weed processes running after the run."""
    from mlops_assets.stack.registry import LocalRegistry

    server_class = SeaweedS3 if kind == "seaweedfs" else LocalRegistry
    server = server_class(data_dir=tmp_path / "data", log_dir=tmp_path / "logs")
    with pytest.raises(TimeoutError, match="was not ready after 0s"):
        server.start(timeout=0)
    started = [server.server] + ([server.gateway] if kind == "seaweedfs" else [])
    assert [process.running() for process in started] == [False] * len(started)
    assert _processes_naming(tmp_path) == []


@pytest.mark.slow
def test_wrong_credentials_fail_clearly_without_echoing_the_secret(seaweed, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "intruder")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-value")
    store = ObjectStoreResource(
        root=f"s3://{seaweed.bucket}/x", s3=S3Config(endpoint_url=seaweed.endpoint_url)
    )
    with pytest.raises(ObjectStoreError, match="InvalidAccessKeyId") as info:
        store.put_bytes("k", b"v")
    assert "not-the-secret-value" not in str(info.value)
