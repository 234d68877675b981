"""The job's typed configuration. Every field is described; YAML files in `configs/` only load into this.

Sections: `input` (manifests), `output`, `model`, `preprocess` (tiling), `generation` (decoding), `batching`
(GPU micro-batches), `task` (default prompt), `prompt` (escaping), `resources` (actors and batch sizes), `fetch` (media reads),
`storage` (object store), `ray`. Unknown keys are errors everywhere (`extra="forbid"`), so a typo never
silently does nothing. Credentials are never part of the config: they come from the environment or the
standard AWS chain (`AWS_ACCESS_KEY_ID`, profiles, instance/pod roles).

Sections live in `base.py`, `model.py`, `media.py`, `task.py` and `job.py`; import them from here. Loading (YAML + `--set a.b=value` overrides) and one-line error messages live in `config_loader.py`.
"""

from __future__ import annotations

from pydantic import Field

from internvl_batch.config.base import Section
from internvl_batch.config.job import InputConfig, OutputConfig, RayConfig, ResourcesConfig
from internvl_batch.config.media import FetchConfig, PreprocessConfig, StorageConfig, VideoConfig
from internvl_batch.config.model import BatchingConfig, GenerationConfig, ModelConfig
from internvl_batch.config.task import PromptConfig, TaskConfig

__all__ = [
    "BatchingConfig",
    "FetchConfig",
    "GenerationConfig",
    "InputConfig",
    "JobConfig",
    "ModelConfig",
    "OutputConfig",
    "PipelineConfig",
    "PreprocessConfig",
    "PromptConfig",
    "RayConfig",
    "ResourcesConfig",
    "Section",
    "StorageConfig",
    "TaskConfig",
    "VideoConfig",
]


class PipelineConfig(Section):
    """Everything but where rows come from and go to: what the Python API (`internvl_batch.api`) takes."""

    model: ModelConfig = Field(description="Which checkpoint and how to run it.")
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig, description="Image tiling.")
    video: VideoConfig = Field(default_factory=VideoConfig, description="Video frame sampling and limits.")
    generation: GenerationConfig = Field(default_factory=GenerationConfig, description="Decoding.")
    batching: BatchingConfig = Field(default_factory=BatchingConfig, description="GPU micro-batches.")
    task: TaskConfig = Field(default_factory=TaskConfig, description="Default task and prompt.")
    prompt: PromptConfig = Field(default_factory=PromptConfig, description="How questions enter the prompt.")
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig, description="Actors, GPUs and batch sizes.")
    fetch: FetchConfig = Field(default_factory=FetchConfig, description="Reading media.")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="Object store settings (no credentials).")
    ray: RayConfig = Field(default_factory=RayConfig, description="Ray cluster.")


class JobConfig(PipelineConfig):
    """A whole job: the pipeline, plus manifests in and Parquet out."""

    input: InputConfig = Field(description="Where the rows come from.")
    output: OutputConfig = Field(description="Where results go.")
