"""Start and stop the local stack's server processes: loopback only, free ports, logs in one
folder, health checked before use, and stopped by pid (process group) with no leftovers."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK = "127.0.0.1"


def free_port(also_free_offset: int | None = None) -> int:
    """A free loopback port; with ``also_free_offset``, port + offset is free too (SeaweedFS
    puts each server's gRPC port 10000 above its HTTP port)."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind((LOOPBACK, 0))
            port = sock.getsockname()[1]
        if also_free_offset is None:
            return port
        if port + also_free_offset < 65536 and _is_free(port + also_free_offset):
            return port
    raise RuntimeError("no free loopback port found")


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def wait_until(ready: Callable[[], bool], what: str, timeout: float, log: Path | None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if ready():
                return
        except Exception:  # a server that is still starting refuses or resets connections
            pass
        time.sleep(0.3)
    tail = ""
    if log is not None and log.exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
    raise TimeoutError(f"{what} was not ready after {timeout:.0f}s; log tail:\n{tail}")


@contextlib.contextmanager
def stopped_if_not_ready(stop: Callable[[], None]) -> Iterator[None]:
    """Around a server's start, from its first process to its readiness: when anything in it
    fails (the wait times out, or is interrupted), ``stop`` what was started before raising,
    so that a failed start leaves no process behind."""
    try:
        yield
    except BaseException:
        stop()
        raise


# What a server inherits from the shell that started the stack: nothing else. The caller's
# environment may hold credentials meant for other systems (an AWS key pair: SeaweedFS made
# it an admin identity of its own and logged its key id); each server gets what it needs
# through ``ServerProcess.env``.
INHERITED = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")


def server_environment() -> dict[str, str]:
    return {name: os.environ[name] for name in INHERITED if name in os.environ}


@dataclass
class ServerProcess:
    """One server in its own process group, so stopping it stops its children too."""

    name: str
    command: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    # The stack's servers inherit only INHERITED (server_environment), plus ``env``; a tool
    # run as a user runs it (a test's `dagster dev`) inherits the whole environment.
    inherit_env: bool = True
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        # Private to this user: a server may log what its clients sent (SeaweedFS logs the
        # access key id of every request it refuses).
        fd = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "ab") as log:
            self.process = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**(os.environ if self.inherit_env else server_environment()), **self.env},
                start_new_session=True,
            )

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, grace_seconds: float = 15) -> None:
        """SIGTERM the process group, then SIGKILL what is left after the grace period."""
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=grace_seconds)
        with contextlib.suppress(ProcessLookupError):  # children that outlived the leader
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.process = None
