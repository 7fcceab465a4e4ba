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


def test_out_of_range_counts_are_singular_and_plural_and_values_as_written(good_frame):
    one = good_frame.astype({"price": object})  # -5 is written '-5', not '-5.0'
    one.loc[2, "price"] = "-5"
    (violation,) = inspect_table(csv_file(one), HOUSE_PRICES).results[SCHEMA]
    assert "row 3: 1 value out of range (e.g. '-5')" in violation.message
    two = good_frame.astype({"price": object})
    two.loc[[2, 4], "price"] = "-5"
    (violation,) = inspect_table(csv_file(two), HOUSE_PRICES).results[SCHEMA]
    assert "rows 3, 5: 2 values out of range (e.g. '-5')" in violation.message


def test_null_share_above_limit_fails(good_frame):
    frame = good_frame.astype({"area": float})
    frame.loc[:9, "area"] = None  # 10%, limit 5%
    [violation] = inspect_table(csv_file(frame), HOUSE_PRICES).results[SCHEMA]
    assert violation.column == "area"
    assert "10.0% of values are missing" in violation.message


def test_half_equal_rows_only_warn_without_a_key(good_frame):
    doubled = pd.concat([good_frame, good_frame], ignore_index=True)
    inspection = inspect_table(csv_file(doubled), HOUSE_PRICES)
    assert inspection.results[DUPLICATES] == []  # nothing rejects the file
    [warning] = inspection.warnings[DUPLICATES]
    assert warning.row_count == 100
    assert warning.rows[0] == 101
    assert warning.column is None
    assert "50.0% of rows (100 of 200) repeat an earlier row" in warning.message
    assert "declare the spec's key if rows are records" in warning.message
    assert len(inspection.frame) == 200


def test_half_repeated_keys_fail_duplicate_share(good_frame):
    from dataclasses import replace

    keyed = replace(HOUSE_PRICES, key=("id",))
    with_ids = good_frame.assign(id=[f"h{i}" for i in range(len(good_frame))])
    doubled = pd.concat([with_ids, with_ids], ignore_index=True)
    [violation] = inspect_table(csv_file(doubled), keyed).results[DUPLICATES]
    assert violation.row_count == 100
    assert violation.rows[0] == 1  # the first of a key written twice: the last one is kept
    assert "file 'houses.csv', column 'id', rows 1, 2" in violation.message
    assert "50.0% of rows (100 of 200) repeat the key (id) of a later row" in violation.message


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
    table = read_validated(
        [csv_file(good_frame, "a.csv"), csv_file(good_frame, "b.csv")], HOUSE_PRICES
    )
    assert len(table.frame) == 200
    assert table.ignored_columns == {}
    bad = good_frame.drop(columns=["price"])
    with pytest.raises(DatasetRejected) as info:
        read_validated([csv_file(good_frame, "a.csv"), csv_file(bad, "b.csv")], HOUSE_PRICES)
    assert "file 'b.csv', column 'price'" in str(info.value)


def _with_unquoted_thousands(frame: pd.DataFrame, rows: list[int], column: str) -> bytes:
    """CSV text where ``column`` of ``rows`` is written as 1,234 without quotes."""
    lines = to_csv_bytes(frame).decode().splitlines()
    position = list(frame.columns).index(column)
    for row in rows:
        fields = lines[row + 1].split(",")
        fields[position] = f"{int(float(fields[position])) // 1000 + 1},{234:03d}"
        lines[row + 1] = ",".join(fields)
    return ("\n".join(lines) + "\n").encode()


def test_unquoted_thousands_separator_names_the_column_rows_and_line(good_frame):
    data = _with_unquoted_thousands(good_frame, [4, 16], "area")
    [violation] = inspect_table(TableFile("export.csv", data), HOUSE_PRICES).results[PARSES]
    assert violation.column == "area"
    assert violation.rows == (5, 17)
    assert "first: line 6 has 14" in violation.message
    assert "unquoted thousands separator" in violation.message
    assert "rule: must be well-formed CSV" in violation.message


def test_a_thousands_separator_does_not_hide_the_columns_other_bad_values(good_frame):
    frame = good_frame.astype({"area": object})
    frame.loc[[30, 31], "area"] = "big"
    frame.loc[40, "area"] = "-5"
    data = _with_unquoted_thousands(frame, [4, 16], "area")
    inspection = inspect_table(TableFile("export.csv", data), HOUSE_PRICES)
    assert not inspection.ok
    assert inspection.frame is None
    [parse] = inspection.results[PARSES]
    assert parse.rows == (5, 17)
    by_rule = {v.rule: v for v in inspection.results[SCHEMA]}
    assert by_rule["numeric column"].rows == (31, 32)
    assert "2 non-numeric values (e.g. 'big')" in by_rule["numeric column"].message
    assert by_rule["values must be >= 100"].rows == (41,)
    assert "1 value out of range (e.g. '-5')" in by_rule["values must be >= 100"].message


def test_a_million_written_with_two_separators_is_read_whole():
    from mlops_assets.ml.tabular import _merge_thousands

    assert _merge_thousands(["1", "200", "000", "5"], 2) == ["1200000", "5"]
    assert _merge_thousands(["1", "200", "x"], 2) == ["1200", "x"]
    assert _merge_thousands(["1", "x", "y"], 2) is None


