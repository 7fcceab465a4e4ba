"""The dataset contract on raw files: each bad input names file, column, rows and rule."""

import pandas as pd
import pytest

from mlops_assets.ml.sample_data import generate_house_prices, to_csv_bytes
from mlops_assets.ml.spec import HOUSE_PRICES
from mlops_assets.ml.tabular import (
    DUPLICATES,
    HAS_ROWS,
    PARSES,
    REQUIRED_COLUMNS,
    SCHEMA,
    DatasetRejected,
    TableFile,
    inspect_table,
    read_validated,
)


@pytest.fixture
def good_frame() -> pd.DataFrame:
    return generate_house_prices(100, seed=11)


def csv_file(frame: pd.DataFrame, name: str = "houses.csv") -> TableFile:
    return TableFile(name, to_csv_bytes(frame))


def test_good_file_passes_every_rule_and_is_typed(good_frame):
    inspection = inspect_table(csv_file(good_frame), HOUSE_PRICES)
    assert inspection.ok
    assert all(found == [] for found in inspection.results.values())
    assert inspection.frame["area"].dtype == "float64"
    assert isinstance(inspection.frame["furnishingstatus"].dtype, pd.CategoricalDtype)


def test_empty_file_fails_has_data_rows_and_later_rules_are_not_evaluated():
    inspection = inspect_table(TableFile("empty.csv", b""), HOUSE_PRICES)
    assert inspection.results[PARSES] == []
    [violation] = inspection.results[HAS_ROWS]
    assert "file 'empty.csv'" in violation.message
    assert "rule: file must not be empty" in violation.message
    assert inspection.results[REQUIRED_COLUMNS] is None
    assert inspection.results[SCHEMA] is None


def test_header_only_file_fails_has_data_rows(good_frame):
    header = ",".join(good_frame.columns).encode() + b"\n"
    [violation] = inspect_table(TableFile("header.csv", header), HOUSE_PRICES).results[HAS_ROWS]
    assert "only a header (13 columns) and no data rows" in violation.message


def test_missing_target_column_is_named(good_frame):
    inspection = inspect_table(csv_file(good_frame.drop(columns=["price"])), HOUSE_PRICES)
    [violation] = inspection.results[REQUIRED_COLUMNS]
    assert violation.column == "price"
    assert "column 'price'" in violation.message
    assert "rule: required column" in violation.message
    assert inspection.frame is None


def test_missing_target_is_allowed_for_incoming_batches(good_frame):
    inspection = inspect_table(
        csv_file(good_frame.drop(columns=["price"])), HOUSE_PRICES, require_target=False
    )
    assert inspection.ok


def test_non_numeric_values_name_column_rows_and_examples(good_frame):
    frame = good_frame.astype({"area": object})
    frame.loc[[3, 16, 89], "area"] = ["big", "huge", "big"]
    [violation] = inspect_table(csv_file(frame), HOUSE_PRICES).results[SCHEMA]
    assert violation.column == "area"
    assert violation.rows == (4, 17, 90)
    assert violation.message == (
        "file 'houses.csv', column 'area', rows 4, 17, 90: 3 non-numeric values "
        "(e.g. 'big', 'huge') (rule: numeric column)"
    )


def test_unseen_category_is_named_after_normalising_case_and_whitespace(good_frame):
    frame = good_frame.astype({"furnishingstatus": object, "mainroad": object})
    frame.loc[0, "mainroad"] = "  YES "
    frame.loc[5, "furnishingstatus"] = "luxury"
    inspection = inspect_table(csv_file(frame), HOUSE_PRICES)
    [violation] = inspection.results[SCHEMA]
    assert violation.column == "furnishingstatus"
    assert violation.rows == (6,)
    assert "'luxury'" in violation.message
    assert "values must be one of {furnished, semi-furnished, unfurnished}" in violation.message
    assert inspection.frame is not None
    assert inspection.frame.loc[0, "mainroad"] == "yes"


def test_fractional_and_out_of_range_values_are_rejected(good_frame):
    frame = good_frame.astype({"bedrooms": float})
    frame.loc[1, "bedrooms"] = 2.5
    frame.loc[2, "price"] = -5
    rules = {v.rule for v in inspect_table(csv_file(frame), HOUSE_PRICES).results[SCHEMA]}
    assert rules == {"whole numbers only", "values must be >= 0"}


def test_null_share_above_limit_fails(good_frame):
    frame = good_frame.astype({"area": float})
    frame.loc[:9, "area"] = None  # 10%, limit 5%
    [violation] = inspect_table(csv_file(frame), HOUSE_PRICES).results[SCHEMA]
    assert violation.column == "area"
    assert "10.0% of values are missing" in violation.message


def test_half_duplicate_rows_fail_duplicate_share(good_frame):
    doubled = pd.concat([good_frame, good_frame], ignore_index=True)
    [violation] = inspect_table(csv_file(doubled), HOUSE_PRICES).results[DUPLICATES]
    assert violation.row_count == 100
    assert violation.rows[0] == 101
    assert "50.0% of rows (100 of 200) repeat an earlier row" in violation.message
    assert "rule: at most 20% duplicate rows" in violation.message


def test_non_utf8_file_names_row_and_column(good_frame):
    data = bytearray(to_csv_bytes(good_frame.head(5)))
    lines = data.split(b"\n")
    lines[3] = lines[3].replace(b"furnished", b"f\xe9rnished", 1)
    inspection = inspect_table(TableFile("latin1.csv", b"\n".join(lines)), HOUSE_PRICES)
    [violation] = inspection.results[PARSES]
    assert violation.column == "furnishingstatus"
    assert violation.rows == (3,)
    assert "byte 0xe9" in violation.message
    assert "rule: text must be UTF-8 encoded" in violation.message
    assert inspection.results[HAS_ROWS] is None


def test_malformed_csv_fails_parsing():
    data = b"price,area\n1,2\n3,4,5,6\n"
    [violation] = inspect_table(TableFile("ragged.csv", data), HOUSE_PRICES).results[PARSES]
    assert "rule: must be well-formed CSV" in violation.message


def test_parquet_input_is_read(good_frame):
    import io

    buffer = io.BytesIO()
    good_frame.to_parquet(buffer)
    assert inspect_table(TableFile("houses.parquet", buffer.getvalue()), HOUSE_PRICES).ok


def test_read_validated_concatenates_files_and_raises_with_every_violation(good_frame):
    frame = read_validated(
        [csv_file(good_frame, "a.csv"), csv_file(good_frame, "b.csv")], HOUSE_PRICES
    )
    assert len(frame) == 200
    bad = good_frame.drop(columns=["price"])
    with pytest.raises(DatasetRejected) as info:
        read_validated([csv_file(good_frame, "a.csv"), csv_file(bad, "b.csv")], HOUSE_PRICES)
    assert "file 'b.csv', column 'price'" in str(info.value)
