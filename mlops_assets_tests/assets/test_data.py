"""raw_data and versioned_dataset through real Dagster runs, including every kind of bad input."""

import contextlib
import json
from typing import Any

import pandas as pd
import pytest

from mlops_assets.ml.sample_data import generate_house_prices, to_csv_bytes
from mlops_assets_tests.conftest import (
    LIFECYCLE_ASSETS,
    check_evaluations,
    job_name,
    key,
    materialized,
    step,
    step_failure,
)
from mlops_assets_tests.receivers import QuietHandler, loopback_http


def good_rows(n: int = 300, seed: int = 8) -> pd.DataFrame:
    return generate_house_prices(n, seed=seed)


def _non_numeric() -> bytes:
    frame = good_rows().astype({"area": object})
    frame.loc[[3, 16, 89], "area"] = "big"
    return to_csv_bytes(frame)


def _unseen_category() -> bytes:
    frame = good_rows().astype({"furnishingstatus": object})
    frame.loc[[7, 8], "furnishingstatus"] = "luxury"
    return to_csv_bytes(frame)


def _non_utf8() -> bytes:
    lines = to_csv_bytes(good_rows()).split(b"\n")
    lines[12] = lines[12].replace(b"furnished", b"f\xfcrnished", 1)
    return b"\n".join(lines)


def _thousands_separator() -> bytes:
    """Areas of three rows exported as 1,234 without quotes."""
    frame = good_rows()
    lines = to_csv_bytes(frame).decode().splitlines()
    for row in (5, 40, 41):
        fields = lines[row + 1].split(",")
        fields[1] = f"{int(float(fields[1])) // 1000 + 1},234"
        lines[row + 1] = ",".join(fields)
    return ("\n".join(lines) + "\n").encode()


# name -> (file content, the check that must fail, text its message must contain)
BAD_INPUTS = {
    "empty": (lambda: b"", "has_data_rows", ["file 'input.csv'", "rule: file must not be empty"]),
    "header_only": (
        lambda: to_csv_bytes(good_rows().head(0)),
        "has_data_rows",
        ["file 'input.csv'", "no data rows", "rule: file must have data rows"],
    ),
    "missing_target": (
        lambda: to_csv_bytes(good_rows().drop(columns=["price"])),
        "required_columns_present",
        ["file 'input.csv', column 'price'", "rule: required column"],
    ),
    "non_numeric": (
        _non_numeric,
        "values_match_schema",
        ["file 'input.csv', column 'area', rows 4, 17, 90", "'big'", "rule: numeric column"],
    ),
    "unseen_category": (
        _unseen_category,
        "values_match_schema",
        ["column 'furnishingstatus', rows 8, 9", "'luxury'", "rule: values must be one of"],
    ),
    "thousands_separator": (
        _thousands_separator,
        "parses_as_table",
        [
            "file 'input.csv', column 'area', rows 6, 41, 42",
            "first: line 7 has 14",
            "unquoted thousands separator",
            "rule: must be well-formed CSV",
        ],
    ),
    "non_utf8": (
        _non_utf8,
        "parses_as_table",
        [
            "file 'input.csv', column 'furnishingstatus', row 12",
            "byte 0xfc",
            "rule: text must be UTF-8 encoded",
        ],
    ),
}


def keyed_spec(tmp_path, key="listing_id"):
    """The house-price spec with a record key."""
    from mlops_assets.ml.spec import HOUSE_PRICES

    path = tmp_path / "keyed.json"
    path.write_text(json.dumps({**HOUSE_PRICES.to_dict(), "key": key}))
    return path


