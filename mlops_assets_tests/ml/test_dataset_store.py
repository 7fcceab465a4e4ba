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
