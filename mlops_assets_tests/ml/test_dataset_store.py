import json

import pandas as pd
import pytest

from mlops_assets.ml.dataset import clean, content_digest, split
from mlops_assets.ml.dataset_store import DatasetStore
from mlops_assets.ml.sample_data import generate_house_prices, to_csv_bytes
from mlops_assets.ml.spec import HOUSE_PRICES, DatasetSpec
from mlops_assets.ml.tabular import TableFile, read_validated
from mlops_assets.resources.object_store import ObjectStoreResource


def prepared(rows: int, seed: int, spec: DatasetSpec = HOUSE_PRICES):
    frame = read_validated(
        [TableFile("h.csv", to_csv_bytes(generate_house_prices(rows, seed)))], spec
    ).frame
    cleaned, stats = clean(frame, spec)
    splits = split(cleaned, spec)
    return splits, content_digest(splits, spec), stats


@pytest.fixture
def store(tmp_path) -> DatasetStore:
    return DatasetStore(ObjectStoreResource(root=str(tmp_path)), HOUSE_PRICES.name)


def publish(store, rows, seed, source_digest, spec=HOUSE_PRICES):
    splits, digest, stats = prepared(rows, seed, spec)
    staged = store.stage(splits, digest, spec, {"uri": "x", "digest": source_digest}, stats)
    return store.publish(staged)


def test_first_version_is_tagged_and_latest(store):
    result = publish(store, 300, 1, "raw-a")
    assert result.created
    assert result.manifest["tag"] == "data-v1.0.0"
    assert store.ref("latest")["digest"] == result.manifest["digest"]
    assert store.ref("previous") is None
    assert store.verify(result.manifest) == []
    loaded = store.load_split(result.manifest, "train")
    assert len(loaded) == result.manifest["files"]["train"]["rows"]


def test_unchanged_content_makes_no_new_version(store):
    first = publish(store, 300, 1, "raw-a")
    again = publish(store, 300, 1, "raw-a")
    assert not again.created
    assert again.manifest == first.manifest
    assert store.tags() == {"data-v1.0.0": first.manifest["digest"]}


def test_new_data_bumps_minor_and_moves_latest_and_previous(store):
    first = publish(store, 300, 1, "raw-a")
    second = publish(store, 300, 2, "raw-b")
    assert second.manifest["tag"] == "data-v1.1.0"
    assert store.ref("latest")["tag"] == "data-v1.1.0"
    assert store.ref("previous")["tag"] == "data-v1.0.0"
    assert set(store.tags()) == {"data-v1.0.0", "data-v1.1.0"}
    assert store.verify(first.manifest) == []  # the older version is untouched


def test_schema_change_bumps_major(store):
    publish(store, 300, 1, "raw-a")
    data = HOUSE_PRICES.to_dict()
    data["numeric"][0]["max"] = 50_000
    wider = DatasetSpec.from_dict(data)
    assert publish(store, 300, 1, "raw-a", spec=wider).manifest["tag"] == "data-v2.0.0"


def test_verify_reports_a_tampered_file(store, tmp_path):
    manifest = publish(store, 300, 1, "raw-a").manifest
    path = tmp_path / manifest["files"]["test"]["key"]
    path.write_bytes(pd.DataFrame({"x": [1]}).to_parquet())
    [problem] = store.verify(manifest)
    assert problem.startswith("test:")
    assert "manifest says" in problem


def test_a_version_without_manifest_is_invisible(store, tmp_path):
    _splits, digest, _stats = prepared(300, 1)
    (tmp_path / store.prefix / "versions" / digest).mkdir(parents=True)
    (tmp_path / store.prefix / "versions" / digest / "train.parquet").write_bytes(b"partial")
    assert store.manifest(digest) is None
    assert store.ref("latest") is None


def test_a_staged_version_is_invisible_until_published(store):
    publish(store, 300, 1, "raw-a")
    splits, digest, stats = prepared(300, 2)
    before = (store.ref("latest"), store.ref("previous"), store.tags())

    staged = store.stage(splits, digest, HOUSE_PRICES, {"uri": "x", "digest": "raw-b"}, stats)

    assert staged.created
    assert "tag" not in staged.manifest
    assert store.verify(staged.manifest) == []  # the files are there, checkable
    assert store.manifest(digest) is None  # ... but the version is not
    assert (store.ref("latest"), store.ref("previous"), store.tags()) == before
    published = store.publish(staged)
    assert published.manifest["tag"] == "data-v1.1.0"
    assert store.ref("latest")["digest"] == digest


class Stopped(Exception):
    """The process stopped here (injected: a kill between two writes cannot be timed)."""


