"""Write stage: each batch of output rows becomes one result file, atomically (`results.write_result_file`).

Columns in: the output schema. Columns out (to the driver, for the run's summary and progress): `id`,
`status`, `error`, `media`, `num_tiles`, `num_output_tokens` of the rows written.
"""

from __future__ import annotations

import pyarrow as pa

from internvl_batch.config import StorageConfig
from internvl_batch.results import write_result_file

STATS_COLUMNS = ["id", "status", "error", "media", "num_tiles", "num_output_tokens"]


def write_batch(batch: pa.Table, output_path: str, storage: StorageConfig, run_id: str) -> pa.Table:
    if batch.num_rows:
        write_result_file(batch, output_path, storage, run_id)
    return batch.select(STATS_COLUMNS)
