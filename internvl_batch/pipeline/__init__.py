"""The Ray wiring, in one package. Stages know nothing of Ray; this module decides tasks, actors, resources and
what crosses the object store.

    driver: manifest files -> read units (a listing)
    tasks:  layout (line counts of JSONL byte ranges, Parquet row groups)  -> numbered units
    tasks:  done keys of earlier results -> one KeySet in the object store            (resume)
    tasks:  scan per unit -> reduce per id partition -> counts, duplicates, drop set  (before any model work)
    Ray Data: ManifestDatasource (read stage) ─► PrepareStage (CPU actors) ─► GenerateStage (replicas)
              ─► write_batch (tasks) ─► one row of counts per result file to the driver

The driver holds per-unit and per-partition summaries and object references, never rows. A task's exception
that is one of ours (a fatal manifest problem) is re-raised on the driver as itself.
"""

from internvl_batch.pipeline.dataset import (
    add_model_stages,
    build_api_dataset,
    build_dataset,
    manifest_datasource,
    replica_gpus,
)
from internvl_batch.pipeline.outputs import results_dataset
from internvl_batch.pipeline.prepass import ScanResult, load_done_keys, read_units, scan_manifests

__all__ = [
    "ScanResult",
    "add_model_stages",
    "build_api_dataset",
    "build_dataset",
    "load_done_keys",
    "manifest_datasource",
    "read_units",
    "replica_gpus",
    "results_dataset",
    "scan_manifests",
]
