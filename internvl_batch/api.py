"""The pipeline on a Ray Dataset you already have: build a processor from a config, call it on a dataset of
rows, get a dataset of result rows back (in the spirit of Ray Data LLM's processors).

    import ray
    from internvl_batch.api import Processor

    processor = Processor({"model": {"path": "OpenGVLab/InternVL2_5-4B"}, "task": {"name": "caption"}})
    rows = ray.data.read_parquet("s3://bucket/catalog/")         # columns: id, image (URI), question, ...
    results = processor(rows)                                    # lazy: nothing runs yet
    results.write_parquet("s3://bucket/captions/")               # or .iter_batches(), .take(10), ...

Input rows use the manifest's columns (README, "Manifests"): `image` / `images` / `video` URIs (`s3://` or
absolute paths; relative ones resolve against `base_uri` when given), optional `id`, `question`, `task`,
`expression`, `bound`, `num_segments`. Every other column is carried to the output unchanged. Output rows
have the job's output schema (`stages/output.py`): one per (input row, task), errors as rows.

The config is the job's without `input` and `output` (`config.PipelineConfig`): model, task, generation,
batching, preprocess, video, resources, fetch, storage. The job's manifests, resume, duplicate-id check and
result files are not involved: the dataset is yours, and so is what you do with the results.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from internvl_batch.config import PipelineConfig
from internvl_batch.config_loader import load_config


class Processor:
    """Checks the model once (config, tokenizer, weights' names and shapes), then applies the pipeline to any
    number of datasets."""

    def __init__(
        self,
        config: PipelineConfig | dict | str | Path,
        overrides: list[str] | None = None,
        base_uri: str | None = None,
    ) -> None:
        if isinstance(config, PipelineConfig):
            self.config = config
        elif isinstance(config, dict):
            self.config = load_config(None, overrides, base=config, schema=PipelineConfig)
        else:
            self.config = load_config(config, overrides, schema=PipelineConfig)
        self.base_uri = base_uri
        if self.config.fetch.local_roots is None:  # local media: the working directory and base_uri's tree
            from internvl_batch.local_media import default_local_roots

            roots = default_local_roots([base_uri] if base_uri else [], local_run=True)
            self.config = self.config.model_copy(
                update={"fetch": self.config.fetch.model_copy(update={"local_roots": roots})}
            )
        from internvl_batch.job import check_model
        from internvl_batch.model.locate import display_name

        check_model(self.config)
        self.model_name = display_name(self.config.model.path)
        self.run_id = f"api-{uuid.uuid4().hex[:12]}"

    def __call__(self, dataset, passthrough: list[str] | None = None):
        """Result rows for `dataset` (a `ray.data.Dataset`), lazily. `passthrough`: input columns to carry to
        the output; default every column that is not one of the manifest's own (id, image, question, ...)."""
        from internvl_batch.manifest.rows import RESERVED
        from internvl_batch.pipeline import build_api_dataset

        if passthrough is None:
            passthrough = [name for name in dataset.schema().names if name not in RESERVED]
        return build_api_dataset(dataset, self.config, self.model_name, self.run_id, self.base_uri, passthrough)
