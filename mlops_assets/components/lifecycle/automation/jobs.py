"""Jobs: the whole lifecycle, and the two registry actions a person takes by hand."""

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dagster import (
    AssetMaterialization,
    AssetSelection,
    Config,
    Failure,
    JobDefinition,
    MetadataValue,
    OpExecutionContext,
    define_asset_job,
    job,
    op,
)
from pydantic import Field

if TYPE_CHECKING:  # what define_asset_job returns; dagster exports it for typing only here
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )

from mlops_assets.components.lifecycle.scope import ModelScope
from mlops_assets.components.lifecycle.settings import PolicySettings
from mlops_assets.lib.champion import DATASET_DIGEST_TAG, compare_on_test
from mlops_assets.lib.console import JOB_CONFIG
from mlops_assets.lib.exclusive import exclusive, model_lease
from mlops_assets.lib.metadata import md_table
from mlops_assets.lib.pod_resources import standard_tags, training_tags
from mlops_assets.ml.promotion import Comparison
from mlops_assets.records import champion_data_version
from mlops_assets.resources.dataset_source import DatasetSourceResource
from mlops_assets.resources.mlflow_registry import (
    CHALLENGER,
    AliasMove,
    MlflowResource,
)
from mlops_assets.resources.object_store import ObjectStoreResource

# How Dagster records a materialisation's data version (DataVersion does it for assets).
DATA_VERSION_TAG = "dagster/data_version"
# How Dagster tags a run a sensor requested (the drift policy's rollbacks): who rolled back.
SENSOR_NAME_TAG = "dagster/sensor_name"

# served_image needs an image builder and takes minutes, model_deployment a cluster: they have
# their own job (and, through automation, follow champion changes), so the lifecycle runs on
# any machine.
SERVED_IMAGE = ("served_image", "model_deployment")
# The served model's log, one day at a time, and its drift: only where a served model writes one.
TRAFFIC = ("served_traffic", "traffic_drift_report")
# The unpartitioned chain: what new labelled data, the retrain schedule and the drift policy
# run. raw_data is keyed by content, so unchanged data is not stored twice.
MODEL_CHAIN = ("raw_data", "versioned_dataset", "trained_model", "registered_model")


@dataclass(frozen=True)
class AssetJobs:
    """The asset jobs, tagged with the pod sizes read when the definitions are built."""

    mlops_lifecycle: "UnresolvedAssetJobDefinition"
    refresh_model: "UnresolvedAssetJobDefinition"
    score_batch: "UnresolvedAssetJobDefinition"
    serve_champion: "UnresolvedAssetJobDefinition"
    collect_traffic: "UnresolvedAssetJobDefinition"

    approve_challenger: JobDefinition
    rollback_champion: JobDefinition

    def all(self) -> list["UnresolvedAssetJobDefinition | JobDefinition"]:
        return [
            self.mlops_lifecycle,
            self.refresh_model,
            self.score_batch,
            self.serve_champion,
            self.collect_traffic,
            self.approve_challenger,
            self.rollback_champion,
        ]


def build_jobs(model: ModelScope) -> AssetJobs:
    """``model``'s jobs, named by it (house_prices_refresh_model), selecting its assets."""

    def assets(*names: str) -> AssetSelection:
        return AssetSelection.assets(*model.keys(*names))

    return AssetJobs(
        mlops_lifecycle=define_asset_job(
            model.job_name("mlops_lifecycle"),
            selection=AssetSelection.groups(model.name) - assets(*SERVED_IMAGE) - assets(*TRAFFIC),
            tags=model.tags(training_tags(model.pods)),
            description="Every asset and check but served_image, model_deployment, "
            "served_traffic and traffic_drift_report: snapshot, version, train, register, score the day's batch and "
            "report its drift.",
        ),
        refresh_model=define_asset_job(
            model.job_name("refresh_model"),
            selection=assets(*MODEL_CHAIN),
            tags=model.tags(training_tags(model.pods)),
            description="Snapshot the labelled data, version it, train, register and gate the "
            "champion (raw_data, versioned_dataset, trained_model, registered_model and their "
            "checks).",
        ),
        score_batch=define_asset_job(
            model.job_name("score_batch"),
            selection=assets("predictions", "drift_report"),
            tags=model.tags(standard_tags(model.pods)),
            description="Score one day's incoming batch with the champion and report its drift "
            "(predictions, drift_report and their checks).",
        ),
        serve_champion=define_asset_job(
            model.job_name("serve_champion"),
            selection=assets(*SERVED_IMAGE),
            tags=model.tags(standard_tags(model.pods)),
            description="Package the champion as an OCI image, push it, smoke-test it, and roll "
            "it out to Kubernetes when a cluster is configured (served_image, model_deployment, "
            "their checks).",
        ),
        collect_traffic=define_asset_job(
            model.job_name("collect_traffic"),
            selection=assets(*TRAFFIC),
            tags=model.tags(standard_tags(model.pods)),
            description="Collect one day of the served model's traffic log (and the labels "
            "come for it) into a table, and report its drift and quality against the training "
            "data (served_traffic, traffic_drift_report and their checks).",
        ),
        approve_challenger=_approve_challenger(model),
        rollback_champion=_rollback_champion(model),
    )


