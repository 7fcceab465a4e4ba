"""A throwaway PostgreSQL server from the machine's own binaries (Debian postgresql-15)."""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from mlops_assets.stack.process import (
    LOOPBACK,
    ServerProcess,
    free_port,
    stopped_if_not_ready,
    wait_until,
)

SERVICE_USER = "postgres"  # initdb and postgres refuse to run as root


def postgres_bin(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if not found:
        raise FileNotFoundError(
            f"PostgreSQL's '{name}' was not found: install the server (Debian: postgresql)"
        )
    return found


def _as_service_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", SERVICE_USER, "--", *command] if os.geteuid() == 0 else command


@dataclass
class LocalPostgres:
    """One cluster on loopback with password authentication and the given databases."""

    data_dir: Path
    log_dir: Path
    user: str = "mlops"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    databases: tuple[str, ...] = ("mlflow", "dagster")
    port: int = 0
    server: ServerProcess | None = None

    def url(self, database: str, driver: str = "postgresql") -> str:
        password = urllib.parse.quote(self.password, safe="")
        return f"{driver}://{self.user}:{password}@{LOOPBACK}:{self.port}/{database}"

    def _own(self, path: Path) -> None:
        if os.geteuid() == 0:
            shutil.chown(path, user=SERVICE_USER, group=SERVICE_USER)

    def start(self, timeout: float = 60) -> None:
        import psycopg2

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._own(self.data_dir)
        if os.geteuid() == 0:
            reachable = (
                subprocess.run(
                    _as_service_user(["test", "-x", str(self.data_dir)]), check=False
                ).returncode
                == 0
            )
            if not reachable:
                raise PermissionError(
                    f"the '{SERVICE_USER}' user cannot reach {self.data_dir}: a parent folder is "
                    "private; choose a folder under one that others may traverse (chmod o+x)"
                )
        cluster = self.data_dir / "cluster"
        sockets = self.data_dir / "sockets"
        if not (cluster / "PG_VERSION").exists():
            password_file = self.data_dir / "pwfile"
            password_file.write_text(self.password)
            password_file.chmod(0o600)
            self._own(password_file)
            try:
                subprocess.run(
                    _as_service_user(
                        [
                            postgres_bin("initdb"),
                            "-D",
                            str(cluster),
                            "-U",
                            self.user,
                            "--auth=scram-sha-256",
                            f"--pwfile={password_file}",
                            "-E",
                            "UTF8",
                            "--no-locale",
                        ]
                    ),
                    check=True,
                    capture_output=True,
                    text=True,
                )
            finally:
                password_file.unlink(missing_ok=True)
        sockets.mkdir(exist_ok=True)
        self._own(sockets)
        if not self.port:
            self.port = free_port()
        self.server = ServerProcess(
            name="postgres",
            command=_as_service_user(
                [
                    postgres_bin("postgres"),
                    "-D",
                    str(cluster),
                    "-p",
                    str(self.port),
                    "-h",
                    LOOPBACK,
                    "-k",
                    str(sockets),
                ]
            ),
            log=self.log_dir / "postgres.log",
            inherit_env=False,
        )

        def accepting() -> bool:
            with psycopg2.connect(self.url("postgres")) as connection:
                return connection.closed == 0

        with stopped_if_not_ready(self.stop):  # ready means its databases are there too
            self.server.start()
            wait_until(accepting, f"PostgreSQL on {LOOPBACK}:{self.port}", timeout, self.server.log)
            connection = psycopg2.connect(self.url("postgres"))
            connection.autocommit = True
            with connection.cursor() as cursor:
                for database in self.databases:
                    cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
                    if cursor.fetchone() is None:
                        cursor.execute(f'CREATE DATABASE "{database}"')
            connection.close()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