def test_a_source_repeating_half_its_keys_is_rejected_and_changes_nothing(
    trained, monkeypatch, tmp_path
):
    rows = good_rows().assign(listing_id=[f"L{i}" for i in range(300)])
    path = tmp_path / "input.csv"
    path.write_bytes(to_csv_bytes(pd.concat([rows, rows], ignore_index=True)))
    monkeypatch.setenv("MLOPS_DATASET_SPEC", str(keyed_spec(tmp_path)))
    monkeypatch.setenv("MLOPS_SOURCE_URI", str(path))
    before = trained.state()

    result = trained.run()

    assert not result.success
    evaluation = check_evaluations(result)[("raw_data", "duplicate_share_within_limit")]
    assert not evaluation.passed
    assert evaluation.severity.value == "ERROR"
    assert "file 'input.csv', column 'listing_id', rows 1, 2" in evaluation.description
    assert "50.0% of rows (300 of 600) repeat the key (listing_id) of a later row" in (
        evaluation.description
    )
    assert trained.state() == before


def test_a_keyed_source_keeps_the_last_row_of_each_key(lifecycle, monkeypatch, tmp_path):
    rows = good_rows().assign(listing_id=[f"L{i}" for i in range(300)])
    corrected = rows.head(20).assign(price=rows.head(20)["price"] + 1000)  # written again, later
    path = tmp_path / "input.csv"
    path.write_bytes(to_csv_bytes(pd.concat([rows, corrected], ignore_index=True)))
    monkeypatch.setenv("MLOPS_DATASET_SPEC", str(keyed_spec(tmp_path)))
    monkeypatch.setenv("MLOPS_SOURCE_URI", str(path))

    result = lifecycle.run(assets=["raw_data", "versioned_dataset"])

    assert result.success
    meta = materialized(result)["versioned_dataset"]
    assert meta["rows"].value == 300
    assert meta["key_duplicates_dropped"].value == 20
    from mlops_assets.ml.dataset_store import DatasetStore
    from mlops_assets.resources.object_store import ObjectStoreResource

    store = DatasetStore(ObjectStoreResource(root=str(lifecycle.home / "store")), "house_prices")
    kept = pd.concat(store.load_splits(store.ref("latest")).values()).set_index("listing_id")
    assert (kept.loc[corrected["listing_id"], "price"].to_numpy() == corrected["price"]).all()


def test_equal_rows_without_a_key_are_observations_kept_with_a_warning(
    lifecycle, monkeypatch, tmp_path
):
    """Rows that repeat another in every declared column are two observations unless a key
    says they are one record: none is dropped, and above the share the check only warns."""
    path = tmp_path / "input.csv"
    path.write_bytes(to_csv_bytes(pd.concat([good_rows(), good_rows()], ignore_index=True)))
    monkeypatch.setenv("MLOPS_SOURCE_URI", str(path))

    result = lifecycle.run(assets=["raw_data", "versioned_dataset"])

    assert result.success
    evaluation = check_evaluations(result)[("raw_data", "duplicate_share_within_limit")]
    assert not evaluation.passed
    assert evaluation.severity.value == "WARN"
    assert "file 'input.csv', rows 301, 302" in evaluation.description
    assert "column 'all columns'" not in evaluation.description
    assert "declare the spec's key if rows are records" in evaluation.description
    meta = materialized(result)["versioned_dataset"]
    assert meta["rows"].value == 600
    assert meta["key_duplicates_dropped"].value == 0


def test_lifecycle_materialises_every_asset_with_every_check_passing(trained):
    # The shared baseline ran the whole job; run it again here to read its events.
    result = trained.run()
    assert result.success
    evaluations = check_evaluations(result)
    failed = {key: e.description for key, e in evaluations.items() if not e.passed}
    assert failed == {}
    assert len(evaluations) == 19
    assert set(materialized(result)) == LIFECYCLE_ASSETS


def test_raw_data_is_content_addressed_and_stored_once(lifecycle):
    first = lifecycle.run(assets=["raw_data"])
    second = lifecycle.run(assets=["raw_data"])
    meta1, meta2 = materialized(first)["raw_data"], materialized(second)["raw_data"]
    assert meta1["digest"].value == meta2["digest"].value
    assert meta1["already_stored"].value is False
    assert meta2["already_stored"].value is True
    snapshots = list((lifecycle.home / "store" / "raw").iterdir())
    assert len(snapshots) == 1
    manifest = json.loads((snapshots[0] / "manifest.json").read_text())
    assert manifest["files"][0]["name"].endswith(".csv")


