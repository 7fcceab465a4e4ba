"""Late labels of served traffic: read against the dataset contract, joined by request and row."""

from __future__ import annotations

import io

import pandas as pd
import pytest

from mlops_assets.ml.spec import HOUSE_PRICES, CategoricalColumn, DatasetSpec, NumericColumn
from mlops_assets.ml.tabular import DatasetRejected, TableFile
from mlops_assets.ml.traffic import join_labels, read_labels

CHURN = DatasetSpec(
    name="churn",
    target=CategoricalColumn("churned", ("no", "yes")),
    numeric=(NumericColumn("tenure", min=0),),
    categorical=(),
)


def rejected(*files: TableFile, spec: DatasetSpec = HOUSE_PRICES) -> str:
    with pytest.raises(DatasetRejected) as caught:
        read_labels(list(files), spec)
    return str(caught.value)


def test_labels_of_one_row_requests_need_no_row_column_and_join_by_request_and_row() -> None:
    labels = read_labels(
        [
            TableFile("a.csv", b"request_id,price\nr1,100000\nr2,200000\n"),
            TableFile("b.csv", b"request_id,row,price\nr3,1,500000\n"),
        ],
        HOUSE_PRICES,
    )
    assert labels.to_dict("list") == {
        "request_id": ["r1", "r2", "r3"],
        "row": [0, 0, 1],
        "price": [100000.0, 200000.0, 500000.0],
    }
    served = pd.DataFrame(
        {"request_id": ["r1", "r3", "r3", "r9"], "row": [0, 0, 1, 0], "prediction": [1.0] * 4}
    )
    joined, unmatched = join_labels(served, labels, HOUSE_PRICES)
    assert joined["price"].tolist()[::2] == [100000.0, 500000.0]
    assert joined["price"].isna().tolist() == [False, True, False, True]
    assert unmatched == 1  # r2 names no served row


def test_a_classifier_s_labels_are_its_classes_from_parquet_too() -> None:
    buffer = io.BytesIO()
    pd.DataFrame({"request_id": [7, 8], "churned": [" Yes", "no"]}).to_parquet(buffer)
    labels = read_labels([TableFile("l.parquet", buffer.getvalue())], CHURN)
    assert labels["request_id"].tolist() == ["7", "8"]
    assert labels["churned"].astype(str).tolist() == ["yes", "no"]
    message = rejected(TableFile("l.csv", b"request_id,churned\nr1,maybe\n"), spec=CHURN)
    assert "file 'l.csv', column 'churned', row 1: 1 unseen category (e.g. 'maybe')" in message
    assert "(rule: values must be one of {no, yes})" in message


def test_labels_without_their_key_or_target_are_named() -> None:
    assert (
        "file 'l.csv', column 'request_id': column is missing; the file has columns ['price']"
        in rejected(TableFile("l.csv", b"price\n3\n"))
    )
    assert "column 'price': column is missing; the file has columns ['request_id', 'row']" in (
        rejected(TableFile("l.csv", b"request_id,row\nr1,0\n"))
    )
    assert "column 'request_id', row 2: 1 row without a request id" in rejected(
        TableFile("l.csv", b"request_id,price\nr1,5\n ,6\n")
    )
    assert "column 'row', row 1: 1 value out of range (e.g. '-1')" in rejected(
        TableFile("l.csv", b"request_id,row,price\nr1,-1,5\n")
    )
    assert "only a header (2 columns) and no data rows" in rejected(
        TableFile("l.csv", b"request_id,price\n")
    )
    across = rejected(
        TableFile("a.csv", b"request_id,price\nr1,5\n"),
        TableFile("b.csv", b"request_id,price\nr2,5\nr1,6\n"),
    )
    assert "file 'b.csv', column 'request_id, row', row 2: 1 row labels a request row" in across