class StopsAfter:
    """An object store that stops after ``writes`` more writes, as a killed process would."""

    def __init__(self, store: ObjectStoreResource, writes: int) -> None:
        self.store, self.left = store, writes

    def put_bytes(self, key: str, data: bytes) -> None:
        if self.left == 0:
            raise Stopped(key)
        self.left -= 1
        self.store.put_bytes(key, data)

    def __getattr__(self, name: str):
        return getattr(self.store, name)


def tags_by_digest(store: DatasetStore) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for tag, digest in store.tags().items():
        found.setdefault(digest, []).append(tag)
    return found


# The writes of publishing a new version over an old one: the publication record, the
# manifest, the tag, refs/previous, refs/latest.
@pytest.mark.parametrize("stopped_after", ["record", "manifest", "tag", "previous ref"], ids=str)
def test_a_publication_stopped_between_two_writes_is_finished_by_the_next(tmp_path, stopped_after):
    objects = ObjectStoreResource(root=str(tmp_path))
    store = DatasetStore(objects, HOUSE_PRICES.name)
    first = publish(store, 300, 1, "raw-a").manifest
    splits, digest, stats = prepared(300, 2)
    writes = ["record", "manifest", "tag", "previous ref"].index(stopped_after) + 1
    stopping = DatasetStore(StopsAfter(objects, 10**6), HOUSE_PRICES.name)
    staged = stopping.stage(splits, digest, HOUSE_PRICES, {"uri": "x", "digest": "raw-b"}, stats)
    stopping.store.left = writes  # the Parquet files are written; the publication stops
    with pytest.raises(Stopped):
        stopping.publish(staged)

    third = publish(store, 300, 3, "raw-c")  # the next run publishes other data

    if stopped_after == "record":  # nothing of the version was visible: it is dropped
        assert third.finished.startswith("dropped the unfinished publication of data-v1.1.0")
        assert store.manifest(digest) is None
        assert third.manifest["tag"] == "data-v1.1.0"
        assert store.ref("previous")["digest"] == first["digest"]
    else:  # its manifest was written: it is finished, then the new version follows it
        assert third.finished.startswith("finished the publication of data-v1.1.0")
        assert store.manifest(digest)["tag"] == "data-v1.1.0"
        assert third.manifest["tag"] == "data-v1.2.0"
        assert store.ref("previous")["digest"] == digest
    assert store.ref("latest")["digest"] == third.manifest["digest"]
    assert all(len(tags) == 1 for tags in tags_by_digest(store).values())
    assert len(set(store.tags().values())) == len(store.tags())
    assert not (tmp_path / store.prefix / "publishing.json").exists()


def test_a_version_published_meanwhile_by_another_run_is_not_tagged_again(store):
    splits, digest, stats = prepared(300, 1)
    source = {"uri": "x", "digest": "raw-a"}
    # Two runs staged the same data before either published (each then takes the lease).
    one = store.stage(splits, digest, HOUSE_PRICES, source, stats)
    two = store.stage(splits, digest, HOUSE_PRICES, source, stats)
    assert (one.created, two.created) == (True, True)
    first, second = store.publish(one), store.publish(two)
    assert (first.created, second.created) == (True, False)
    assert store.tags() == {"data-v1.0.0": digest}
    assert second.manifest["tag"] == "data-v1.0.0"
    assert store.ref("previous") is None


def test_a_tag_lost_before_publications_were_recorded_is_written_and_never_reused(store, tmp_path):
    """A manifest whose tag file is missing (left by a crash before this project recorded
    publications): publishing it again writes its tag; a new version never takes that tag."""
    first = publish(store, 300, 1, "raw-a").manifest
    second = publish(store, 300, 2, "raw-b").manifest
    (tmp_path / store.prefix / "tags" / f"{second['tag']}.json").unlink()
    (tmp_path / store.prefix / "refs" / "latest.json").write_text(
        json.dumps({"digest": first["digest"]})
    )
    third = publish(store, 300, 3, "raw-c").manifest  # numbered from latest: data-v1.1.0
    assert third["tag"] == "data-v1.1.0"  # free: nothing holds that tag file
    again = publish(store, 300, 2, "raw-b")
    assert again.manifest["tag"] == "data-v1.1.0"  # its manifest says so, but the tag is taken
    assert store.tags()["data-v1.1.0"] == third["digest"]  # and stays the third's
    assert again.finished == (
        f"version {second['digest'][:12]}'s manifest names data-v1.1.0, which version "
        f"{third['digest'][:12]} holds: its tag is not written"
    )
