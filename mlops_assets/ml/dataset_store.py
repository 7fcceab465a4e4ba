"""Content-addressed dataset versions in any blob store.

Layout under ``datasets/<name>/``::

    versions/<digest>/train.parquet, val.parquet, test.parquet
    versions/<digest>/manifest.json     written last: a version exists once it has a manifest
    tags/data-vX.Y.Z.json               immutable human tag -> digest
    refs/latest.json, refs/previous.json
    publishing.json                     a publication under way (see below)

Publishing is two steps, so that nothing a reader follows changes before a
version has passed its checks: :meth:`DatasetStore.stage` writes the Parquet
files (content-addressed, invisible without a manifest), and
:meth:`DatasetStore.publish` writes the manifest, then the tag, then the refs.
A reader following ``latest`` never meets a half-written or rejected version.

A publication is several writes, and a process can die between any two. So it first writes
what it is about to do (``publishing.json``: the digest, its tag, and the refs it will set),
and removes that record when done. The next publication finds a record left behind and
finishes it first: the tag a manifest names is always written, ``latest`` and ``previous``
always end as the publication meant, and no tag is given twice. Publications must not
interleave: the caller holds the dataset's lease (lib/exclusive.py).
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import pandas as pd

from mlops_assets.ml.dataset import SPLITS, CleaningStats, next_version_tag
from mlops_assets.ml.spec import DatasetSpec


class BlobStore(Protocol):
    """What the dataset store needs from an object store (local directory or S3)."""

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def delete(self, key: str) -> None: ...

    def get_bytes(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def list_keys(self, prefix: str) -> list[str]: ...

    def uri(self, key: str) -> str: ...


def frame_to_parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def parquet_to_frame(data: bytes) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(data))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class DatasetVersionMissing(LookupError):
    """A dataset version that a model or a run names is not in the store."""


@dataclass(frozen=True)
class StagedVersion:
    """A version whose Parquet files are in the store but which nothing points at yet.

    ``manifest`` is the stored manifest when the version already exists (``created`` False),
    else the draft to write on publishing; a draft has no tag until it is published.
    """

    manifest: dict[str, Any]
    created: bool


@dataclass(frozen=True)
class PublishResult:
    manifest: dict[str, Any]
    created: bool
    previous_latest: str | None
    # An earlier publication this one finished first, or a problem it found (a person reads it).
    finished: str | None = None


PUBLISHING = "publishing.json"


class DatasetStore:
    def __init__(self, store: BlobStore, dataset_name: str):
        self.store = store
        self.name = dataset_name
        self.prefix = f"datasets/{dataset_name}"

    def _version_key(self, digest: str, name: str) -> str:
        return f"{self.prefix}/versions/{digest}/{name}"

    def _read_json(self, key: str) -> dict[str, Any] | None:
        if not self.store.exists(key):
            return None
        return json.loads(self.store.get_bytes(key))

    def _write_json(self, key: str, value: dict[str, Any]) -> None:
        self.store.put_bytes(key, json.dumps(value, indent=2, sort_keys=True).encode())

    def manifest(self, digest: str) -> dict[str, Any] | None:
        return self._read_json(self._version_key(digest, "manifest.json"))

    def ref(self, name: str) -> dict[str, Any] | None:
        """``latest`` or ``previous``: the manifest the ref points at, if any."""
        pointer = self._read_json(f"{self.prefix}/refs/{name}.json")
        return self.manifest(pointer["digest"]) if pointer else None

    def tags(self) -> dict[str, str]:
        """Every human tag and the digest it names."""
        result = {}
        for key in self.store.list_keys(f"{self.prefix}/tags/"):
            tag = key.rsplit("/", 1)[-1].removesuffix(".json")
            result[tag] = json.loads(self.store.get_bytes(key))["digest"]
        return result

    def require_manifest(self, digest: str) -> dict[str, Any]:
        """The manifest of ``digest``; raises DatasetVersionMissing, naming the store, if none."""
        manifest = self.manifest(digest)
        if manifest is None:
            raise DatasetVersionMissing(
                f"dataset version {digest[:12]} of '{self.name}' is not in the object store "
                f"{self.store.uri('')}"
            )
        return manifest

    def load_split(self, manifest: dict[str, Any], split: str) -> pd.DataFrame:
        return parquet_to_frame(self.store.get_bytes(manifest["files"][split]["key"]))

    def load_splits(self, manifest: dict[str, Any]) -> dict[str, pd.DataFrame]:
        return {name: self.load_split(manifest, name) for name in manifest["files"]}

    def verify(self, manifest: dict[str, Any]) -> list[str]:
        """Re-hash every file of a version; return a problem per file that does not match."""
        problems = []
        for split, entry in manifest["files"].items():
            key = entry["key"]
            if not self.store.exists(key):
                problems.append(f"{split}: {self.store.uri(key)} is missing")
                continue
            actual = sha256(self.store.get_bytes(key))
            if actual != entry["sha256"]:
                problems.append(
                    f"{split}: {self.store.uri(key)} has sha256 {actual[:12]}, "
                    f"manifest says {entry['sha256'][:12]}"
                )
        return problems

    def stage(
        self,
        splits: dict[str, pd.DataFrame],
        digest: str,
        spec: DatasetSpec,
        source: dict[str, Any],
        cleaning: CleaningStats,
    ) -> StagedVersion:
        """Write a new version's Parquet files (nothing for a digest that exists); no manifest,
        tag or ref is written, so a staged version stays invisible until :meth:`publish`."""
        existing = self.manifest(digest)
        if existing is not None:
            return StagedVersion(manifest=existing, created=False)
        files = {}
        for name in SPLITS:
            data = frame_to_parquet(splits[name])
            key = self._version_key(digest, f"{name}.parquet")
            self.store.put_bytes(key, data)
            files[name] = {
                "key": key,
                "rows": len(splits[name]),
                "sha256": sha256(data),
                "bytes": len(data),
            }
        draft = {
            "dataset": spec.name,
            "digest": digest,
            "schema_fingerprint": spec.schema_fingerprint(),
            "processing_fingerprint": spec.processing_fingerprint(),
            "spec": spec.to_dict(),
            "source": source,
            "cleaning": {
                "rows_in": cleaning.rows_in,
                "duplicates_dropped": cleaning.duplicates_dropped,
                "missing_target_dropped": cleaning.missing_target_dropped,
                "rows_out": cleaning.rows_out,
            },
            "files": files,
        }
        return StagedVersion(manifest=draft, created=True)

    def _pending(self) -> dict[str, Any] | None:
        return self._read_json(f"{self.prefix}/{PUBLISHING}")

    def finish_pending(self) -> str | None:
        """Finish a publication a dead process left half done (see the module doc); returns
        what was finished, or None when nothing was pending."""
        pending = self._pending()
        if pending is None:
            return None
        digest, tag = pending["digest"], pending["tag"]
        if self.manifest(digest) is None:
            # It died before the manifest: the version never existed; its files stay invisible.
            self.store.delete(f"{self.prefix}/{PUBLISHING}")
            return f"dropped the unfinished publication of {tag} ({digest[:12]}): no manifest"
        problem = self._apply(digest, tag, pending["previous"])
        done = f"finished the publication of {tag} ({digest[:12]}) that a stopped run left"
        return f"{done}; {problem}" if problem else done

    def _write_tag(self, tag: str, digest: str) -> str | None:
        """Write ``tag`` for ``digest`` unless another version holds it (tags are immutable);
        returns what is wrong, if anything."""
        holder = self._read_json(f"{self.prefix}/tags/{tag}.json")
        if holder is None:
            self._write_json(f"{self.prefix}/tags/{tag}.json", {"digest": digest})
        elif holder["digest"] != digest:
            return (
                f"version {digest[:12]}'s manifest names {tag}, which version "
                f"{holder['digest'][:12]} holds: its tag is not written"
            )
        return None

    def _apply(self, digest: str, tag: str, previous: str | None) -> str | None:
        """Tag, refs, and the end of the publication record: each write repeatable."""
        problem = self._write_tag(tag, digest)
        if previous is not None and previous != digest:
            self._write_json(f"{self.prefix}/refs/previous.json", {"digest": previous})
        self._write_json(f"{self.prefix}/refs/latest.json", {"digest": digest})
        self.store.delete(f"{self.prefix}/{PUBLISHING}")
        return problem

    def publish(self, staged: StagedVersion) -> PublishResult:
        """Make a staged version visible and point ``latest`` at it (``previous`` at the old
        latest). Call it only once the version passed its blocking checks, holding the
        dataset's lease.

        A new version gets its tag here, numbered from the ``latest`` it replaces: manifest
        first, then the immutable tag, then the refs. A version whose manifest appeared since
        it was staged (another run published the same data first) is not tagged again.
        """
        finished = self.finish_pending()
        latest = self.ref("latest")
        digest = staged.manifest["digest"]
        existing = self.manifest(digest)
        created = existing is None
        manifest = dict(staged.manifest if existing is None else existing)
        if created:
            tag = next_version_tag(
                latest["tag"] if latest else None,
                schema_changed=latest is not None
                and latest["schema_fingerprint"] != manifest["schema_fingerprint"],
                source_changed=latest is None
                or latest["source"]["digest"] != manifest["source"]["digest"],
            )
            manifest["tag"] = self._free_tag(tag)
            manifest["created_at"] = datetime.now(UTC).isoformat()
        moves_latest = latest is None or latest["digest"] != digest
        tag_missing = not self.store.exists(f"{self.prefix}/tags/{manifest['tag']}.json")
        if created or moves_latest or tag_missing:
            previous = latest["digest"] if latest and moves_latest else None
            self._write_json(
                f"{self.prefix}/{PUBLISHING}",
                {"digest": digest, "tag": manifest["tag"], "previous": previous},
            )
            if created:
                self._write_json(self._version_key(digest, "manifest.json"), manifest)
            if moves_latest:
                problem = self._apply(digest, manifest["tag"], previous)
            else:  # latest already, only its tag was lost: write it, move nothing
                problem = self._write_tag(manifest["tag"], digest)
                self.store.delete(f"{self.prefix}/{PUBLISHING}")
            finished = "; ".join(filter(None, [finished, problem])) or None
        return PublishResult(
            manifest=manifest,
            created=created,
            previous_latest=latest["tag"] if latest else None,
            finished=finished,
        )

    def _free_tag(self, tag: str) -> str:
        """``tag``, or the next patch number that no tag file holds yet: a tag is never given
        to two versions, whatever the refs say."""
        taken = {
            key.rsplit("/", 1)[-1].removesuffix(".json")
            for key in self.store.list_keys(f"{self.prefix}/tags/")
        }
        major, minor, patch = (int(p) for p in tag.removeprefix("data-v").split("."))
        while tag in taken:
            patch += 1
            tag = f"data-v{major}.{minor}.{patch}"
        return tag