def _record(
    context: OpExecutionContext,
    move: AliasMove,
    model: ModelScope,
    extra: dict[str, Any] | None = None,
) -> None:
    """The alias move as a materialisation of registered_model, with the champion's history
    event as MLflow keeps it."""
    event = move.event.as_dict() if move.event is not None else None
    context.log_event(
        AssetMaterialization(
            asset_key=model.key("registered_model"),
            # The champion's data version: the served image follows it (champion_image).
            tags={DATA_VERSION_TAG: champion_data_version(move.to_version)},
            description=f"{move.alias}: v{move.from_version} -> v{move.to_version} ({move.reason})",
            metadata={
                "model_name": model.registered_model,
                "champion_version": move.to_version,
                "alias_moves": md_table(
                    ["alias", "from", "to", "reason"],
                    [(move.alias, move.from_version or "-", move.to_version, move.reason)],
                ),
                **({"champion_event": MetadataValue.json(event)} if event else {}),
                **(extra or {}),
            },
        )
    )


def _log_notes(context: OpExecutionContext, notes: list[str]) -> None:
    for note in notes:
        context.log.warning(note)


class ApprovalConfig(Config):
    version: str = Field(default="", description="version to promote; empty means the challenger")
    approved_by: str = Field(default="", description="who approved, for the record")
    override_worse: bool = Field(
        default=False,
        description="approve although the version scores worse than the champion on the same "
        "test split (or cannot be compared with it); needs a reason",
    )
    reason: str = Field(default="", description="why, for the record; needed with override_worse")


def promote_to_champion(
    context: OpExecutionContext,
    config: ApprovalConfig,
    mlflow: MlflowResource,
    object_store: ObjectStoreResource,
    dataset_source: DatasetSourceResource,
    policy: PolicySettings,
    scope: ModelScope,
) -> None:
    """Point champion at the challenger (or the version given) when it scores no worse than
    the champion on the same test split, as registered_model compares them; a worse one only
    with override_worse and a reason, which the history, the version and the materialisation
    record."""
    reason = config.reason.strip()
    if config.override_worse and not reason:
        raise Failure(
            allow_retries=False,
            description="override_worse needs a reason: say why a version that scores worse "
            "than the champion should serve",
        )
    run_id = context.run.run_id
    who = config.approved_by.strip() or "unnamed approver"
    # The model's lease, as registered_model holds it: alias moves never interleave.
    lease_name = model_lease(mlflow.model_name)
    with exclusive(context, object_store, lease_name, on_dead_run=mlflow.fail_runs_of) as lease:
        lease.ensure_held()
        _, champion, notes = mlflow.settle_champion(run_id)
        _log_notes(context, notes)
        version = config.version.strip() or mlflow.alias_version(CHALLENGER)
        if not version:
            raise Failure(
                allow_retries=False,
                description=f"model '{mlflow.model_name}' has no challenger to approve",
            )
        if not mlflow.version_exists(version):
            raise Failure(
                allow_retries=False,
                description=f"model '{mlflow.model_name}' has no version '{version}' to approve",
            )
        if version == champion:
            context.log.info(f"v{version} is champion already: nothing to approve")
            return
        comparison = None
        if champion is not None:
            spec = dataset_source.spec
            metric = policy.metric_for(spec.task)
            try:
                comparison = compare_on_test(mlflow, spec, object_store, metric, version, champion)
            except Exception as exc:  # its dataset version is gone, the features differ, ...
                if not config.override_worse:
                    raise Failure(
                        allow_retries=False,
                        description=f"v{version} cannot be compared with champion "
                        f"v{champion} on the same test split ({type(exc).__name__}: "
                        f"{getattr(exc, 'description', None) or exc}); set override_worse: "
                        "true and a reason to approve it without a comparison",
                    ) from exc
                context.log.warning(f"approving without a comparison: {exc}")
                comparison = None
            if comparison is None and not config.override_worse:
                raise Failure(
                    allow_retries=False,
                    description=f"v{version} names no dataset version (tag "
                    f"{DATASET_DIGEST_TAG}): it cannot be compared with champion v{champion} on "
                    "the same test split; set override_worse: true and a reason to approve it "
                    "without a comparison",
                )
            if comparison is not None and comparison.worse and not config.override_worse:
                raise Failure(
                    allow_retries=False,
                    description=f"{comparison.describe()}; set override_worse: true and a "
                    "reason to approve it anyway",
                    metadata=_comparison_metadata(comparison),
                )
        overridden = champion is not None and (comparison is None or comparison.worse)
        why = f"approved by {who}"
        if overridden:
            why += " over a worse score" if comparison is not None else " without a comparison"
            why += " (override_worse)"
        if reason:
            why += f": {reason}"
        lease.ensure_held()
        move = mlflow.change_champion(
            version,
            "approval",
            why,
            actor=who,
            run_id=run_id,
            comparison=comparison,
            override=overridden,
        )
        if move.event is not None:
            approval = {"mlops.approved_by": who, "mlops.approval": move.event.to_json()}
            if overridden:
                approval["mlops.approval_override"] = reason[:5000]
            mlflow.set_version_tags(version, approval)
    extra: dict[str, Any] = {"approved_by": who, "override_worse": overridden}
    if comparison is not None:
        extra.update(_comparison_metadata(comparison))
    _record(context, move, scope, extra)


