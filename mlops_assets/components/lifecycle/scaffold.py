"""`dg scaffold defs mlops_assets.components.ModelLifecycle <name>`: a new model's defs.yaml,
and with a data file, the dataset spec drafted from it (as `mlops-spec infer` drafts one)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import BaseModel, Field

from mlops_assets.components.lifecycle.scope import check_model_name

COMPONENT = "mlops_assets.components.ModelLifecycle"


class ScaffoldParams(BaseModel):
    data: str = Field(
        default="",
        description="a .csv or .parquet file of labelled rows: the model's source, and the "
        "rows its dataset spec is drafted from (spec.json beside defs.yaml)",
    )
    target: str = Field(default="", description="the column the model predicts (with data)")
    incoming: str = Field(
        default="",
        description="where a day's batch to score lands, e.g. /data/churn/{date}.csv",
    )
    task: str = Field(
        default="",
        description="regression or classification (default: classification when the target "
        "is text)",
    )


def defs_yaml(name: str, source: str, spec: str, incoming: str = "") -> str:
    """A starting defs.yaml for the model ``name``: what must be set, and where the rest is."""
    spec_line = (
        f"    spec: {spec}  # drafted from the data: review its bounds and allowed values"
        if spec
        else '    spec: ""  # a JSON dataset spec beside this file: `mlops-spec infer` drafts one'
    )
    return f"""\
# The model {name}: its data, training, policies, serving and automation. Only name,
# registered_model and data.source are needed; every other attribute keeps its default
# (`dg docs serve` lists them, with what each does). Secrets come from the environment:
# "{{{{ env.MY_SOURCE_URL }}}}", never written here.
type: {COMPONENT}

attributes:
  name: {name}
  registered_model: {name.replace("_", "-")}
  data:
    # Labelled training data: a file, a folder of .csv/.parquet files, http(s)://, s3://.
    source: "{source}"
{spec_line}
    # A day's batch to score, e.g. /data/{name}/{{date}}.csv ({{date}}: YYYY-MM-DD).
    incoming: "{incoming}"
  # training:     model_type, model_params, training_function, search_trials, ...
  # policy:       promotion_policy, min_r2 or min_balanced_accuracy, drift_policy, ...
  # serving:      protocol, batch, traffic_log, replicas, ...
  # automation:   running, scoring_cron, retrain_cron, interval_seconds, ...
"""


class ModelLifecycleScaffolder(dg.Scaffolder[ScaffoldParams]):
    """Writes defs.yaml in the new folder; with ``data`` (and ``target``) also spec.json,
    drafted from the file's rows, and the file as the model's source."""

    @classmethod
    def get_scaffold_params(cls) -> type[ScaffoldParams]:
        return ScaffoldParams

    def scaffold(self, request: dg.ScaffoldRequest[ScaffoldParams]) -> None:
        folder = request.target_path
        name = check_model_name(folder.name)
        params = request.params
        folder.mkdir(parents=True, exist_ok=True)
        source, spec = "", ""
        if params.data:
            if not params.target:
                raise ValueError("give the target column with the data file: target=<column>")
            source, spec = str(Path(params.data).expanduser().resolve()), "spec.json"
            (folder / spec).write_text(draft_spec(Path(source), params.target, name, params.task))
        (folder / "defs.yaml").write_text(defs_yaml(name, source, spec, params.incoming))


def draft_spec(data: Path, target: str, name: str, task: str = "") -> str:
    """The dataset spec drafted from ``data``'s rows, named as the model is."""
    from mlops_assets.ml.spec_infer import draft_text, infer_spec, read_table

    return draft_text(infer_spec(read_table(data), target, name, task=task))
