"""Venvs of the benchmarks' peers, each made from committed ``name==version`` pins under
.mlops/bench-venvs (a peer's pins may clash with the project's)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENVS = ROOT / ".mlops" / "bench-venvs"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: Path) -> dict[str, str]:
    """``name==version`` lines (comments and blank lines aside), by canonical name."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep or not version.strip():
            raise SystemExit(f"{path}: not a name==version line: {line!r}")
        pins[canonical(name.strip())] = version.strip()
    return pins


def installed(python: Path) -> dict[str, str]:
    """The distributions installed for ``python``, by canonical name."""
    listing = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.metadata as m, json; print(json.dumps("
            "{d.metadata['Name']: d.version for d in m.distributions()}))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {canonical(name): version for name, version in json.loads(listing).items()}


def run_logged(
    command: list[str],
    log: Path,
    what: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> None:
    """Runs ``command`` with its output appended to ``log``; stops the bench, with the log's
    end, when it fails."""
    with log.open("ab") as out:
        done = subprocess.run(
            command, stdout=out, stderr=subprocess.STDOUT, check=False, env=env, cwd=cwd
        )
    if done.returncode:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise SystemExit(f"{what} failed (exit {done.returncode}); {log} ends:\n{tail}")


def venv_from_pins(name: str, pins_file: Path) -> Path:
    """The venv ``name`` under .mlops/bench-venvs, made from ``pins_file`` unless one with
    exactly the pinned versions is there already. Returns its python."""
    pins = read_pins(pins_file)
    venv = VENVS / name
    python = venv / "bin" / "python"
    if python.exists():
        have = installed(python)
        if all(have.get(n) == version for n, version in pins.items()):
            return python
    maker = shutil.which("python3.11")
    if maker is None:
        raise SystemExit("python3.11 is not on PATH: the peers' venvs are made with it")
    print(f"bench: making {venv} from {pins_file.name} (a minute or two)", file=sys.stderr)
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([maker, "-m", "venv", str(venv)], check=True)
    run_logged(
        [str(python), "-m", "pip", "install", "-q", "-r", str(pins_file)],
        venv / "pip-install.log",
        f"installing {pins_file.name} into {venv}",
    )
    missing = {n: v for n, v in pins.items() if installed(python).get(n) != v}
    if missing:
        raise SystemExit(f"{venv}: pip installed other versions than pinned: {missing}")
    return python