@pytest.mark.parametrize("source_kind", ["file", "directory"])
def test_raw_data_reads_a_file_or_a_directory(lifecycle, monkeypatch, tmp_path, source_kind):
    folder = tmp_path / "landing"
    folder.mkdir()
    (folder / "part-1.csv").write_bytes(to_csv_bytes(good_rows(200, 1)))
    (folder / "part-2.csv").write_bytes(to_csv_bytes(good_rows(200, 2)))
    source = folder if source_kind == "directory" else folder / "part-1.csv"
    monkeypatch.setenv("MLOPS_SOURCE_URI", str(source))
    result = lifecycle.run(assets=["raw_data", "versioned_dataset"])
    assert result.success
    rows = materialized(result)["versioned_dataset"]["rows"].value
    assert rows == (400 if source_kind == "directory" else 200)


def test_versioned_dataset_takes_the_contracts_inspection_instead_of_parsing_again(
    lifecycle, monkeypatch
):
    from mlops_assets.components.lifecycle.data import assets

    # Data of this test alone: another test's run in this process may have left its own.
    monkeypatch.setenv("MLOPS_SOURCE_URI", "sample://house-prices?rows=640&seed=2718")
    parsed: list[str] = []
    inspect_table = assets.inspect_table

    def counted(file, spec, *args):
        parsed.append(file.name)
        return inspect_table(file, spec, *args)

    monkeypatch.setattr(assets, "inspect_table", counted)
    together = lifecycle.run(assets=["raw_data", "versioned_dataset"])
    assert together.success
    assert check_evaluations(together)[("raw_data", "values_match_schema")].passed
    assert len(parsed) == 1  # the contract parsed the file; versioned_dataset took it

    alone = lifecycle.run(assets=["versioned_dataset"])  # no contract ran in this process
    assert alone.success
    assert len(parsed) == 2
    digest = materialized(together)["versioned_dataset"]["digest"].value
    assert materialized(alone)["versioned_dataset"]["digest"].value == digest


def test_raw_data_reads_over_http(lifecycle, monkeypatch):
    with _serve([(200, to_csv_bytes(good_rows(250, 3)))]) as (port, served):
        monkeypatch.setenv("MLOPS_SOURCE_URI", f"http://127.0.0.1:{port}/houses.csv")
        result = lifecycle.run(assets=["raw_data", "versioned_dataset"])
    assert result.success
    assert served == [200]
    assert materialized(result)["versioned_dataset"]["rows"].value == 250


def test_unreachable_source_fails_raw_data_naming_the_source(lifecycle, monkeypatch, tmp_path):
    monkeypatch.setenv("MLOPS_SOURCE_URI", str(tmp_path / "missing.csv"))
    result = lifecycle.run(assets=["raw_data"])
    assert not result.success
    assert "missing.csv does not exist" in step_failure(result, "raw_data")


def test_same_content_makes_no_new_version_and_new_content_moves_latest(trained, monkeypatch):
    again = trained.run(assets=["raw_data", "versioned_dataset"])
    meta = materialized(again)["versioned_dataset"]
    assert meta["new_version"].value is False
    assert meta["tag"].value == "data-v1.0.0"

    monkeypatch.setenv("MLOPS_SOURCE_URI", "sample://house-prices?rows=1800&seed=7")
    new = trained.run(assets=["raw_data", "versioned_dataset"])
    meta = materialized(new)["versioned_dataset"]
    assert meta["new_version"].value is True
    assert meta["tag"].value == "data-v1.1.0"
    state = trained.state()
    assert state["latest"]["digest"] == meta["digest"].value
    assert state["previous"] is not None
    assert state["tags"] == ["data-v1.0.0.json", "data-v1.1.0.json"]


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_fails_the_right_check_and_loses_nothing(trained, monkeypatch, tmp_path, case):
    content, check, expected = BAD_INPUTS[case]
    path = tmp_path / "input.csv"
    path.write_bytes(content())
    monkeypatch.setenv("MLOPS_SOURCE_URI", str(path))
    before = trained.state()

    result = trained.run()

    assert not result.success
    evaluations = check_evaluations(result)
    failed = {name for (asset, name), e in evaluations.items() if not e.passed}
    assert failed == {check}
    message = evaluations[("raw_data", check)].description
    for text in expected:
        assert text in message
    assert "versioned_dataset" not in materialized(result)
    assert trained.state() == before