def _comparison_metadata(comparison: Comparison) -> dict[str, Any]:
    metric = comparison.metric
    return {
        "comparison": comparison.describe(),
        f"challenger_test_{metric}": MetadataValue.float(comparison.challenger_score),
        f"champion_test_{metric}": MetadataValue.float(comparison.champion_score),
        "test_split_of": comparison.dataset,
    }


def _approve_challenger(model: ModelScope) -> JobDefinition:
    promote = op(name=model.step("promote_to_champion"))(model.bind(promote_to_champion))

    @job(
        name=model.job_name("approve_challenger"),
        config=JOB_CONFIG,
        tags=model.tags(),
        description="Promote the challenger (or a given version) to champion: the manual "
        "policy's gate. A version that scores worse than the champion on the same test split "
        "needs override_worse and a reason.",
    )
    def approve_challenger() -> None:
        promote()

    return approve_challenger


class RollbackConfig(Config):
    reason: str = Field(default="manual rollback", description="why, for the record")
    rolled_back_by: str = Field(default="", description="who rolled back, for the record")
    only_if_champion: str = Field(
        default="",
        description="roll back only while this version is champion (the drift policy sets it, "
        "so a champion that already changed is left alone)",
    )


def point_champion_back(
    context: OpExecutionContext,
    config: RollbackConfig,
    mlflow: MlflowResource,
    object_store: ObjectStoreResource,
    scope: ModelScope,
) -> None:
    run_id = context.run.run_id
    sensor = context.run.tags.get(SENSOR_NAME_TAG, "")
    who = config.rolled_back_by.strip() or (f"sensor {sensor}" if sensor else "")
    lease_name = model_lease(mlflow.model_name)
    with exclusive(context, object_store, lease_name, on_dead_run=mlflow.fail_runs_of) as lease:
        lease.ensure_held()
        _, current, notes = mlflow.settle_champion(run_id)
        _log_notes(context, notes)
        if config.only_if_champion and current != config.only_if_champion:
            context.log.info(
                f"champion is v{current}, not v{config.only_if_champion}: nothing to roll back"
            )
            return
        lease.ensure_held()
        try:
            move = mlflow.rollback_champion(config.reason, actor=who, run_id=run_id)
        except ValueError as exc:
            raise Failure(allow_retries=False, description=str(exc)) from exc
    _record(context, move, scope, {"rolled_back_by": who or "-"})


def _rollback_champion(model: ModelScope) -> JobDefinition:
    point_back = op(name=model.step("point_champion_back"))(model.bind(point_champion_back))

    @job(
        name=model.job_name("rollback_champion"),
        config=JOB_CONFIG,
        tags=model.tags(),
        description="Point the champion alias back at the champion before its latest change "
        "still standing (a change rolled back stays undone).",
    )
    def rollback_champion() -> None:
        point_back()

    return rollback_champion
