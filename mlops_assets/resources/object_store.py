"""The object store: where snapshots, dataset versions, predictions and reports live."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from dagster import ConfigurableResource


class ObjectStoreResource(ConfigurableResource):
    """A folder on local disk, addressed by '/'-separated keys.

    Writes are atomic: a file appears complete or not at all (temp file + rename).
    """

    root: str

    @property
    def _root(self) -> Path:
        return Path(self.root).expanduser().resolve()

    def _path(self, key: str) -> Path:
        path = (self._root / key).resolve()
        if not path.is_relative_to(self._root):
            raise ValueError(f"object key {key!r} escapes the store root {self._root}")
        return path

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(f"object {self.uri(key)} does not exist") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list_keys(self, prefix: str) -> list[str]:
        base = self._path(prefix.rstrip("/")) if prefix.strip("/") else self._root
        if not base.is_dir():
            return []
        return sorted(
            p.relative_to(self._root).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()