def test_a_rejected_source_stores_no_snapshot_and_the_last_accepted_one_stays_the_value(
    trained, monkeypatch, tmp_path
):
    path = tmp_path / "input.csv"
    path.write_bytes(_non_numeric())
    monkeypatch.setenv("MLOPS_SOURCE_URI", str(path))
    before = trained.state()
    snapshots = sorted((trained.home / "store" / "raw").rglob("*"))

    rejected = trained.run(assets=["raw_data"])

    assert not rejected.success
    evaluation = check_evaluations(rejected)[("raw_data", "values_match_schema")]
    assert "file 'input.csv', column 'area', rows 4, 17, 90" in evaluation.description
    assert "raw_data" not in materialized(rejected)
    assert sorted((trained.home / "store" / "raw").rglob("*")) == snapshots
    logged = [r.user_message for r in trained.instance.all_logs(rejected.run_id)]
    assert any("nothing was stored and no version will be made from it" in m for m in logged)
    # versioned_dataset on its own reads raw_data's value: the snapshot last accepted.
    again = trained.run(assets=["versioned_dataset"])
    assert again.success
    assert materialized(again)["versioned_dataset"]["new_version"].value is False
    assert trained.state() == before


def test_corrupted_version_fails_files_match_manifest(trained):
    test_files = list((trained.home / "store" / "datasets").rglob("test.parquet"))
    assert len(test_files) == 1
    test_files[0].write_bytes(b"tampered")
    result = trained.run(assets=["versioned_dataset"])
    evaluation = check_evaluations(result)[("versioned_dataset", "files_match_manifest")]
    assert not evaluation.passed
    assert "test: " in evaluation.description


def test_tiny_dataset_fails_split_sizes_with_error_and_publishes_nothing(lifecycle, monkeypatch):
    monkeypatch.setenv("MLOPS_SOURCE_URI", "sample://house-prices?rows=20&seed=1")
    result = lifecycle.run(assets=["raw_data", "versioned_dataset", "trained_model"])
    evaluation = check_evaluations(result)[("versioned_dataset", "split_sizes_as_configured")]
    assert not evaluation.passed
    assert evaluation.severity.value == "ERROR"
    assert evaluation.description.startswith(
        "source sample://house-prices?rows=20&seed=1 (file 'house-prices-20-seed1.csv') has too "
        "few rows to split: "
    )
    assert "fewer than the minimum of 5 rows per split" in evaluation.description
    assert "% expected, within " in evaluation.description  # plain words, not "70% ± 79.4%"
    assert "versioned_dataset" not in materialized(result)
    assert "trained_model" not in materialized(result)
    state = lifecycle.state()
    assert (state["latest"], state["previous"], state["tags"]) == (None, None, [])
    assert not list((lifecycle.home / "store" / "datasets").rglob("manifest.json"))


