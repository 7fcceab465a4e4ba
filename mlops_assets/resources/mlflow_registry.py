"""MLflow tracking and model registry: the one place that talks to MLflow.

mlflow is imported inside methods: it costs ~1.5 s and every Dagster run
worker and step process imports the code location.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from dagster import ConfigurableResource

from mlops_assets.lib.env_settings import env_field, model_field, model_value
from mlops_assets.ml.champion_history import (
    LEGACY_TAG,
    PENDING_TAG,
    ChampionEvent,
    change_to_undo,
    event_key,
    history_from_tags,
    legacy_events,
)
from mlops_assets.ml.promotion import Comparison

if TYPE_CHECKING:
    from mlops_assets.ml.search import SearchResult, Trial

CHAMPION = "champion"
CHALLENGER = "challenger"
# On a registered version: where its registration stands ("pending" from the moment it is
# registered until its aliases are moved and its gate decided, then "decided"), and the
# decision, so that a registration a crash interrupted is finished, not skipped. A version
# without the tag was registered before the project recorded it: nothing to finish.
REGISTRATION_TAG = "mlops.registration"
DECISION_TAG = "mlops.gate_decision"
PENDING, DECIDED = "pending", "decided"
# Run tags: what the run was trained from (ml.train.training_fingerprint) and the URI of the
# model it logged, set once the model is logged, so only complete runs are ever reused.
FINGERPRINT_TAG = "mlops.training_fingerprint"
MODEL_URI_TAG = "mlops.model_uri"


@dataclass(frozen=True)
class LoggedModel:
    run_id: str
    model_uri: str
    experiment_id: str
    search_plot_uri: str = ""  # the optimisation history, when a search ran
    artifact_uris: dict[str, str] = field(default_factory=dict)  # extra files, by run path


def dataset_schema(frame: pd.DataFrame, sample_rows: int = 1000) -> Any:
    """The MLflow schema of ``frame``, equal to the one ``mlflow.data.from_pandas`` infers by
    looking at every value in Python (a minute at a million rows): each column's type from
    a sample (its first rows and the first row where it is missing), whether it is required
    from a vectorised check of the whole column."""
    from mlflow.models import infer_signature
    from mlflow.types import ColSpec, Schema

    missing = frame.isna()
    has_missing = missing.any()
    first_missing = [int(missing[c].to_numpy().argmax()) for c in frame if has_missing[c]]
    rows = sorted(set(range(min(sample_rows, len(frame)))) | set(first_missing))
    types = infer_signature(frame.iloc[rows]).inputs.input_dict()
    return Schema(
        [
            ColSpec(types[str(name)].type, str(name), required=not bool(has_missing[name]))
            for name in frame.columns
        ]
    )


def _param_values(params: dict[str, Any]) -> dict[str, str]:
    """MLflow params as text, each cut to 500 characters."""
    return {key: str(value)[:500] for key, value in params.items()}


# MLflow registers its local dataset source twice (for the schemes "" and "file"), so every
# local path "can be interpreted in multiple ways: LocalArtifactDatasetSource,
# LocalArtifactDatasetSource" (mlflow/mlflow#9702), a warning on a user's first run. Only that
# ambiguity of the local source with itself is silenced; any other still shows.
LOCAL_SOURCE_AMBIGUITY = (
    r"The specified dataset source can be interpreted in multiple ways: "
    r"LocalArtifactDatasetSource, LocalArtifactDatasetSource\."
)
SEARCH_PICTURE = "search/optimization_history.png"  # a search's history, in its run
# The space searched, whole: the run's search_space param is cut at MLflow's 6,000 characters.
SEARCH_SPACE = "search/space.json"


@dataclass(frozen=True)
class AliasMove:
    alias: str
    from_version: str | None
    to_version: str
    reason: str
    # A champion change: as the history records it (None when nothing changed).
    event: ChampionEvent | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "alias": self.alias,
            "from": self.from_version,
            "to": self.to_version,
            "reason": self.reason,
        }


class TrainingRun:
    """One training's MLflow run (MlflowResource.training_run): a search's trials are logged
    into it as nested runs as they finish, so their logging counts against the search's time
    budget, then the model, its params, metrics and dataset."""

    def __init__(self, resource: MlflowResource, tags: dict[str, str]) -> None:
        self._resource = resource
        self._tags = tags
        self._fluent: Any = None  # the mlflow module, whose active run this run is
        self._client: Any = None
        self._experiment_id = ""
        self._logged_trials: set[int] = set()
        self.run_id = ""

    def _open(self) -> str:
        """The run's id, the run started (as MLflow's active run) if it was not yet."""
        if not self.run_id:
            self._fluent = self._resource._mlflow()
            self._client = self._resource.client()
            self._experiment_id = self._resource.experiment_id()
            run = self._fluent.start_run(experiment_id=self._experiment_id, tags=self._tags)
            self.run_id = run.info.run_id
        return self.run_id

    def end(self, status: str) -> None:
        if self.run_id and self._fluent.active_run() is not None:
            self._fluent.end_run(status=status)

    def log_trial(self, trial: Trial, objective: str) -> None:
        """A search's finished ``trial`` as a nested run: its params, its
        validation ``objective`` and its seconds; a failed one is tagged with its error.
        Three calls to the tracking store, through the client, not the active run."""
        from mlflow.entities import Metric, Param
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        parent = self._open()
        client = self._client
        state = "failed" if trial.value is None else "complete"
        tags = {
            MLFLOW_PARENT_RUN_ID: parent,
            "mlops.search_trial": str(trial.number),
            "mlops.trial_state": state,
        }
        if trial.error:
            tags["mlops.trial_error"] = trial.error[:5000]
        run = client.create_run(self._experiment_id, run_name=f"trial-{trial.number}", tags=tags)
        now = int(time.time() * 1000)
        metrics = [Metric("trial_seconds", trial.seconds, now, 0)]
        if trial.value is not None:
            metrics.append(Metric(objective, trial.value, now, 0))
        params = [Param(k, v) for k, v in _param_values(trial.params).items()]
        client.log_batch(run.info.run_id, metrics=metrics, params=params)
        client.set_terminated(run.info.run_id)
        self._logged_trials.add(trial.number)

    def log_model(
        self,
        pipeline: Any,
        params: dict[str, Any],
        metrics: dict[str, float],
        input_example: pd.DataFrame,
        training_frame: pd.DataFrame,
        target: str,
        skops_trusted_types: list[str],
        pip_requirements: list[str] | None = None,
        search: SearchResult | None = None,
        classes: list[str] | None = None,
        artifacts: dict[str, bytes] | None = None,
        code_paths: list[str] | None = None,
    ) -> LoggedModel:
        """Log params, metrics, the training dataset (with its digest) and the model with its
        signature and input example; a hyperparameter search's summary (its best value, trial
        counts and seconds, the space) and optimisation history picture, and any of its
        trials not logged as they finished.

        A classifier (``pipeline`` a ClassAnswer, ``classes`` the classes it learned) answers
        with its class and probabilities, by name; the task and classes are in the model's
        metadata. ``artifacts`` (path in the run -> bytes) are logged as files;
        ``code_paths`` (source the model's own types need) are copied into the model.
        """
        from mlflow.models import infer_signature

        from mlops_assets.ml.tasks import CLASSES_KEY, TASK_KEY

        run_id = self._open()
        mlflow = self._fluent
        tags = self._tags
        flavour: dict[str, Any] = {}
        if classes:
            flavour = {"metadata": {TASK_KEY: "classification", CLASSES_KEY: list(classes)}}
        signature = infer_signature(input_example, pipeline.predict(input_example))
        mlflow.log_params(_param_values(params))
        mlflow.log_metrics(metrics)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=LOCAL_SOURCE_AMBIGUITY)
            dataset = mlflow.data.from_pandas(
                training_frame,
                source=tags.get("mlops.dataset_uri", "unknown"),
                targets=target,
                name=tags.get("mlops.dataset_tag", "dataset"),
                digest=tags.get("mlops.dataset_digest", "")[:36] or None,
            )
        dataset.schema = dataset_schema(training_frame)
        mlflow.log_input(dataset, context="training")
        info = mlflow.sklearn.log_model(
            sk_model=pipeline,
            name="model",
            signature=signature,
            input_example=input_example,
            skops_trusted_types=skops_trusted_types,
            pip_requirements=pip_requirements,
            code_paths=code_paths or None,
            **flavour,
        )
        artifact_uris = self._resource._log_files(artifacts or {})
        plot_uri = self._log_search(search) if search is not None else ""
        mlflow.set_tag(MODEL_URI_TAG, info.model_uri)
        return LoggedModel(
            run_id=run_id,
            model_uri=info.model_uri,
            experiment_id=self._experiment_id,
            search_plot_uri=plot_uri,
            artifact_uris=artifact_uris,
        )

    def _log_search(self, search: SearchResult) -> str:
        """The search's summary in the run, and its history as a PNG artifact."""
        from mlops_assets.ml.search import history_png

        mlflow = self._fluent
        for trial in search.trials:
            if trial.number not in self._logged_trials:
                self.log_trial(trial, search.objective)
        mlflow.log_metrics(
            {
                f"search_best_{search.objective}": search.best_value,
                "search_trials": len(search.trials),
                "search_failed_trials": search.failed,
                "search_seconds": search.seconds,
            }
        )
        space = json.dumps(search.space, sort_keys=True)
        mlflow.log_param("search_space", space[:6000])  # shown in the UI; the file is whole
        files = {SEARCH_PICTURE: history_png(search), SEARCH_SPACE: space.encode()}
        return self._resource._log_files(files)[SEARCH_PICTURE]


class MlflowResource(ConfigurableResource):
    """MLflow tracking server (or sqlite file) and registry, and the names a model uses in them."""

    tracking_uri: str
    registry_uri: str = env_field(
        "MLFLOW_REGISTRY_URI",
        "",
        "MLflow model registry; empty means the tracking URI.",
    )
    experiment_name: str = model_field("experiment", "", "MLflow experiment of its training runs.")
    model_name: str = model_field("registered_model", "", "Registered model name.")
    # Derived from MLOPS_HOME for a sqlite tracking URI (definitions.build_resources).
    artifact_root: str = ""

    @property
    def registered_name(self) -> str:
        """The model's registered model (see model_value)."""
        return model_value(self, "model_name")

    @property
    def experiment(self) -> str:
        """The model's experiment (see model_value)."""
        return model_value(self, "experiment_name")

    def _mlflow(self) -> Any:
        import mlflow

        self._seed()
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.registry_uri or self.tracking_uri)
        return mlflow

    def client(self) -> Any:
        from mlflow import MlflowClient

        self._seed()
        return MlflowClient(self.tracking_uri, self.registry_uri or self.tracking_uri)

    def _seed(self) -> None:
        """A new embedded database starts from MLflow's migrated schema (mlflow_sqlite)."""
        from mlops_assets.resources.mlflow_sqlite import seed_database

        for uri in {self.tracking_uri, self.registry_uri or self.tracking_uri}:
            seed_database(uri)

    def experiment_id(self) -> str:
        client = self.client()
        experiment = client.get_experiment_by_name(self.experiment)
        if experiment is not None:
            return experiment.experiment_id
        location = None
        if self.artifact_root:
            Path(self.artifact_root).mkdir(parents=True, exist_ok=True)
            location = Path(self.artifact_root).resolve().as_uri()
        return client.create_experiment(self.experiment, artifact_location=location)

    @contextmanager
    def training_run(self, tags: dict[str, str]) -> Iterator[TrainingRun]:
        """The MLflow run of one training, with ``tags``, created when first written to: by
        a search's first finished trial (log_trial), else by log_model. An error inside ends
        a created run FAILED; an error before anything was written leaves nothing in MLflow."""
        run = TrainingRun(self, tags)
        try:
            yield run
        except BaseException:
            run.end("FAILED")
            raise
        run.end("FINISHED")

    def log_training_run(
        self,
        pipeline: Any,
        params: dict[str, Any],
        metrics: dict[str, float],
        input_example: pd.DataFrame,
        training_frame: pd.DataFrame,
        target: str,
        tags: dict[str, str],
        skops_trusted_types: list[str],
        pip_requirements: list[str] | None = None,
        search: Any = None,
        classes: list[str] | None = None,
        artifacts: dict[str, bytes] | None = None,
        code_paths: list[str] | None = None,
    ) -> LoggedModel:
        """A fitted model in a new MLflow run with ``tags`` (see TrainingRun.log_model)."""
        with self.training_run(tags) as run:
            return run.log_model(
                pipeline,
                params,
                metrics,
                input_example,
                training_frame,
                target,
                skops_trusted_types,
                pip_requirements,
                search,
                classes,
                artifacts,
                code_paths,
            )

    def _log_files(self, files: dict[str, bytes]) -> dict[str, str]:
        """Each ``path -> bytes`` as an artifact of the active run; their URIs by path."""
        import tempfile

        mlflow = self._mlflow()
        uris = {}
        with tempfile.TemporaryDirectory(prefix="mlops-artifacts-") as tmp:
            for path, data in files.items():
                local = Path(tmp) / path
                local.parent.mkdir(parents=True, exist_ok=True)
                local.write_bytes(data)
                folder = str(Path(path).parent)
                mlflow.log_artifact(str(local), artifact_path=None if folder == "." else folder)
                uris[path] = f"{mlflow.get_artifact_uri()}/{path}"
        return uris

    def logged_files(self, run: Any, folder: str) -> dict[str, str]:
        """The files ``run`` logged in ``folder``: each one's URI by its path in the run, as
        log_training_run gave them."""
        found = self.client().list_artifacts(run.info.run_id, folder)
        return {a.path: f"{run.info.artifact_uri}/{a.path}" for a in found if not a.is_dir}

    def read_logged_file(self, run_id: str, path: str) -> bytes:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="mlops-artifacts-") as tmp:
            return Path(self.client().download_artifacts(run_id, path, tmp)).read_bytes()

    def find_training_run(self, fingerprint: str) -> Any | None:
        """The newest finished run with this training fingerprint that logged its model."""
        client = self.client()
        experiment = client.get_experiment_by_name(self.experiment)
        if experiment is None:
            return None
        runs = client.search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.`{FINGERPRINT_TAG}` = '{fingerprint}' "
            "and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            max_results=5,
        )
        return next((run for run in runs if MODEL_URI_TAG in run.data.tags), None)

    def version_of_run(self, run_id: str) -> str | None:
        """The first registered version of this model that came from ``run_id``, if any."""
        versions = self.client().search_model_versions(
            f"name='{self.registered_name}' and run_id='{run_id}'"
        )
        return str(min(int(v.version) for v in versions)) if versions else None

    def register(self, model_uri: str, tags: dict[str, str]) -> str:
        mlflow = self._mlflow()
        version = mlflow.register_model(model_uri, self.registered_name, tags=tags)
        return str(version.version)

    def version_with_fingerprint(self, fingerprint: str) -> str | None:
        """The first registered version of a model trained with this training fingerprint
        (the same dataset version, config, code and packages), if any."""
        versions = self.client().search_model_versions(
            f"name='{self.registered_name}' and tags.`{FINGERPRINT_TAG}` = '{fingerprint}'"
        )
        return str(min(int(v.version) for v in versions)) if versions else None

    def registration_state(self, version: str) -> tuple[str, str]:
        """Where ``version``'s registration stands (PENDING or DECIDED), and the decision it
        recorded ("" while pending). A version registered before states were recorded counts
        as decided: there is nothing of it to finish."""
        tags = self.model_version(version).tags
        state = tags.get(REGISTRATION_TAG, DECIDED)
        return state, tags.get(DECISION_TAG, "")

    def record_decision(self, version: str, decision: str) -> None:
        """Close ``version``'s registration: its aliases are moved and its gate decided."""
        client = self.client()
        client.set_model_version_tag(self.registered_name, version, DECISION_TAG, decision[:5000])
        client.set_model_version_tag(self.registered_name, version, REGISTRATION_TAG, DECIDED)

    def fail_runs_of(self, dagster_run_id: str) -> list[str]:
        """Mark the MLflow runs a dead Dagster run left RUNNING (and their nested trial runs)
        as FAILED; returns their ids."""
        client = self.client()
        experiment = client.get_experiment_by_name(self.experiment)
        if experiment is None:
            return []
        running = client.search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.`dagster.run_id` = '{dagster_run_id}' "
            "and attributes.status = 'RUNNING'",
        )
        failed = []
        for run in running:
            children = client.search_runs(
                [experiment.experiment_id],
                filter_string=f"tags.`mlflow.parentRunId` = '{run.info.run_id}' "
                "and attributes.status = 'RUNNING'",
            )
            for child in [*children, run]:
                client.set_terminated(child.info.run_id, status="FAILED")
                failed.append(child.info.run_id)
        return failed

    def alias_version(self, alias: str) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            return str(
                self.client().get_model_version_by_alias(self.registered_name, alias).version
            )
        except MlflowException as exc:
            if "not found" in str(exc).lower() or "RESOURCE_DOES_NOT_EXIST" in str(exc):
                return None
            raise

    def model_version(self, version: str) -> Any:
        return self.client().get_model_version(self.registered_name, version)

    def version_exists(self, version: str) -> bool:
        from mlflow.exceptions import MlflowException

        if not version.isdigit():
            return False
        try:
            self.model_version(version)
        except MlflowException as exc:
            if "not found" in str(exc).lower() or "RESOURCE_DOES_NOT_EXIST" in str(exc):
                return False
            raise
        return True

    def run(self, run_id: str) -> Any:
        return self.client().get_run(run_id)

    def load_model(self, version_or_alias: str) -> Any:
        """Load a registered version (``"3"``) or alias (``"champion"``) as a pyfunc model."""
        mlflow = self._mlflow()
        reference = (
            f"models:/{self.registered_name}/{version_or_alias}"
            if version_or_alias.isdigit()
            else f"models:/{self.registered_name}@{version_or_alias}"
        )
        return mlflow.pyfunc.load_model(reference)

    def write_serving_context(self, version: str, output_dir: Path, base_image: str) -> str:
        """MLflow's own build context for serving ``version``: the model (downloaded into
        ``output_dir``) and its Dockerfile. Returns the Dockerfile's text.

        An empty ``base_image`` lets MLflow choose (python:<model's python>-slim).
        """
        self._mlflow()
        from mlflow.pyfunc.backend import PyFuncBackend

        PyFuncBackend(config={}, env_manager="local").generate_dockerfile(
            model_uri=f"models:/{self.registered_name}/{version}",
            output_dir=str(output_dir),
            base_image=base_image or None,
        )
        return (output_dir / "Dockerfile").read_text()

    def _model_tags(self) -> dict[str, str]:
        from mlflow.exceptions import MlflowException

        try:
            return dict(self.client().get_registered_model(self.registered_name).tags)
        except MlflowException as exc:
            if "RESOURCE_DOES_NOT_EXIST" in str(exc) or "not found" in str(exc).lower():
                return {}
            raise

    def champion_history(self) -> list[ChampionEvent]:
        """Every change of the champion, oldest first (ml/champion_history.py)."""
        return history_from_tags(self._model_tags())

    def set_version_tags(self, version: str, tags: dict[str, str]) -> None:
        client = self.client()
        for key, value in tags.items():
            client.set_model_version_tag(self.registered_name, version, key, value)

    def settle_champion(
        self, run_id: str = ""
    ) -> tuple[list[ChampionEvent], str | None, list[str]]:
        """Bring the champion and its history into agreement before a step decides anything:
        a change a stopped step left pending is finished (its alias moved); a move made outside
        the project (MLflow's UI or API) is recorded as an ``external`` change. Returns the
        history, the champion, and what was done, for the log. Hold the model's lease."""
        client = self.client()
        tags = self._model_tags()
        history = history_from_tags(tags)
        current = self.alias_version(CHAMPION)
        notes = []
        pending = tags.get(PENDING_TAG, "")
        if pending:
            left = next((e for e in history if str(e.seq) == pending), None)
            if left is not None and left.to_version and current != left.to_version:
                client.set_registered_model_alias(self.registered_name, CHAMPION, left.to_version)
                current = left.to_version
                notes.append(f"finished the champion change a stopped step left: {left.describe()}")
            client.delete_registered_model_tag(self.registered_name, PENDING_TAG)
        recorded = history[-1].to_version if history else None
        if current != recorded:
            event = ChampionEvent(
                seq=_next_seq(history),
                at=_now(),
                kind="external",
                from_version=recorded,
                to_version=current,
                reason="the champion alias was moved outside the project (MLflow's UI or API); "
                "recorded when noticed",
                run_id=run_id,
            )
            history.append(self._write_event(tags, event))
            notes.append(f"recorded a champion change made outside the project: {event.describe()}")
        return history, current, notes

    def _write_event(self, tags: dict[str, str], event: ChampionEvent) -> ChampionEvent:
        """Add ``event`` to the history (the old history tag's entries first, as the changes
        they were, then that tag goes); returns the event as stored."""
        client = self.client()
        if LEGACY_TAG in tags:
            for old in legacy_events(tags[LEGACY_TAG]):
                client.set_registered_model_tag(
                    self.registered_name, event_key(old.seq), old.to_json()
                )
            client.delete_registered_model_tag(self.registered_name, LEGACY_TAG)
            del tags[LEGACY_TAG]
        text = event.to_json()
        client.set_registered_model_tag(self.registered_name, event_key(event.seq), text)
        return ChampionEvent.from_json(text)

    def change_champion(
        self,
        version: str,
        kind: str,
        reason: str,
        *,
        actor: str = "",
        run_id: str = "",
        comparison: Comparison | None = None,
        override: bool = False,
        undoes: int | None = None,
    ) -> AliasMove:
        """Point ``champion`` at ``version`` and add the change to the history. The change is
        recorded before the alias moves, under a pending mark that is removed once it has: a
        step stopped in between leaves it for the next one to finish (settle_champion).
        A version that is champion already changes nothing (no event). Hold the model's
        lease."""
        if not self.version_exists(version):  # before anything is written: nothing to finish
            raise ValueError(f"model '{self.registered_name}' has no version '{version}'")
        history, current, _ = self.settle_champion(run_id)
        if current == version:
            return AliasMove(CHAMPION, current, version, reason)
        event = ChampionEvent(
            seq=_next_seq(history),
            at=_now(),
            kind=kind,
            from_version=current,
            to_version=version,
            actor=actor,
            reason=reason,
            run_id=run_id,
            metric=comparison.metric if comparison else "",
            from_score=comparison.champion_score if comparison else None,
            to_score=comparison.challenger_score if comparison else None,
            dataset=comparison.dataset if comparison else "",
            override=override,
            undoes=undoes,
        )
        client = self.client()
        client.set_registered_model_tag(self.registered_name, PENDING_TAG, str(event.seq))
        stored = self._write_event(self._model_tags(), event)
        client.set_registered_model_alias(self.registered_name, CHAMPION, version)
        client.delete_registered_model_tag(self.registered_name, PENDING_TAG)
        return AliasMove(CHAMPION, current, version, reason, stored)

    def move_alias(self, alias: str, version: str, reason: str) -> AliasMove:
        """Point ``alias`` at ``version``; a champion move is a ``promotion`` in the history."""
        if alias == CHAMPION:
            return self.change_champion(version, "promotion", reason)
        previous = self.alias_version(alias)
        self.client().set_registered_model_alias(self.registered_name, alias, version)
        return AliasMove(alias, previous, version, reason)

    def rollback_champion(self, reason: str, actor: str = "", run_id: str = "") -> AliasMove:
        """Point ``champion`` back at the champion before the latest change still standing
        (ml/champion_history.py: a change once rolled back stays undone), and record it."""
        history, current, _ = self.settle_champion(run_id)
        if current is None:
            raise ValueError(f"model '{self.registered_name}' has no champion to roll back")
        undo = change_to_undo(history)
        if undo is None or undo.from_version is None:
            raise ValueError(
                f"model '{self.registered_name}': champion v{current} has no earlier champion to "
                "roll back to"
            )
        return self.change_champion(
            undo.from_version, "rollback", reason, actor=actor, run_id=run_id, undoes=undo.seq
        )


def _next_seq(history: list[ChampionEvent]) -> int:
    return (history[-1].seq if history else 0) + 1


def _now() -> str:
    return datetime.now(UTC).isoformat()
