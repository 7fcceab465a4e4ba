"""Adding a model is one command and one file: `dg scaffold defs` in a copy of the project,
with a table scikit-learn ships, gives a third model that runs end to end, and `dg check defs`
names a wrong attribute or a missing spec file with the file it is in."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlops_assets_tests.conftest import PARTITION, demo_env

pytestmark = pytest.mark.slow  # dg and mlops-demo in subprocesses

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
COMPONENT = "mlops_assets.components.ModelLifecycle"


def breast_cancer(rows: int | None = None, seed: int = 0) -> object:
    """The breast cancer table scikit-learn ships (569 tumours, 30 measurements), with its
    diagnosis as text: a team's labelled data, as a file."""
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    frame["diagnosis"] = ["malignant" if t == 0 else "benign" for t in frame.pop("target")]
    return frame if rows is None else frame.sample(rows, random_state=seed)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project (its package, pyproject.toml, workspace.yaml), as a team's own
    checkout would be; the installed package is shadowed by it (PYTHONPATH)."""
    root = tmp_path_factory.mktemp("team") / "project"
    shutil.copytree(
        ROOT / "mlops_assets",
        root / "mlops_assets",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    for name in ("pyproject.toml", "workspace.yaml"):
        shutil.copy(ROOT / name, root / name)
    return root


def run(
    project: Path, *command: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(command),
        cwd=project,
        env={**(env or demo_env(project / ".mlops")), "PYTHONPATH": str(project)},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_scaffolded_model_runs_end_to_end_without_python(project: Path, tmp_path: Path) -> None:
    data = tmp_path / "data" / "tumours.csv"
    data.parent.mkdir()
    breast_cancer().to_csv(data, index=False)  # type: ignore[attr-defined]
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    breast_cancer(80, seed=1).drop(columns=["diagnosis"]).to_csv(  # type: ignore[attr-defined]
        incoming / f"{PARTITION}.csv", index=False
    )
    params = {"data": str(data), "target": "diagnosis", "incoming": str(incoming / "{date}.csv")}
    made = run(
        project,
        str(BIN / "dg"), "scaffold", "defs", COMPONENT, "tumours", "--json-params", json.dumps(params),
    )  # fmt: skip
    assert made.returncode == 0, made.stdout + made.stderr
    folder = project / "mlops_assets" / "defs" / "tumours"
    spec = json.loads((folder / "spec.json").read_text())
    assert (spec["name"], spec["task"], spec["target"]["name"]) == (
        "tumours",
        "classification",
        "diagnosis",
    )
    assert f'source: "{data}"' in (folder / "defs.yaml").read_text()

    checked = run(project, str(BIN / "dg"), "check", "defs")
    assert checked.returncode == 0, checked.stdout + checked.stderr

    demo = run(project, str(BIN / "mlops-demo"), "--model", "tumours", "--partition", PARTITION)
    assert demo.returncode == 0, demo.stderr[-4000:]
    assert demo.stderr.strip().splitlines()[-1] == (
        f"Done: tumours_mlops_lifecycle for partition {PARTITION}."
    )
    assert (project / ".mlops" / "store" / "datasets" / "tumours" / "refs" / "latest.json").exists()


def test_dg_check_defs_names_a_misspelt_attribute_and_a_missing_spec(project: Path) -> None:
    folder = project / "mlops_assets" / "defs" / "wine_cultivars"
    original = (folder / "defs.yaml").read_text()
    try:
        (folder / "defs.yaml").write_text(original.replace("registered_model:", "registerd_model:"))
        wrong = run(project, str(BIN / "dg"), "check", "defs")
        out = wrong.stdout + wrong.stderr
        assert wrong.returncode != 0
        assert f"attributes.registerd_model at {folder / 'defs.yaml'}:9" in out
        assert "Extra inputs are not permitted" in out
        assert f"attributes.registered_model at {folder / 'defs.yaml'}" in out
        assert "Field required" in out

        (folder / "defs.yaml").write_text(original.replace("spec: spec.json", "spec: specs.json"))
        missing = run(project, str(BIN / "dg"), "check", "defs")
        out = missing.stdout + missing.stderr
        assert missing.returncode != 0
        assert (
            f"model 'wine_cultivars' ({folder / 'defs.yaml'}): data.spec: the dataset spec file "
            f"{folder / 'specs.json'} does not exist" in out
        )
    finally:
        (folder / "defs.yaml").write_text(original)
