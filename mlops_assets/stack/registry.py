"""An OCI registry on loopback: the Debian package docker-registry (CNCF distribution)."""

from __future__ import annotations

import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from mlops_assets.stack.process import (
    LOOPBACK,
    ServerProcess,
    free_port,
    stopped_if_not_ready,
    wait_until,
)

CONFIG = """\
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: {host}:{port}
"""


def registry_binary() -> str:
    found = shutil.which("docker-registry") or shutil.which("registry")
    if not found:
        raise FileNotFoundError(
            "the OCI registry 'docker-registry' is not installed: "
            "apt-get install docker-registry (Debian/Ubuntu)"
        )
    return found


@dataclass
class LocalRegistry:
    """A plain-HTTP registry without auth, for loopback use: images under ``data_dir``."""

    data_dir: Path
    log_dir: Path
    port: int = 0
    server: ServerProcess | None = None

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def start(self, timeout: float = 30) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        config = self.data_dir / "config.yml"
        config.write_text(
            CONFIG.format(root=self.data_dir / "storage", host=LOOPBACK, port=self.port)
        )
        self.server = ServerProcess(
            name="registry",
            command=[registry_binary(), "serve", str(config)],
            log=self.log_dir / "registry.log",
            inherit_env=False,
        )

        def answers() -> bool:
            with urllib.request.urlopen(f"http://{self.address}/v2/", timeout=2) as response:
                return response.status == 200

        with stopped_if_not_ready(self.stop):
            self.server.start()
            wait_until(answers, f"OCI registry on {self.address}", timeout, self.server.log)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
