"""The pipeline on a Ray Dataset you already have: build a processor from a config, call it on a dataset of
rows, get a dataset of result rows back (in the spirit of Ray Data LLM's processors).

    import ray
    from internvl_batch.api import Processor

    processor = Processor({"model": {"path": "OpenGVLab/InternVL2_5-4B"}, "task": {"name": "caption"}})
    rows = ray.data.read_parquet("s3://bucket/catalog/")         # columns: id, image (URI), question, ...
    results = processor(rows)                                    # lazy: nothing runs yet
    results.write_parquet("s3://bucket/captions/")               # or .iter_batches(), .take(10), ...

Input rows use the manifest's columns (README, "Manifests"): `image` / `images` / `video` URIs (`s3://` or
absolute paths; relative ones resolve against the folder `base_uri` when given: `/data/media` and
`/data/media/` alike, and a local file's own folder), optional `id` (a row without one is named
`row:<digest of the row>`, `pipeline/api_rows.py`), `question`, `task`, `expression`, `bound`,
`num_segments`. Every other column is carried to the output unchanged. Output rows have the job's output
schema (`stages/output.py`): one per (input row, task), errors as rows.

On a small cluster the actor pools leave a CPU to the input dataset's own tasks (`pipeline/sizing.py`): a
dataset read by CPU tasks (`read_parquet`, `read_images`, ...) is processed on a 2-CPU machine too.

The config is the job's without `input` and `output` (`config.PipelineConfig`): model, task, generation,
batching, preprocess, video, resources, fetch, storage. The job's manifests, resume, duplicate-id check and
result files are not involved: the dataset is yours, and so is what you do with the results.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from internvl_batch.config import PipelineConfig
from internvl_batch.config_loader import load_config
from internvl_batch.filesystems import is_local, local_path
from internvl_batch.job import check_model
from internvl_batch.local_media import default_local_roots
from internvl_batch.manifest.rows import RESERVED
from internvl_batch.model.locate import display_name
from internvl_batch.output_schema import clash_problem
from internvl_batch.pipeline.dataset import build_api_dataset

# Media paths resolve against a manifest's location, i.e. the folder the manifest is in
# (`manifest.rows.MediaResolver`): the API's base folder is given as the location of a notional manifest in it.
NOTIONAL_MANIFEST = "(rows)"


def base_location(base_uri: str | None) -> str | None:
    """`base_uri`, a folder (with or without a trailing slash; a local file stands for its folder), as the
    location of a notional manifest in that folder, the form media paths and local roots resolve against."""
    if base_uri is None:
        return None
    if is_local(base_uri) and os.path.isfile(local_path(base_uri)):
        return base_uri
    return f"{base_uri.rstrip('/')}/{NOTIONAL_MANIFEST}"


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
        self._location = base_location(base_uri)
        if self.config.fetch.local_roots is None:  # local media: the working directory and base_uri's tree
            roots = default_local_roots([self._location] if base_uri else [], local_run=True)
            self.config = self.config.model_copy(
                update={"fetch": self.config.fetch.model_copy(update={"local_roots": roots})}
            )

        check_model(self.config)
        self.model_name = display_name(self.config.model.path)
        self.run_id = f"api-{uuid.uuid4().hex[:12]}"

    def __call__(self, dataset, passthrough: list[str] | dict[str, str] | None = None):
        """Result rows for `dataset` (a `ray.data.Dataset`), lazily. `passthrough`: input columns to carry to
        the output, as a list or as a mapping to output names ({"status": "download_status"}); default every
        column that is not one of the manifest's own (id, image, question, ...). A column whose output name the
        output already has (status, error, model, ...) raises ValueError naming the rename, before anything
        runs: a user's column is never overwritten or dropped."""
        if passthrough is None:
            passthrough = [name for name in dataset.schema().names if name not in RESERVED]
        renames = dict(passthrough) if isinstance(passthrough, dict) else {name: name for name in passthrough}
        problem = clash_problem(renames, option="passthrough")
        if problem:
            raise ValueError(f"Processor(dataset, passthrough=...): {problem}")
        return build_api_dataset(dataset, self.config, self.model_name, self.run_id, self._location, renames)