def test_three_valid_rows_move_no_tag_or_ref_and_keep_the_trained_state(
    trained, monkeypatch, tmp_path
):
    path = tmp_path / "three.csv"
    path.write_bytes(to_csv_bytes(good_rows(3, seed=5)))
    monkeypatch.setenv("MLOPS_SOURCE_URI", str(path))
    before = trained.state()
    manifests = sorted((trained.home / "store" / "datasets").rglob("manifest.json"))

    result = trained.run()

    assert not result.success
    evaluations = check_evaluations(result)
    failed = {name for (asset, name), e in evaluations.items() if not e.passed}
    assert failed == {"split_sizes_as_configured"}
    assert "versioned_dataset" not in materialized(result)
    assert trained.state() == before
    assert before["latest"] is not None
    assert before["tags"] == ["data-v1.0.0.json"]
    assert sorted((trained.home / "store" / "datasets").rglob("manifest.json")) == manifests
    # The asset's value is still the published version, so a later run trains on that.
    retrain = trained.run(assets=["trained_model"])
    assert materialized(retrain)["trained_model"]["dataset_tag"].value == "data-v1.0.0"


def test_extra_source_columns_are_reported_not_dropped_silently(lifecycle, monkeypatch, tmp_path):
    path = tmp_path / "with-ids.csv"
    path.write_bytes(to_csv_bytes(good_rows().assign(listing_id=range(300))))
    monkeypatch.setenv("MLOPS_SOURCE_URI", str(path))
    result = lifecycle.run(assets=["raw_data", "versioned_dataset"])
    assert result.success
    meta = materialized(result)["versioned_dataset"]
    assert meta["ignored_columns"].value == "file 'with-ids.csv': 'listing_id'"
    required = check_evaluations(result)[("raw_data", "required_columns_present")]
    assert required.passed
    assert "columns not in the spec are ignored: file 'with-ids.csv': 'listing_id'" in (
        required.description
    )
    logged = [r.user_message for r in lifecycle.instance.all_logs(result.run_id)]
    assert any("are left out: file 'with-ids.csv': 'listing_id'" in m for m in logged)


def test_a_spec_in_the_data_case_accepts_its_data(lifecycle, monkeypatch, tmp_path):
    from mlops_assets.ml.spec import HOUSE_PRICES

    data = HOUSE_PRICES.to_dict()
    for column in data["categorical"]:
        column["allowed"] = [value.title() for value in column["allowed"]]
    spec = tmp_path / "titled.json"
    spec.write_text(json.dumps(data))
    rows = good_rows()
    rows["furnishingstatus"] = rows["furnishingstatus"].str.title()
    path = tmp_path / "titled.csv"
    path.write_bytes(to_csv_bytes(rows))
    monkeypatch.setenv("MLOPS_DATASET_SPEC", str(spec))
    monkeypatch.setenv("MLOPS_SOURCE_URI", str(path))
    result = lifecycle.run(assets=["raw_data", "versioned_dataset"])
    assert result.success, check_evaluations(result)
    assert materialized(result)["versioned_dataset"]["tag"].value == "data-v1.0.0"


@contextlib.contextmanager
def _serve(responses):
    """A loopback HTTP server answering each GET with the next (status, body) of
    ``responses`` (the last one again once they run out); yields its port and the statuses
    it answered."""
    served = []

    class Handler(QuietHandler):
        def do_GET(self):
            status, body = responses[min(len(served), len(responses) - 1)]
            served.append(status)
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with loopback_http(Handler) as port:
        yield port, served


def retries(result, name):
    return sum(
        1
        for e in result.all_events
        if e.event_type_value == "STEP_UP_FOR_RETRY" and e.step_key == step(name)
    )


def test_transient_source_fault_is_retried_until_it_succeeds(lifecycle, monkeypatch):
    body = to_csv_bytes(good_rows(120, 4))
    with _serve([(503, b"busy"), (503, b"busy"), (200, body)]) as (port, served):
        monkeypatch.setenv("MLOPS_SOURCE_URI", f"http://127.0.0.1:{port}/h.csv")
        result = lifecycle.run(assets=["raw_data"])
    assert result.success
    assert served == [503, 503, 200]
    assert retries(result, "raw_data") == 2


def test_permanent_source_fault_fails_at_once(lifecycle, monkeypatch):
    with _serve([(404, b"no such file")]) as (port, served):
        monkeypatch.setenv("MLOPS_SOURCE_URI", f"http://127.0.0.1:{port}/h.csv")
        result = lifecycle.run(assets=["raw_data"])
    assert not result.success
    assert served == [404]
    assert retries(result, "raw_data") == 0
    assert "answered HTTP 404" in step_failure(result, "raw_data")


