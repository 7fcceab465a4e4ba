"""A new embedded MLflow database is written from the schema dump: the same database MLflow's
own migrations make, opened by MLflow as such; anything else is left to MLflow."""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from mlflow.version import VERSION

from mlops_assets.resources.mlflow_registry import MlflowResource
from mlops_assets.resources.mlflow_sqlite import SCHEMA, dump_version, migrate, seed_database


def _contents(path: Path) -> dict[str, Any]:
    """Every table, index and row of a SQLite database, the order of a table's columns and
    constraints aside (MLflow's migrations rebuild some tables in an order that varies)."""
    with sqlite3.connect(path) as connection:
        objects = connection.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL"
        ).fetchall()
        tables = [name for kind, name, _, _ in objects if kind == "table"]
        rows = {t: sorted(connection.execute(f'SELECT * FROM "{t}"').fetchall()) for t in tables}
    connection.close()
    schema = {
        (kind, name, table): sorted(line.strip().rstrip(",").strip() for line in sql.splitlines())
        for kind, name, table, sql in objects
    }
    return {"schema": schema, "rows": rows}


def test_the_dump_is_the_database_the_installed_mlflow_migrations_make(tmp_path):
    assert dump_version(SCHEMA.read_text()) == VERSION, (
        f"{SCHEMA.name} is from MLflow {dump_version(SCHEMA.read_text())}, MLflow {VERSION} is "
        "installed: write it again with python -m mlops_assets.resources.mlflow_sqlite"
    )
    assert seed_database(f"sqlite:///{tmp_path / 'seeded.db'}") is True
    migrate(tmp_path / "migrated.db")

    seeded = _contents(tmp_path / "seeded.db")
    assert seeded == _contents(tmp_path / "migrated.db")
    assert len(seeded["schema"]) > 50  # every table and index, not an empty file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["migrated.db", "seeded.db"]
    # The permissions MLflow's own file gets, not a private temporary file's.
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes["seeded.db"] == modes["migrated.db"]


class _Messages(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(record.getMessage())


def test_mlflow_opens_a_new_database_without_migrating_and_uses_it(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    resource = MlflowResource(
        tracking_uri=uri,
        artifact_root=str(tmp_path / "artifacts"),
        model_name="house-price-regressor",
        experiment_name="house-prices",
    )
    # MLflow's loggers do not propagate: listen where it says it creates and migrates tables.
    logger = logging.getLogger("mlflow.store.db.utils")
    messages = _Messages()
    logger.addHandler(messages)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        client = resource.client()
        experiment_id = resource.experiment_id()
        run = client.create_run(experiment_id)
        client.log_metric(run.info.run_id, "rmse", 1.5)
        client.create_registered_model(resource.model_name)
        version = client.create_model_version(resource.model_name, "runs:/x/model", run.info.run_id)
        client.set_registered_model_alias(resource.model_name, "champion", version.version)
    finally:
        logger.removeHandler(messages)
        logger.setLevel(level)

    assert (tmp_path / "mlflow.db").exists()
    assert not [m for m in messages.seen if "database tables" in m]
    assert client.get_run(run.info.run_id).data.metrics == {"rmse": 1.5}
    alias = client.get_model_version_by_alias(resource.model_name, "champion")
    assert str(alias.version) == "1"


def test_an_existing_database_is_never_replaced(tmp_path):
    path = tmp_path / "mlflow.db"
    uri = f"sqlite:///{path}"
    resource = MlflowResource(
        tracking_uri=uri,
        artifact_root=str(tmp_path / "artifacts"),
        model_name="house-price-regressor",
        experiment_name="house-prices",
    )
    run = resource.client().create_run(resource.experiment_id())
    before = path.read_bytes()

    assert seed_database(uri) is False
    assert path.read_bytes() == before
    assert resource.client().get_run(run.info.run_id).info.status == "RUNNING"


def test_one_database_when_many_write_it_at_once(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    results: list[bool] = []
    start = threading.Barrier(8)

    def seed() -> None:
        start.wait()
        results.append(seed_database(uri))

    threads = [threading.Thread(target=seed) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(results) == [False] * 7 + [True]
    assert [p.name for p in tmp_path.iterdir()] == ["mlflow.db"]  # nothing left aside
    migrate(tmp_path / "migrated.db")
    assert _contents(tmp_path / "mlflow.db") == _contents(tmp_path / "migrated.db")


@pytest.mark.parametrize(
    "uri",
    [
        "postgresql://mlflow@localhost/mlflow",
        "http://localhost:5000",
        "sqlite:///{tmp}/mlflow.db?timeout=5",
        "sqlite:///{tmp}/no-such-folder/mlflow.db",
        "sqlite:///",
    ],
)
def test_other_uris_are_left_to_mlflow(tmp_path, uri):
    assert seed_database(uri.format(tmp=tmp_path)) is False
    assert list(tmp_path.iterdir()) == []


def test_a_dump_of_another_mlflow_version_is_not_used(tmp_path):
    other = tmp_path / "schema.sql"
    text = SCHEMA.read_text()
    other.write_text(text.replace(f"-- mlflow=={VERSION}", "-- mlflow==0.0.1", 1))
    path = tmp_path / "db" / "mlflow.db"
    path.parent.mkdir()

    assert seed_database(f"sqlite:///{path}", schema=other) is False
    assert not path.exists()  # MLflow makes it, with its migrations
