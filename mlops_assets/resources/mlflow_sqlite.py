"""A new embedded MLflow database starts from MLflow's own migrated schema, not its migrations.

On an empty SQLite file MLflow creates its first tables and then runs every alembic migration
since (0.8 s, most of a cold run's MLflow start). ``mlflow_sqlite_schema.sql`` is what those
migrations leave in an empty database, dumped from the pinned MLflow by this module:

    .venv/bin/python -m mlops_assets.resources.mlflow_sqlite

A tracking URI ``sqlite:///<file>`` whose file does not exist yet is written from it. MLflow
then opens it as any database it migrated itself (it checks the schema's revision on every
open). Anything else is left to MLflow: an existing file, a server or another database, a URI
with options, or an MLflow version other than the one the dump records, which MLflow migrates
as before. ``mlops_assets_tests`` asserts that the dump is what the installed MLflow's
migrations produce.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import tempfile
import uuid
from pathlib import Path

SCHEMA = Path(__file__).with_name("mlflow_sqlite_schema.sql")
_PREFIX = "sqlite:///"
_HEADER = "-- mlflow=="
_INDEXES = ("CREATE INDEX", "CREATE UNIQUE INDEX", "CREATE TRIGGER", "CREATE VIEW")


def _database(uri: str) -> Path | None:
    """The file of a plain ``sqlite:///<file>`` URI, or None."""
    if not uri.startswith(_PREFIX) or "?" in uri or uri == _PREFIX:
        return None
    return Path(uri[len(_PREFIX) :])


def dump_version(text: str) -> str:
    """The MLflow version a schema dump was taken from (its first line)."""
    first = text.split("\n", 1)[0]
    return first[len(_HEADER) :].strip() if first.startswith(_HEADER) else ""


def seed_database(uri: str, schema: Path = SCHEMA) -> bool:
    """Write MLflow's migrated empty schema to the new SQLite file of ``uri``; True if written.

    The file is built aside and linked into place only if nothing is there by then, so a
    database another process creates meanwhile is never replaced.
    """
    path = _database(uri)
    if path is None or path.exists() or not path.parent.is_dir():
        return False
    from mlflow.version import VERSION

    text = schema.read_text()
    if dump_version(text) != VERSION:
        return False
    # Made by SQLite, as MLflow's own file would be: the same permissions (the umask's).
    aside = path.parent / f".{path.name}.{uuid.uuid4().hex}.seed"
    try:
        with sqlite3.connect(aside) as connection:
            connection.executescript(text)
        connection.close()
        try:
            os.link(aside, path)
        except OSError:  # created meanwhile, or a file system without hard links
            return False
        return True
    finally:
        aside.unlink(missing_ok=True)


def migrate(path: Path) -> None:
    """Create the SQLite database ``path`` as MLflow does on an empty file: its first tables,
    then every migration."""
    from mlflow.store.db.utils import _initialize_tables
    from sqlalchemy import create_engine

    engine = create_engine(f"{_PREFIX}{path}")
    try:
        _initialize_tables(engine)
    finally:
        engine.dispose()


def migrated_dump() -> str:
    """What the installed MLflow's migrations leave in an empty SQLite database, as SQL."""
    from mlflow.version import VERSION

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "mlflow.db"
        migrate(path)
        with sqlite3.connect(path) as connection:
            statements = list(connection.iterdump())
        connection.close()
    # iterdump gives the tables and their rows by name, the indexes in creation order (which
    # varies from run to run): sorted, the same database always gives the same file.
    indexes = sorted(s for s in statements if s.startswith(_INDEXES))
    rest = [s for s in statements if not s.startswith(_INDEXES) and s != "COMMIT;"]
    return "\n".join([f"{_HEADER}{VERSION}", *rest, *indexes, "COMMIT;"]) + "\n"


def main() -> None:
    """Write ``mlflow_sqlite_schema.sql`` from the installed MLflow (after a version bump)."""
    SCHEMA.write_text(migrated_dump())
    print(f"wrote {SCHEMA} ({dump_version(SCHEMA.read_text())})", file=sys.stderr)


if __name__ == "__main__":
    main()
