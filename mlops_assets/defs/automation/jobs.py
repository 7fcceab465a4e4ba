"""Jobs: the whole lifecycle, and the two registry actions a person takes by hand."""

from dataclasses import dataclass
from typing import TYPE_CHECKING

from dagster import (
    AssetMaterialization,
    AssetSelection,
    Config,
    Failure,
    JobDefinition,
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

from mlops_assets.lib.exclusive import exclusive, model_lease
from mlops_assets.lib.metadata import md_table
from mlops_assets.lib.pod_resources import standard_tags, training_tags
from mlops_assets.records import champion_data_version
from mlops_assets.resources.mlflow_registry import (
    CHALLENGER,
    CHAMPION,
    AliasMove,
    MlflowResource,
)
from mlops_assets.resources.object_store import ObjectStoreResource

# How Dagster records a materialisation's data version (DataVersion does it for assets).
DATA_VERSION_TAG = "dagster/data_version"

# served_image needs an image builder and takes minutes, model_deployment a cluster: they have
# their own job (and, through automation, follow champion changes), so the lifecycle runs on
# any machine.
SERVED_IMAGE = AssetSelection.assets("served_image", "model_deployment")
# The served model's log, one day at a time, and its drift: only where a served model writes one.
TRAFFIC = AssetSelection.assets("served_traffic", "traffic_drift_report")
# The unpartitioned chain: what new labelled data, the retrain schedule and the drift policy
# run. raw_data is keyed by content, so unchanged data is not stored twice.
MODEL_CHAIN = AssetSelection.assets(
    "raw_data", "versioned_dataset", "trained_model", "registered_model"
)


@dataclass(frozen=True)
class AssetJobs:
    """The asset jobs, tagged with the pod sizes read when the definitions are built."""

    mlops_lifecycle: "UnresolvedAssetJobDefinition"
    refresh_model: "UnresolvedAssetJobDefinition"
    score_batch: "UnresolvedAssetJobDefinition"
    serve_champion: "UnresolvedAssetJobDefinition"
    collect_traffic: "UnresolvedAssetJobDefinition"

    def all(self) -> list["UnresolvedAssetJobDefinition | JobDefinition"]:
        return [
            self.mlops_lifecycle,
            self.refresh_model,
            self.score_batch,
            self.serve_champion,
            self.collect_traffic,
            approve_challenger,
            rollback_champion,
        ]


def build_jobs() -> AssetJobs:
    return AssetJobs(
        mlops_lifecycle=define_asset_job(
            "mlops_lifecycle",
            selection=AssetSelection.all() - SERVED_IMAGE - TRAFFIC,
            tags=training_tags(),
            description="Every asset and check but served_image, model_deployment, "
            "served_traffic and traffic_drift_report: snapshot, version, train, register, score the day's batch and "
            "report its drift.",
        ),
        refresh_model=define_asset_job(
            "refresh_model",
            selection=MODEL_CHAIN,
            tags=training_tags(),
            description="Snapshot the labelled data, version it, train, register and gate the "
            "champion (raw_data, versioned_dataset, trained_model, registered_model and their "
            "checks).",
        ),
        score_batch=define_asset_job(
            "score_batch",
            selection=AssetSelection.assets("predictions", "drift_report"),
            tags=standard_tags(),
            description="Score one day's incoming batch with the champion and report its drift "
            "(predictions, drift_report and their checks).",
        ),
        serve_champion=define_asset_job(
            "serve_champion",
            selection=SERVED_IMAGE,
            tags=standard_tags(),
            description="Package the champion as an OCI image, push it, smoke-test it, and roll "
            "it out to Kubernetes when a cluster is configured (served_image, model_deployment, "
            "their checks).",
        ),
        collect_traffic=define_asset_job(
            "collect_traffic",
            selection=TRAFFIC,
            tags=standard_tags(),
            description="Collect one day of the served model's traffic log (and the labels "
            "come for it) into a table, and report its drift and quality against the training "
            "data (served_traffic, traffic_drift_report and their checks).",
        ),
    )


def _record(context: OpExecutionContext, move: AliasMove, model_name: str) -> None:
    context.log_event(
        AssetMaterialization(
            asset_key="registered_model",
            # The champion's data version: the served image follows it (champion_image).
            tags={DATA_VERSION_TAG: champion_data_version(move.to_version)},
            description=f"{move.alias}: v{move.from_version} -> v{move.to_version} ({move.reason})",
            metadata={
                "model_name": model_name,
                "champion_version": move.to_version,
                "alias_moves": md_table(
                    ["alias", "from", "to", "reason"],
                    [(move.alias, move.from_version or "-", move.to_version, move.reason)],
                ),
            },
        )
    )


class ApprovalConfig(Config):
    version: str = Field(default="", description="version to promote; empty means the challenger")
    approved_by: str = Field(default="", description="who approved, for the record")


@op
def promote_to_champion(
    context: OpExecutionContext,
    config: ApprovalConfig,
    mlflow: MlflowResource,
    object_store: ObjectStoreResource,
) -> None:
    # The model's lease, as registered_model holds it: alias moves never interleave.
    lease_name = model_lease(mlflow.model_name)
    with exclusive(context, object_store, lease_name, on_dead_run=mlflow.fail_runs_of) as lease:
        version = config.version or mlflow.alias_version(CHALLENGER)
        if not version:
            raise Failure(
                allow_retries=False,
                description=f"model '{mlflow.model_name}' has no challenger to approve",
            )
        who = config.approved_by or "unnamed approver"
        lease.ensure_held()
        move = mlflow.move_alias(CHAMPION, version, f"approved by {who}")
    _record(context, move, mlflow.model_name)


@job(
    description="Promote the challenger (or a given version) to champion: the manual policy's gate."
)
def approve_challenger() -> None:
    promote_to_champion()


class RollbackConfig(Config):
    reason: str = Field(default="manual rollback", description="why, for the record")
    only_if_champion: str = Field(
        default="",
        description="roll back only while this version is champion (the drift policy sets it, "
        "so a champion that already changed is left alone)",
    )


@op
def point_champion_back(
    context: OpExecutionContext,
    config: RollbackConfig,
    mlflow: MlflowResource,
    object_store: ObjectStoreResource,
) -> None:
    lease_name = model_lease(mlflow.model_name)
    with exclusive(context, object_store, lease_name, on_dead_run=mlflow.fail_runs_of) as lease:
        current = mlflow.alias_version(CHAMPION)
        if config.only_if_champion and current != config.only_if_champion:
            context.log.info(
                f"champion is v{current}, not v{config.only_if_champion}: nothing to roll back"
            )
            return
        lease.ensure_held()
        try:
            move = mlflow.rollback_champion(config.reason)
        except ValueError as exc:
            raise Failure(allow_retries=False, description=str(exc)) from exc
    _record(context, move, mlflow.model_name)


@job(description="Point the champion alias back at the previous champion.")
def rollback_champion() -> None:
    point_champion_back()
