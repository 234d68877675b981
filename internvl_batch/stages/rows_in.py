"""Rows stage (Python API): rows of a user's Ray Dataset, in the manifest's columns -> request rows.

Columns in: `id` (given to rows without one before this stage: `pipeline/api_rows.py`), `image` / `images` / `video` (absolute
URIs, or relative to `base_uri`), optional `question`, `task`, `expression`, `bound`, `num_segments`, and
any other columns, which are carried unchanged (with their Arrow types). Columns out: the read stage's
`REQUEST_SCHEMA`, then the carried columns as `in.<name>` (`passthrough.py`). A malformed row becomes a row with `error`, never an
exception.
"""

from __future__ import annotations

import pyarrow as pa

from internvl_batch.manifest.requests import TaskAssigner
from internvl_batch.manifest.rows import RESERVED, MediaResolver, parse_row
from internvl_batch.output_schema import carried
from internvl_batch.stages.read import request_row, requests_table
from internvl_batch.tasks import TaskPrompter, template_fields


class RowsStage:
    def __init__(self, task_config, max_new_tokens: int, base_uri: str | None = None) -> None:
        self.assign = TaskAssigner(TaskPrompter(task_config, max_new_tokens))
        self.resolve = MediaResolver(base_uri)
        self.template_fields = template_fields(task_config.template)

    def __call__(self, batch: pa.Table) -> pa.Table:
        wanted = [name for name in RESERVED if name in batch.column_names]
        rows = []
        for raw in batch.select(wanted).to_pylist():
            parsed, tasks = self.assign(parse_row(raw, None))
            rows.append(request_row(parsed, tasks, raw, None, self.resolve, []))
        table = requests_table(rows, {})
        # Every other column is carried as `in.<name>` (with its Arrow type), and so are the template's columns.
        for name in batch.column_names:
            if name not in RESERVED or name in self.template_fields:
                table = table.append_column(batch.schema.field(name).with_name(carried(name)), batch.column(name))
        return table
