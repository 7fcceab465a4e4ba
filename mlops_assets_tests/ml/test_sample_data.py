import pandas as pd
import pytest

from mlops_assets.ml.sample_data import generate_house_prices, main, to_csv_bytes
from mlops_assets.ml.spec import HOUSE_PRICES
from mlops_assets.ml.tabular import TableFile, inspect_table


def test_same_seed_gives_same_rows_and_other_seed_differs():
    a = generate_house_prices(500, seed=1)
    pd.testing.assert_frame_equal(a, generate_house_prices(500, seed=1))
    assert not a.equals(generate_house_prices(500, seed=2))


def test_generated_rows_satisfy_the_house_price_contract():
    frame = generate_house_prices(2000, seed=3)
    inspection = inspect_table(TableFile("gen.csv", to_csv_bytes(frame)), HOUSE_PRICES)
    assert inspection.ok, [v.message for v in inspection.violations]
    assert list(frame.columns) == [
        "price",
        "area",
        "bedrooms",
        "bathrooms",
        "stories",
        "mainroad",
        "guestroom",
        "basement",
        "hotwaterheating",
        "airconditioning",
        "parking",
        "prefarea",
        "furnishingstatus",
    ]


def test_drifted_variant_shifts_area_prices_and_air_conditioning():
    base = generate_house_prices(20_000, seed=5)
    drifted = generate_house_prices(20_000, seed=5, drift=True)
    assert drifted["area"].median() > 1.25 * base["area"].median()
    assert drifted["price"].median() > 1.3 * base["price"].median()
    assert (drifted["airconditioning"] == "yes").mean() > (
        base["airconditioning"] == "yes"
    ).mean() + 0.2


@pytest.mark.parametrize("rows", [0, 10_000_001])
def test_row_count_out_of_bounds_is_refused(rows):
    with pytest.raises(ValueError, match="rows must be between"):
        generate_house_prices(rows)


def test_ten_rows_and_price_is_positive():
    frame = generate_house_prices(10, seed=0)
    assert len(frame) == 10
    assert (frame["price"] > 0).all()


def test_cli_writes_unlabelled_parquet(tmp_path):
    out = tmp_path / "batch.parquet"
    assert main([str(out), "--rows", "50", "--unlabelled", "--drift"]) == 0
    frame = pd.read_parquet(out)
    assert len(frame) == 50
    assert "price" not in frame.columns
