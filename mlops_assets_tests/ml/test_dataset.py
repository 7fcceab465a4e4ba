import numpy as np
import pandas as pd
import pytest

from mlops_assets.ml.dataset import (
    clean,
    content_digest,
    leaked_rows,
    next_version_tag,
    split,
    split_size_findings,
)
from mlops_assets.ml.sample_data import generate_house_prices, to_csv_bytes
from mlops_assets.ml.spec import HOUSE_PRICES
from mlops_assets.ml.tabular import TableFile, read_validated


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    raw = generate_house_prices(3000, seed=21)
    return read_validated([TableFile("h.csv", to_csv_bytes(raw))], HOUSE_PRICES).frame


def test_clean_keeps_equal_rows_and_drops_rows_without_target(frame):
    dirty = pd.concat([frame, frame.head(10)], ignore_index=True)
    dirty.loc[50, "price"] = np.nan  # a row that is not also duplicated
    cleaned, stats = clean(dirty, HOUSE_PRICES)
    assert stats.duplicates_dropped == 0  # no key: equal rows are observations
    assert stats.missing_target_dropped == 1
    assert len(cleaned) == stats.rows_out == len(frame) + 10 - 1


def test_clean_with_a_key_keeps_the_last_row_of_each_key(frame):
    from dataclasses import replace

    keyed = replace(HOUSE_PRICES, key=("listing",))
    listed = frame.assign(listing=[f"L{i}" for i in range(len(frame))])
    again = listed.head(10).assign(price=listed.head(10)["price"] + 1)
    cleaned, stats = clean(pd.concat([listed, again], ignore_index=True), keyed)
    assert stats.duplicates_dropped == 10
    assert len(cleaned) == len(frame)
    kept = cleaned.set_index("listing").loc[again["listing"], "price"].to_numpy()
    assert (kept == again["price"].to_numpy()).all()


def test_split_is_deterministic_sized_and_leak_free(frame):
    splits = split(frame, HOUSE_PRICES)
    again = split(frame.sample(frac=1, random_state=3), HOUSE_PRICES)
    for name in splits:
        pd.testing.assert_frame_equal(splits[name], again[name])
    assert sum(len(p) for p in splits.values()) == len(frame)
    assert all(f.ok_share for f in split_size_findings(splits, HOUSE_PRICES))
    assert leaked_rows(splits, HOUSE_PRICES) == {
        "val_in_train": 0,
        "test_in_train": 0,
        "test_in_val": 0,
    }


def test_rows_keep_their_split_when_data_grows(frame):
    small = split(frame.head(1000), HOUSE_PRICES)
    large = split(frame, HOUSE_PRICES)
    key = HOUSE_PRICES.feature_columns
    for name in ("train", "test"):
        merged = small[name].merge(large[name], on=[*key, "price"], how="left", indicator=True)
        assert (merged["_merge"] == "both").all()


def test_leakage_is_detected_when_a_test_row_is_in_train(frame):
    splits = split(frame, HOUSE_PRICES)
    splits["train"] = pd.concat([splits["train"], splits["test"].head(3)], ignore_index=True)
    assert leaked_rows(splits, HOUSE_PRICES)["test_in_train"] == 3


def test_split_size_finding_fails_when_a_split_is_far_off(frame):
    splits = split(frame, HOUSE_PRICES)
    splits["train"] = pd.concat([splits["train"], splits["test"]], ignore_index=True)
    splits["test"] = splits["test"].head(10)
    test_finding = next(f for f in split_size_findings(splits, HOUSE_PRICES) if f.split == "test")
    assert not test_finding.ok_share


def test_digest_ignores_row_order_but_sees_content(frame):
    a = content_digest(split(frame, HOUSE_PRICES), HOUSE_PRICES)
    b = content_digest(split(frame.iloc[::-1], HOUSE_PRICES), HOUSE_PRICES)
    changed = frame.copy()
    changed.loc[0, "price"] += 1000
    assert a == b
    assert a != content_digest(split(changed, HOUSE_PRICES), HOUSE_PRICES)


@pytest.mark.parametrize(
    ("previous", "schema", "source", "expected"),
    [
        (None, False, True, "data-v1.0.0"),
        ("data-v1.0.0", False, True, "data-v1.1.0"),
        ("data-v1.4.2", True, True, "data-v2.0.0"),
        ("data-v1.4.0", False, False, "data-v1.4.1"),
    ],
)
def test_version_tags_follow_semver_rules(previous, schema, source, expected):
    assert next_version_tag(previous, schema_changed=schema, source_changed=source) == expected
