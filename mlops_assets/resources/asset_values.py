"""Where asset values (the small frozen records of records.py) live between steps and runs:
in the object store, one object per run, so that runs never read each other's values.

Dagster's own IO managers keep an asset's value at one fixed path per asset (and partition).
Two runs at once (a sensor's refresh_model beside a manual run) then overwrite each other's
values between their steps: one run versioned, trained and registered the other's data. Here a
value is stored under the run that made it, ``io/<asset>[/<partition>]/<run id>.pickle``:

- an input made earlier in the same run (or, on re-execution, in the run it re-executes) is
  read from that run's object: exactly the value of the run's own lineage;
- an input the run does not make is read from the newest materialisation of that asset (and
  partition) that stored a value, so an approval's or a rollback's materialisation (which
  stores none) is skipped.
"""

from __future__ import annotations

import pickle
from typing import Any

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    ConfigurableIOManager,
    DagsterInstance,
    InputContext,
    OutputContext,
)

from mlops_assets.resources.object_store import ObjectStoreResource

VALUES_PREFIX = "io"
# How many of an asset's newest materialisations are looked at for a stored value.
LOOK_BACK = 50


def value_key(asset: AssetKey, run_id: str, partition: str | None = None) -> str:
    parts = [VALUES_PREFIX, *asset.path, *([partition] if partition else []), f"{run_id}.pickle"]
    return "/".join(parts)


class RunScopedIOManager(ConfigurableIOManager):
    """Asset values in the object store, keyed by the run that made them (see module doc)."""

    object_store: ObjectStoreResource

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        if obj is None:  # an asset that hands nothing downstream
            return
        partition = context.asset_partition_key if context.has_asset_partitions else None
        key = value_key(context.asset_key, context.run_id, partition)
        self.object_store.put_bytes(key, pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))

    def load_input(self, context: InputContext) -> Any:
        asset = context.asset_key
        partition = context.asset_partition_key if context.has_asset_partitions else None
        upstream = context.upstream_output
        if upstream is not None and upstream.step_key != "none":  # made in this run's plan
            key = value_key(asset, upstream.run_id, partition)
        else:
            key = self._newest_stored(context.instance, asset, partition)
        try:
            data = self.object_store.get_bytes(key)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"no stored value of {asset.to_user_string()}"
                + (f" for partition {partition}" if partition else "")
                + f" at {self.object_store.uri(key)}: materialise it first"
            ) from None
        return pickle.loads(data)

    def _newest_stored(
        self, instance: DagsterInstance, asset: AssetKey, partition: str | None
    ) -> str:
        """The key of the newest materialisation of ``asset`` that stored a value."""
        records = instance.fetch_materializations(
            AssetRecordsFilter(
                asset_key=asset, asset_partitions=[partition] if partition else None
            ),
            limit=LOOK_BACK,
        ).records
        for record in records:
            key = value_key(asset, record.run_id, partition)
            if self.object_store.exists(key):
                return key
        what = asset.to_user_string() + (f" for partition {partition}" if partition else "")
        raise FileNotFoundError(
            f"no materialisation of {what} stored a value in {self.object_store.uri(VALUES_PREFIX)}"
            ": materialise it first"
        )
