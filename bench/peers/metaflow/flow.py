"""The house-price lifecycle as a Metaflow flow: one @step per stage, data passed between
steps as artifacts (self.<name>, pickled into Metaflow's local datastore), MLflow called
inside the steps (Metaflow has no MLflow integration of its own).

Run: python flow.py run   (state and datastore under the cwd; see peer.json's env)
"""

import os

from metaflow import FlowSpec, Parameter, current, step

import house_lifecycle as hl

TRUSTED_TYPES = ["numpy.dtype", "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]


class HousePriceFlow(FlowSpec):
    labelled = Parameter("labelled", default="data/labelled.csv", help="labelled CSV")
    batch = Parameter("batch", default="data/batch.csv", help="the day's batch CSV")
    out = Parameter("out", default="out", help="folder for Parquet and HTML outputs")

    @step
    def start(self):
        """Read the labelled CSV and its SHA-256 (the dataset's version)."""
        self.raw, self.sha256 = hl.read_raw(self.labelled)
        self.next(self.validate)

    @step
    def validate(self):
        """The data contract (Metaflow has no data checks: a plain step that raises)."""
        self.counts = hl.validate(self.raw, source=self.labelled)
        self.next(self.clean)

    @step
    def clean(self):
        self.cleaned = hl.clean(self.raw)
        self.next(self.split)

    @step
    def split(self):
        """Split, and write each split as Parquet (Metaflow's local datastore only pickles)."""
        self.splits = hl.split(self.cleaned)
        os.makedirs(self.out, exist_ok=True)
        for name, frame in self.splits.items():
            frame.to_parquet(os.path.join(self.out, f"{name}.parquet"), index=False)
        self.next(self.train)

    @step
    def train(self):
        """Train, evaluate, log to MLflow and register the model as the champion."""
        import mlflow
        from mlflow.models import infer_signature

        self.model = hl.train(self.splits["train"])
        self.metrics = hl.evaluate(self.model, self.splits)
        example = self.splits["train"][hl.FEATURES].head(5)
        # MLFLOW_TRACKING_URI comes from the environment; the MLflow run is named after
        # the Metaflow run so each can be found from the other.
        with mlflow.start_run(run_name=f"{current.flow_name}/{current.run_id}"):
            mlflow.set_tag("metaflow.pathspec", current.pathspec)
            mlflow.log_params(
                {"dataset_sha256": self.sha256, **self.counts}
                | {f"regressor.{k}": v for k, v in self.model[-1].get_params().items()}
            )
            mlflow.log_metrics(self.metrics)
            info = mlflow.sklearn.log_model(
                sk_model=self.model,
                name="model",
                signature=infer_signature(example, self.model.predict(example)),
                input_example=example,
                # MLflow 3 saves sklearn models with skops, which loads only types it trusts:
                # these two, which the HistGradientBoosting Pipeline holds, were reviewed.
                skops_trusted_types=TRUSTED_TYPES,
            )
        self.model_uri = info.model_uri
        self.model_version = hl.register(self.model_uri)
        self.next(self.score)

    @step
    def score(self):
        """Score the day's batch and write out/predictions.parquet."""
        self.predictions = hl.score(self.model, hl.read_batch(self.batch))
        self.predictions.to_parquet(os.path.join(self.out, "predictions.parquet"), index=False)
        self.next(self.drift)

    @step
    def drift(self):
        """Evidently drift of the batch (its feature columns) against the train split."""
        self.drift_summary = hl.drift(
            self.splits["train"], self.predictions, os.path.join(self.out, "drift.html")
        )
        self.next(self.end)

    @step
    def end(self):
        print(f"model {hl.MODEL_NAME} v{self.model_version} ({hl.ALIAS}): {self.metrics}")
        print(f"drift: {self.drift_summary}")


if __name__ == "__main__":
    HousePriceFlow()