def test_a_full_disk_fails_raw_data_at_once_and_leaves_no_half_snapshot(
    lifecycle, monkeypatch, tmp_path, small_disk
):
    """Found by a drill: ENOSPC was retried with backoff as if transient, and a failed run's
    half-written snapshot stayed, keeping the disk full."""
    mount = small_disk.path
    path = tmp_path / "big.csv"
    path.write_bytes(to_csv_bytes(generate_house_prices(40_000, seed=8)))  # about 2.5 MB
    assert path.stat().st_size > 2 * 1024 * 1024
    monkeypatch.setenv("MLOPS_SOURCE_URI", str(path))
    monkeypatch.setenv("MLOPS_OBJECT_STORE_ROOT", str(mount / "store"))

    full = lifecycle.run(assets=["raw_data"])

    assert not full.success
    assert retries(full, "raw_data") == 0
    message = step_failure(full, "raw_data")
    assert "No space left on device" in message
    assert "a retry cannot cure this" in message
    assert [p for p in mount.rglob("*") if p.is_file()] == []
    small_disk.resize("64m")  # an operator frees space
    again = lifecycle.run(assets=["raw_data", "versioned_dataset"])
    assert again.success


def _run_subset(lifecycle, assets: set[str], checks: set[tuple[str, str]]) -> Any:
    """raw_data, versioned_dataset or their checks alone, as the UI runs "Materialize without
    checks" or "Execute checks"."""
    from dagster import AssetCheckKey

    from mlops_assets.definitions import build_definitions, build_resources

    job = build_definitions(build_resources()).resolve_job_def(job_name("refresh_model"))
    subset = job.get_subset(
        asset_selection={key(a) for a in assets},
        asset_check_selection={AssetCheckKey(key(a), c) for a, c in checks},
    )
    return subset.execute_in_process(instance=lifecycle.instance, raise_on_error=False)


def test_a_subset_run_never_stores_a_source_that_breaks_the_contract(
    trained, monkeypatch, tmp_path
):
    """Found by a review: with the checks left out (the UI's "Materialize without checks"),
    or only some selected, the contract still judged the source, but nothing rejected it."""
    before = trained.state()
    bad = tmp_path / "bad.csv"
    bad.write_bytes(to_csv_bytes(generate_house_prices(300, seed=3).drop(columns=["area"])))
    monkeypatch.setenv("MLOPS_SOURCE_URI", str(bad))
    for checks in (set(), {("raw_data", "has_data_rows")}):
        result = _run_subset(trained, {"raw_data"}, checks)
        assert not result.success
        [failure] = result.get_step_failure_events()
        assert "required_columns_present failed (not selected in this run)" in str(
            failure.step_failure_data.user_failure_data.description
        )
        assert "column 'area': column is missing" in str(
            failure.step_failure_data.user_failure_data.description
        )
        assert not result.get_asset_materialization_events()
    assert trained.state() == before


def test_checks_run_alone_report_and_store_nothing(trained, monkeypatch, tmp_path):
    good = tmp_path / "good.csv"
    good.write_bytes(to_csv_bytes(generate_house_prices(300, seed=4)))
    monkeypatch.setenv("MLOPS_SOURCE_URI", str(good))
    result = _run_subset(trained, set(), {("raw_data", "has_data_rows")})
    assert result.success
    [evaluation] = result.get_asset_check_evaluations()
    assert (evaluation.check_name, evaluation.passed) == ("has_data_rows", True)
    assert not result.get_asset_materialization_events()
    stored = list((trained.home / "store" / "raw").glob("*/manifest.json"))
    digests = {p.parent.name for p in stored}
    assert not any(
        (trained.home / "store" / "raw" / d / "files" / "good.csv").exists() for d in digests
    )