def test_every_row_with_a_thousands_separator_is_never_read_shifted(good_frame):
    # pandas would take the extra field as an index and shift every value one column right.
    data = _with_unquoted_thousands(good_frame, list(range(len(good_frame))), "area")
    inspection = inspect_table(TableFile("export.csv", data), HOUSE_PRICES)
    [violation] = inspection.results[PARSES]
    assert inspection.frame is None
    assert violation.column == "area"
    assert violation.row_count == len(good_frame)


def test_a_ragged_row_without_a_number_to_blame_names_the_line():
    data = b"price,area\n1,2\n3,x,y\n"
    [violation] = inspect_table(TableFile("ragged.csv", data), HOUSE_PRICES).results[PARSES]
    assert violation.column is None
    assert violation.rows == (2,)
    assert "line 3 has 3" in violation.message


def test_columns_the_spec_does_not_declare_are_reported(good_frame):
    extra = good_frame.assign(listing_id=range(len(good_frame)), agent="x")
    inspection = inspect_table(csv_file(extra, "with-ids.csv"), HOUSE_PRICES)
    assert inspection.ok
    assert inspection.ignored_columns == ("listing_id", "agent")
    table = read_validated([csv_file(extra, "with-ids.csv")], HOUSE_PRICES)
    assert "listing_id" not in table.frame.columns
    assert table.describe_ignored() == "file 'with-ids.csv': 'listing_id', 'agent'"


def test_categories_match_a_spec_written_in_the_data_case(good_frame):
    from mlops_assets.ml.spec import DatasetSpec

    data = HOUSE_PRICES.to_dict()
    for column in data["categorical"]:
        column["allowed"] = [value.title() for value in column["allowed"]]
    spec = DatasetSpec.from_dict(data)
    titled = good_frame.assign(furnishingstatus=good_frame["furnishingstatus"].str.title())
    inspection = inspect_table(csv_file(titled), spec)
    assert inspection.ok, [v.message for v in inspection.violations]
    assert set(inspection.frame["furnishingstatus"].cat.categories) == {
        "furnished",
        "semi-furnished",
        "unfurnished",
    }


def test_a_column_limit_replaces_the_dataset_null_limit(good_frame):
    from mlops_assets.ml.spec import DatasetSpec

    frame = good_frame.astype({"area": float, "bedrooms": float})
    frame.loc[:19, "area"] = None  # 20%: over the dataset's 5%, under area's own 30%
    frame.loc[:0, "bedrooms"] = None  # 1%: under 5%, over bedrooms' own 0%
    data = HOUSE_PRICES.to_dict()
    data["numeric"][0]["max_null_share"] = 0.3
    data["numeric"][1]["max_null_share"] = 0.0
    spec = DatasetSpec.from_dict(data)
    for require_target in (True, False):  # training data and incoming batches alike
        found = inspect_table(csv_file(frame), spec, require_target).results[SCHEMA]
        assert [(v.column, v.rule) for v in found] == [("bedrooms", "at most 0% missing values")]


def test_category_normalisation_of_data_and_spec_agree():
    from mlops_assets.ml.spec import normalise_label
    from mlops_assets.ml.tabular import normalise_category

    values = [" Semi-Furnished ", "YES", "semi\t  furnished", "Ärger\u00a0Zone", "no", None]
    normalised = normalise_category(pd.Series(values, dtype=object)).tolist()
    assert normalised[:-1] == [normalise_label(v) for v in values[:-1]]
    assert pd.isna(normalised[-1])


def test_each_distinct_value_is_transformed_once_and_spread_to_every_row():
    from mlops_assets.ml.tabular import each_distinct, normalise_category

    values = pd.Series([" Yes", "no", None, "NO ", float("nan"), " Yes"], index=[9, 8, 7, 6, 5, 4])
    seen: list[int] = []

    def counted(distinct: pd.Series) -> pd.Series:
        seen.append(len(distinct))
        return normalise_category(distinct)

    spread = each_distinct(values, counted)

    assert seen == [3]  # " Yes", "no", "NO "; missing values are not transformed
    assert spread.equals(normalise_category(values))
    assert spread.index.tolist() == [9, 8, 7, 6, 5, 4]


def test_kept_inspections_are_good_ones_taken_once_for_their_contract():
    from mlops_assets.ml.spec import DatasetSpec
    from mlops_assets.ml.tabular import KeptInspections, inspect_table

    good = inspect_table(csv_file(generate_house_prices(60, seed=1)), HOUSE_PRICES)
    bad = inspect_table(TableFile("x.csv", b""), HOUSE_PRICES)
    kept = KeptInspections(limit=2)
    key = KeptInspections.key("abc", HOUSE_PRICES)
    other_spec = DatasetSpec.from_dict({**HOUSE_PRICES.to_dict(), "name": "other"})
    assert key != KeptInspections.key("abc", other_spec)
    assert key != KeptInspections.key("abc", HOUSE_PRICES, require_target=False)
    assert key != KeptInspections.key("abd", HOUSE_PRICES)

    kept.keep(key, good)
    kept.keep("bad", bad)  # a file that breaks a rule is inspected again by whoever needs it
    assert kept.take("bad") is None
    assert kept.take(key) is good
    assert kept.take(key) is None  # taken once

    for name in ("a", "b", "c"):
        kept.keep(name, good)
    assert kept.take("a") is None  # the oldest went beyond the limit
    assert kept.take("b") is good
    assert kept.take("c") is good
