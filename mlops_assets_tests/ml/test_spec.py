import json

import pytest

from mlops_assets.ml.spec import HOUSE_PRICES, DatasetSpec, load_spec


def test_house_price_spec_declares_the_issue_columns():
    assert HOUSE_PRICES.target.name == "price"
    assert HOUSE_PRICES.numeric_features == ["area", "bedrooms", "bathrooms", "stories", "parking"]
    assert set(HOUSE_PRICES.categorical_features) == {
        "mainroad",
        "guestroom",
        "basement",
        "hotwaterheating",
        "airconditioning",
        "prefarea",
        "furnishingstatus",
    }
    furnishing = next(c for c in HOUSE_PRICES.categorical if c.name == "furnishingstatus")
    assert set(furnishing.allowed) == {"furnished", "semi-furnished", "unfurnished"}


def test_spec_round_trips_through_json(tmp_path):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(HOUSE_PRICES.to_dict()))
    loaded = load_spec(str(path))
    assert loaded == HOUSE_PRICES
    assert loaded.schema_fingerprint() == HOUSE_PRICES.schema_fingerprint()


def test_empty_path_gives_the_default_spec():
    assert load_spec("") is HOUSE_PRICES


def test_schema_fingerprint_changes_with_allowed_values_but_not_split_settings():
    data = HOUSE_PRICES.to_dict()
    data["categorical"][0]["allowed"] = ["yes", "no", "maybe"]
    assert DatasetSpec.from_dict(data).schema_fingerprint() != HOUSE_PRICES.schema_fingerprint()
    data = HOUSE_PRICES.to_dict()
    data["split"]["seed"] = 7
    changed = DatasetSpec.from_dict(data)
    assert changed.schema_fingerprint() == HOUSE_PRICES.schema_fingerprint()
    assert changed.processing_fingerprint() != HOUSE_PRICES.processing_fingerprint()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(numeric=[], categorical=[]), "no feature columns"),
        (lambda d: d["numeric"].append({"name": "price"}), "declared twice"),
        (lambda d: d["split"].update(val_fraction=0.6, test_fraction=0.5), "split fractions"),
        (lambda d: d.pop("target"), "malformed"),
    ],
)
def test_invalid_specs_are_refused_with_the_reason(mutate, message):
    data = HOUSE_PRICES.to_dict()
    mutate(data)
    with pytest.raises(ValueError, match=message):
        DatasetSpec.from_dict(data)


def test_missing_or_broken_spec_file_names_the_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_spec(str(tmp_path / "nope.json"))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match=r"broken\.json is not valid JSON"):
        load_spec(str(broken))
