"""Why a run failed, said once: the root cause through Dagster's wrappers, the check that
stopped a step, and mlops-demo's exit codes."""

from __future__ import annotations

from dagster._utils.error import SerializableErrorInfo

from mlops_assets.demo import EXIT_CHECKS_FAILED, EXIT_OK, EXIT_RUN_FAILED, summary
from mlops_assets.lib.failures import CheckOutcome, RunOutcome, root_cause


def error(
    message: str, cls: str, cause: SerializableErrorInfo | None = None
) -> SerializableErrorInfo:
    return SerializableErrorInfo(message=message, stack=[], cls_name=cls, cause=cause)


def test_the_root_cause_is_the_end_of_the_chain_in_its_own_words():
    inner = error(
        "mlflow.exceptions.RestException: RESOURCE_DOES_NOT_EXIST: Model Version "
        "(name=cancer, version=99) not found\n",
        "RestException",
    )
    wrapped = error(
        "dagster._core.errors.DagsterExecutionStepExecutionError: Error occurred while "
        'executing op "promote_to_champion":\n',
        "DagsterExecutionStepExecutionError",
        cause=inner,
    )
    assert root_cause(wrapped) == (
        "RestException: RESOURCE_DOES_NOT_EXIST: Model Version (name=cancer, version=99) not found"
    )


WARN = CheckOutcome("drift_report", "drift_share_below_threshold", "WARN", False, "2026-12-01",
                    "4 drifted columns, share 33% (threshold 30%)")  # fmt: skip
ERROR = CheckOutcome("drift_report", "quality_not_degraded", "ERROR", False, "2026-12-01",
                     "batch rmse 2.5e+06, limit 975924")  # fmt: skip
BLOCKING = CheckOutcome("raw_data", "required_columns_present", "ERROR", True, "",
                        "file 'a.csv', column 'area': column is missing (rule: required column)")  # fmt: skip


def test_exit_codes_say_what_happened():
    clean = RunOutcome((), ())
    assert summary(True, clean, False, "job")[0] == EXIT_OK
    warned = RunOutcome((WARN,), ())
    code, lines = summary(True, warned, False, "job")
    assert code == EXIT_OK
    assert lines[-1] == "Done: job, 1 warnings above."
    assert summary(True, warned, True, "job")[0] == EXIT_CHECKS_FAILED
    code, lines = summary(True, RunOutcome((WARN, ERROR), ()), False, "job")
    assert code == EXIT_CHECKS_FAILED
    assert lines[1:3] == [f"  {WARN.line}", f"  {ERROR.line}"]
    assert lines[-1] == f"FAILED CHECKS: job ran, but {ERROR.line}"


def test_a_step_a_blocking_check_stopped_is_named_by_the_check():
    outcome = RunOutcome(
        (BLOCKING,), (("raw_data", "1 blocking asset check failed with ERROR severity"),)
    )
    code, lines = summary(False, outcome, False, "job")
    assert code == EXIT_RUN_FAILED
    assert lines[-1] == (
        "FAILED: job: raw_data: required_columns_present failed: file 'a.csv', column 'area': "
        "column is missing (rule: required column)"
    )


def test_each_failed_step_is_one_line_naming_only_its_own_checks():
    baseline = CheckOutcome("trained_model", "beats_naive_baseline", "ERROR", True, "",
                            "test rmse 9e5 is not below the naive 8e5")  # fmt: skip
    thresholds = CheckOutcome("trained_model", "meets_metric_thresholds", "ERROR", True, "",
                              "test r2 0.1 < 0.5")  # fmt: skip
    values = CheckOutcome("raw_data", "values_match_schema", "ERROR", True, "", "2 bad values")
    outcome = RunOutcome(
        (baseline, thresholds, BLOCKING, values),
        (
            ("trained_model_beats_naive_baseline", "1 blocking asset check failed"),
            ("trained_model_meets_metric_thresholds", "1 blocking asset check failed"),
            ("raw_data", "2 blocking asset checks failed"),
        ),
    )
    assert outcome.reasons() == [
        "trained_model_beats_naive_baseline: beats_naive_baseline failed: test rmse 9e5 is not "
        "below the naive 8e5",
        "trained_model_meets_metric_thresholds: meets_metric_thresholds failed: test r2 0.1 < 0.5",
        "raw_data: required_columns_present failed: file 'a.csv', column 'area': column is "
        "missing (rule: required column); values_match_schema failed: 2 bad values",
    ]
    assert summary(False, outcome, False, "job")[1][-1].endswith("(and 2 more failed steps above)")


def test_a_root_cause_never_carries_a_credential_in_a_url():
    inner = error(
        "mlflow.exceptions.MlflowException: API request to "
        "https://ana:s3cret@mlflow.example.com/api/2.0/mlflow/runs/get?token=abc failed",
        "MlflowException",
    )
    said = root_cause(error("Error occurred while executing op", "Wrapper", cause=inner))
    assert "s3cret" not in said
    assert "abc" not in said
    assert "https://***@mlflow.example.com/api/2.0/mlflow/runs/get?token=***" in said
