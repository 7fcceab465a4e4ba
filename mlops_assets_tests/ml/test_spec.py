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


def test_allowed_values_are_kept_as_written_and_matched_as_the_data_is():
    data = HOUSE_PRICES.to_dict()
    data["categorical"][-1]["allowed"] = [
        "Furnished",
        " Semi-Furnished",
        "UNFURNISHED",
        "furnished",
    ]
    furnishing = DatasetSpec.from_dict(data).categorical[-1]
    # Kept as written (the first spelling of each), matched as the data is compared.
    assert furnishing.allowed == ("Furnished", "Semi-Furnished", "UNFURNISHED")
    assert furnishing.spelling == {
        "furnished": "Furnished",
        "semi-furnished": "Semi-Furnished",
        "unfurnished": "UNFURNISHED",
    }
    assert DatasetSpec.from_dict(data).schema_fingerprint() == HOUSE_PRICES.schema_fingerprint()


def test_a_column_may_set_its_own_null_limit():
    data = HOUSE_PRICES.to_dict()
    data["numeric"][0]["max_null_share"] = 0.3
    data["categorical"][0]["max_null_share"] = 0.0
    spec = DatasetSpec.from_dict(data)
    assert spec.null_limit("area") == 0.3
    assert spec.null_limit("mainroad") == 0.0
    assert spec.null_limit("bedrooms") == HOUSE_PRICES.max_null_share
    # A new limit is a processing change (a patch version), not a schema change.
    assert spec.schema_fingerprint() == HOUSE_PRICES.schema_fingerprint()
    assert spec.processing_fingerprint() != HOUSE_PRICES.processing_fingerprint()
    assert DatasetSpec.from_dict(spec.to_dict()) == spec


def test_specs_without_column_limits_keep_their_fingerprints():
    # Fingerprints of the house-price spec before per-column limits existed: every stored
    # dataset digest depends on them.
    assert HOUSE_PRICES.schema_fingerprint() == "5db57883c927bf8b"
    assert HOUSE_PRICES.processing_fingerprint() == "adc48008ccb4dea0"


def test_a_null_limit_outside_zero_to_one_is_refused():
    data = HOUSE_PRICES.to_dict()
    data["numeric"][1]["max_null_share"] = 5
    with pytest.raises(ValueError, match=r"column 'bedrooms': max_null_share 5 must be between"):
        DatasetSpec.from_dict(data)


def test_the_benchmarks_house_price_contract_is_the_specs():
    """bench/peers/house_lifecycle.py (what the plain script and every peer of the lifecycle
    benchmark compute with) copies the house-price spec, as the peers' venvs do not have the
    project: the copy must say what the spec says, or the peers check other data."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "bench" / "peers" / "house_lifecycle.py"
    module_spec = importlib.util.spec_from_file_location("house_lifecycle", path)
    assert module_spec is not None
    assert module_spec.loader is not None
    bench = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(bench)

    assert HOUSE_PRICES.target.name == bench.TARGET
    assert HOUSE_PRICES.numeric_features == bench.NUMERIC
    assert HOUSE_PRICES.categorical_features == bench.CATEGORICAL
    assert {c.name: (c.min, c.max, c.integer) for c in HOUSE_PRICES.numeric} == bench.RANGES
    assert {c.name: c.allowed for c in HOUSE_PRICES.categorical} == bench.CATEGORIES
    assert HOUSE_PRICES.target.min == 0  # the copy's rule for the target: a number >= 0
