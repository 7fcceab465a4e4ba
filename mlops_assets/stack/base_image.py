"""A Debian bookworm + python3 base image built from packages, for machines that reach a
Debian mirror but no public image registry (the tests here; air-gapped teams).

    python -m mlops_assets.stack.base_image [--name localhost/mlops-base:bookworm] [--mirror URL]

debootstrap writes a minimal root filesystem (about 40 s), a virtualenv at /opt/venv is put
first on PATH (pip installs there, not into Debian's python), and ``podman import`` turns it
into an image. The mirror defaults to the one apt on this machine uses.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import IO

DEFAULT_NAME = "localhost/mlops-base:bookworm"
SUITE = "bookworm"
PACKAGES = ("python3", "python3-venv", "ca-certificates")
IMAGE_PATH = "/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def apt_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The first Debian archive URI apt is configured with for bookworm."""
    files = [*sorted(sources.glob("sources.list.d/*")), sources / "sources.list"]
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        for stanza in re.split(r"\n\s*\n", text):  # deb822 .sources stanzas
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.MULTILINE)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.MULTILINE)
            if uris and suites and SUITE in suites.group(1).split():
                return uris.group(1)
        for line in text.splitlines():  # one-line format: deb [options] URI SUITE COMPONENTS
            parts = line.split()
            at = next((i for i, part in enumerate(parts) if "://" in part), None)
            if parts[:1] == ["deb"] and at is not None and parts[at + 1 : at + 2] == [SUITE]:
                return parts[at]
    raise FileNotFoundError(f"no Debian {SUITE} mirror in {sources}; pass --mirror")


def image_exists(name: str) -> bool:
    return subprocess.run(["podman", "image", "exists", name], capture_output=True).returncode == 0


def build_base_image(name: str = DEFAULT_NAME, mirror: str | None = None) -> str:
    """Build ``name`` unless it exists; returns ``name``. One process at a time builds it
    (the test suite's workers may all ask at once): the others wait, then find it."""
    import fcntl

    if image_exists(name):
        return name
    with open(Path(tempfile.gettempdir()) / "mlops-base-image.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if image_exists(name):
            return name
        return _build(name, mirror)


def _build(name: str, mirror: str | None) -> str:
    for tool in ("debootstrap", "podman"):
        if shutil.which(tool) is None:
            raise FileNotFoundError(f"{tool} is not installed (apt-get install {tool})")
    mirror = mirror or apt_mirror()
    with tempfile.TemporaryDirectory(prefix="mlops-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(PACKAGES)}",
                SUITE,
                str(rootfs),
                mirror,
            ],
            "debootstrap",
        )
        _run(["chroot", str(rootfs), "python3", "-m", "venv", "/opt/venv"], "venv in rootfs")
        for cache in ("var/lib/apt/lists", "var/cache/apt/archives", "var/log"):
            shutil.rmtree(rootfs / cache, ignore_errors=True)
            (rootfs / cache).mkdir(parents=True, exist_ok=True)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        try:
            _run(
                [
                    "podman",
                    "import",
                    "--change",
                    f"ENV PATH={IMAGE_PATH}",
                    "--change",
                    'CMD ["python3"]',
                    "-",
                    name,
                ],
                "podman import",
                stdin=tar.stdout,
            )
        finally:
            if tar.stdout is not None:
                tar.stdout.close()
            tar.wait()
    return name


def _run(command: list[str], what: str, stdin: IO[bytes] | None = None) -> None:
    completed = subprocess.run(command, stdin=stdin, capture_output=True)
    if completed.returncode != 0:
        output = (completed.stderr or completed.stdout).decode(errors="replace")
        tail = "\n".join(output.splitlines()[-20:])
        raise RuntimeError(f"{what} failed (exit {completed.returncode}):\n{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--name", default=DEFAULT_NAME)
    parser.add_argument("--mirror", default=None, help="Debian mirror; default: apt's")
    args = parser.parse_args(argv)
    print(build_base_image(args.name, args.mirror))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
