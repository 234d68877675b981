"""The Ray wiring, in one package. Stages know nothing of Ray; this package decides tasks, actors, resources and
what crosses the object store.

    driver: manifest files -> read units (a listing)
    tasks:  layout (line counts of JSONL byte ranges, Parquet row groups)  -> numbered units      (prepass.py)
    tasks:  done keys of earlier results -> one ResultKeys in the object store            (resume)    (prepass.py)
    tasks:  scan per unit -> reduce per id partition -> counts, duplicates, drop set             (prepass.py)
    Ray Data: ManifestDatasource (read tasks, reading.py) ─► the stage chain (chain.py): PrepareStage (CPU
              actors) ─► GenerateStage (model replicas) ─► WriteStage (writer actors) ─► one row of counts per
              result file to the driver                                                           (dataset.py)

The driver holds per-unit and per-partition summaries and object references, never rows. A task's exception
that is one of ours (a fatal manifest problem) is re-raised on the driver as itself (calls.py).

This package's `__init__` imports only `results_dataset` (public: the README's way to read a large output):
the read and scan tasks import their modules (`reading`, `prepass`) without the model stages (`chain`), which
bring torch.
"""

from internvl_batch.pipeline.outputs import results_dataset

__all__ = ["results_dataset"]
