"""The job's typed configuration. Every field is described; YAML files in `configs/` only load into this.

Sections: `input` (manifests), `output`, `model`, `preprocess` (tiling), `generation` (decoding), `batching`
(GPU micro-batches), `task` (default prompt), `resources` (actors and batch sizes), `fetch` (media reads),
`storage` (object store), `ray`. Unknown keys are errors everywhere (`extra="forbid"`), so a typo never
silently does nothing. Credentials are never part of the config: they come from the environment or the
standard AWS chain (`AWS_ACCESS_KEY_ID`, profiles, instance/pod roles).

Loading (YAML + `--set a.b=value` overrides) and one-line error messages live in `config_loader.py`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from internvl_batch.imaging.decode import DEFAULT_MAX_PIXELS


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(Section):
    path: str = Field(
        description="Checkpoint: a local directory (original InternVL 2.5 layout or native transformers layout), "
        "an s3:// or gs:// prefix (staged once per node), a Hugging Face Hub id such as OpenGVLab/InternVL2_5-4B "
        "(downloaded without its Python files), or `tiny` / `tiny:SEED` (the project's tiny random checkpoint)."
    )
    cache_dir: str | None = Field(
        None,
        description="Where s3:// models and the tiny checkpoint are staged on each node (and Hub downloads "
        "go under <cache_dir>/hub); default $INTERNVL_BATCH_CACHE or ~/.cache/internvl-batch (Hub: HF_HOME).",
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32", "float64"] = Field(
        "auto", description="Weights and activations dtype; auto = bfloat16 on CUDA, float32 on CPU."
    )
    device: str = Field(
        "auto", description="Torch device for a one-device replica; auto = cuda if available, else cpu."
    )
    attn_implementation: Literal["auto", "flash_attention_2", "sdpa", "eager"] = Field(
        "auto", description="Attention kernel; auto = flash_attention_2 when importable on CUDA, else sdpa."
    )
    gpus_per_replica: int = Field(
        1, ge=1, le=16, description="GPUs one model replica uses (one Ray actor); ignored on a cluster without GPUs."
    )


class PreprocessConfig(Section):
    max_num: int | None = Field(
        None,
        ge=1,
        le=64,
        description="Most tiles per image (thumbnail excluded); default: the checkpoint's max_dynamic_patch (12).",
    )
    min_num: int | None = Field(
        None, ge=1, le=64, description="Fewest tiles per image; default: the checkpoint's min_dynamic_patch (1)."
    )
    use_thumbnail: bool | None = Field(
        None,
        description="Append a whole-image thumbnail tile when an image is cut into several; default: the checkpoint's use_thumbnail.",
    )
    exif_transpose: bool = Field(
        True, description="Apply EXIF orientation (phone photos). false reproduces the reference bit for bit."
    )
    mode: Literal["exact", "fast"] = Field(
        "exact",
        description="exact = the reference's pixels; fast = cheaper decoding/resizing with small, measured "
        "pixel deviations (BENCHMARKS.md), for large photos when throughput matters more than bit-exactness.",
    )
    max_pixels: int = Field(
        DEFAULT_MAX_PIXELS,
        ge=1,
        description="Images with more pixels are refused from their header (decompression bombs).",
    )
    max_images_per_row: int = Field(16, ge=1, description="Rows with more images than this become error rows.")
    max_pages: int = Field(
        50,
        ge=1,
        le=10000,
        description="PDF documents with more pages become one error row (`limits`). A document's "
        "pages are prepared together: about max_pages x 7.5 MB of tiles at max_num 12.",
    )
    multi_image_max_num: int | None = Field(
        None,
        ge=1,
        le=64,
        description="Tile budget per image in multi-image rows; default: max(1, max_num // images), the reference's rule.",
    )

    @model_validator(mode="after")
    def _order(self):
        if self.max_num is not None and self.min_num is not None and self.min_num > self.max_num:
            raise ValueError(f"min_num ({self.min_num}) must not exceed max_num ({self.max_num})")
        return self


class VideoConfig(Section):
    num_segments: int = Field(
        8, ge=1, description="Frames sampled per video when the row has no `num_segments` (the model card uses 8)."
    )
    max_segments: int = Field(
        64,
        ge=1,
        le=1024,
        description="Most frames per video a row may ask for (each frame is 256 tokens; ~40 fit on 80 GB with 8B).",
    )
    max_duration_s: float = Field(4 * 3600.0, gt=0, description="Longer videos become error rows.")
    max_bytes: int = Field(
        2 * 2**30,
        ge=1,
        description="Larger video files become error rows (checked before download); a video row needs about this much memory at worst.",
    )
    in_memory_max_bytes: int = Field(
        64 * 2**20,
        ge=0,
        description="Remote videos up to this size are decoded from memory; larger ones from a "
        "temporary file (removed after the row), so memory does not grow with the file (decord holds ~2 copies).",
    )
    temp_dir: str | None = Field(None, description="Directory for temporary video files; default: the system's.")


class GenerationConfig(Section):
    max_new_tokens: int = Field(
        1024,
        ge=1,
        le=32768,
        description="Most tokens any row may generate; each task preset has its own lower default (tasks.py).",
    )
    max_input_tokens: int | None = Field(
        None,
        ge=1,
        description="Rows whose prompt (image tokens included) is longer become error rows; default: "
        "the model's context length minus max_new_tokens.",
    )
    do_sample: bool = Field(
        False, description="Sample instead of greedy decoding (greedy is the default and deterministic)."
    )
    temperature: float = Field(1.0, gt=0, description="Sampling temperature (do_sample only).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass (do_sample only).")
    top_k: int = Field(0, ge=0, description="Sample among the k most likely tokens; 0 = no limit (do_sample only).")
    seed: int | None = Field(
        None, description="Seed set before each micro-batch when sampling; sampled text then also depends on batching."
    )
    min_new_tokens: int = Field(
        0, ge=0, description="Generate at least this many tokens (ignores the stop token before; for benchmarks)."
    )


class BatchingConfig(Section):
    max_batch_rows: int = Field(32, ge=1, description="Most rows in one GPU micro-batch.")
    max_batch_tokens: int = Field(
        65536, ge=1, description="Most tokens in one micro-batch, counted as rows x (longest prompt + max_new_tokens)."
    )
    max_batch_tiles: int = Field(128, ge=1, description="Most image tiles in one micro-batch (vision tower memory).")
    vision_chunk_tiles: int = Field(64, ge=1, description="Tiles per vision-tower forward pass within a micro-batch.")
    max_padding_fraction: float = Field(
        0.25,
        ge=0,
        le=1,
        description="A micro-batch closes before a row that would make more than this share of its prefill padding.",
    )


def _pair(value):
    # Accept `4` as shorthand for a fixed pool `[4, 4]`.
    return (value, value) if isinstance(value, int) else value


class InputConfig(Section):
    manifests: list[str] = Field(
        description="Manifest files: one path, a list, glob patterns or directories; local paths, s3:// or gs:// URIs. Rows have "
        "`id`, `image` (one URI) or `images` (a list), optional `question` and `task`."
    )
    format: Literal["auto", "jsonl", "csv", "parquet", "webdataset"] = Field(
        "auto",
        description="Manifest format; auto = by extension (.jsonl/.json, .csv, .parquet, .tar = webdataset: "
        "tar shards of samples, <key>.jpg|png|webp... with optional <key>.json / <key>.txt, one row per sample).",
    )
    passthrough_columns: list[str] = Field(
        default_factory=list, description="Manifest columns copied unchanged into the output."
    )
    duplicate_ids: Literal["error", "keep_first"] = Field(
        "error",
        description="Rows sharing an id: error = stop before any model work, naming a few; keep_first = "
        "process the first occurrence in manifest order only. Found by a distributed pass over the ids.",
    )
    split_bytes: int = Field(
        16 * 2**20,
        ge=1,
        description="Manifests are read in parallel on the workers in units of about this "
        "size: JSONL in byte ranges, Parquet in runs of row groups; CSV one file per unit (quoted fields may hold "
        "newlines).",
    )
    image_column: str = Field(
        "image",
        min_length=1,
        description="The manifest column read as `image`: a URI, or the image itself (encoded "
        "bytes, or a Hugging Face datasets `Image` struct {bytes, path}, as Parquet datasets hold them).",
    )
    images_column: str = Field(
        "images",
        min_length=1,
        description="The manifest column read as `images`: a list of URIs or of images (as for image_column).",
    )
    id_column: str = Field(
        "id",
        min_length=1,
        description="The manifest column read as `id` (WebDataset: a field of the sample's JSON; "
        "without one the sample's key is the id).",
    )

    @field_validator("manifests", mode="before")
    @classmethod
    def _one_or_many(cls, value):
        return [value] if isinstance(value, str) else value

    @field_validator("manifests")
    @classmethod
    def _not_empty(cls, value):
        if not value:
            raise ValueError("at least one manifest is needed")
        return value


class OutputConfig(Section):
    path: str = Field(
        description="Output directory (local path or s3:// URI); Parquet files and _summary.json go here."
    )
    resume: bool = Field(
        True,
        description="Process only ids without a result under the output path (incremental runs); false discards earlier results and starts over.",
    )
    retry_errors: bool = Field(False, description="When resuming, also reprocess ids whose latest result is an error.")
    rows_per_file: int = Field(1000, ge=1, description="Rows per result file (each file is written atomically).")
    max_error_fraction: float = Field(
        0.1,
        ge=0,
        le=1,
        description="If more than this share of the rows processed in a run fail, the job exits non-zero (after writing everything).",
    )


class TaskConfig(Section):
    """Presets and their prompts are listed in `internvl_batch/tasks.py` and the README."""

    name: str = Field(
        "auto",
        description="Task of rows without a `task` column: caption, caption_detailed, caption_one_sentence, "
        "ocr, vqa, vqa_short, ground, custom, json; auto = vqa for rows with a `question`, caption for the others.",
    )
    tasks: list[str] | None = Field(
        None,
        description="Run several tasks on every row in one pass (e.g. [caption, ocr]): each image is fetched "
        "and tiled once; one output row per (id, task). Overrides `name` and the rows' `task` column.",
    )
    prompts: dict[str, str] = Field(
        default_factory=dict,
        description="Replace a fixed preset prompt, e.g. {caption: 'Describe the photo in one sentence.'}.",
    )
    template: str | None = Field(
        None,
        description="Prompt template of the `custom` task (and optionally `json`), filled from the row's "
        "columns: 'Describe the {category} in this photo'. The columns are read from the manifest automatically.",
    )
    json_schema: dict | None = Field(
        None,
        description="JSON Schema the `json` task's answers must match (e.g. a pydantic model's "
        "model_json_schema()); it also types the output's `parsed` column.",
    )
    json_instruction: str | None = Field(
        None,
        description="Instruction appended for the `json` task; {schema} is replaced by the schema. Default: "
        "'Answer with only a JSON object that follows this JSON Schema:\\n{schema}'.",
    )
    max_new_tokens: dict[str, int] = Field(
        default_factory=dict,
        description="Per-task generation limit, e.g. {ocr: 2048}; otherwise the preset's, capped by generation.max_new_tokens.",
    )

    @property
    def json_schema_text(self) -> str:
        import json

        return json.dumps(self.json_schema, ensure_ascii=False)

    @model_validator(mode="after")
    def _check(self):
        from internvl_batch.tasks import TASKS

        names = [self.name, *(self.tasks or [])]
        unknown = [n for n in names if n != "auto" and n not in TASKS]
        if unknown or "auto" in (self.tasks or []):
            raise ValueError(f"unknown task(s) {unknown or ['auto']}; presets: {', '.join(TASKS)}")
        for name in dict.fromkeys(n for n in names if n != "auto"):
            problem = TASKS[name].config_problem(self)
            if problem:
                raise ValueError(problem)
        return self


class ResourcesConfig(Section):
    cpu_actors: tuple[int, int] = Field(
        (1, 4),
        description="Preprocessing (fetch, decode, tile, tokenise) actors as (min, max); an int means a fixed pool.",
    )
    cpus_per_actor: float = Field(1.0, gt=0, description="CPUs reserved by each preprocessing actor.")
    cpu_batch_size: int = Field(8, ge=1, description="Rows per preprocessing call.")
    gpu_replicas: tuple[int, int] = Field(
        (1, 1), description="Model replicas (GPU actors) as (min, max); an int means a fixed pool."
    )
    gpu_batch_size: int = Field(
        32, ge=1, description="Rows handed to a model replica per call (split further into micro-batches)."
    )
    rows_per_block: int = Field(
        256,
        ge=1,
        description="Request rows per block read from the manifests: preprocessing actors take a block "
        "at a time (in cpu_batch_size pieces), so this bounds per-block overhead for rows that fail or finish "
        "fast, and the work one actor holds.",
    )
    wave_rows: int = Field(
        1_000_000,
        ge=1,
        description="Rows still to do are processed in waves of about this many, each a "
        "separate Ray Data execution (the actor pools, and so the model replicas, start again for each). Ray "
        "Data keeps a few KB on the driver for every block it has produced until its execution ends, so waves "
        "bound the driver's memory on long jobs; larger waves restart less often.",
    )
    write_actors: int = Field(
        2,
        ge=1,
        description="Most writer actors (they write result files; each reserves no CPU, and a file of "
        "output.rows_per_file rows takes tens of milliseconds locally, a few hundred on object storage).",
    )
    read_tasks: int = Field(
        4,
        ge=1,
        description="Most manifest read tasks running at once in the pipeline (each reads a unit of "
        "input.split_bytes and reserves no CPU: parsing is fast next to preprocessing).",
    )
    cpu_actor_resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources each preprocessing actor requests, to place "
        "them on labelled nodes (e.g. {cpu_pool: 1}, with `ray start --resources` on those nodes).",
    )
    replica_resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources each model replica requests, to place replicas "
        "on labelled nodes (e.g. {h100_node: 1}).",
    )
    accelerator: Literal["auto", "gpu", "cpu"] = Field(
        "auto",
        description="gpu = model replicas always request GPUs (an autoscaling cluster starts GPU nodes for "
        "them); cpu = never; auto = GPUs when the cluster has some when the job starts.",
    )
    actor_max_restarts: int = Field(
        -1, ge=-1, description="Restarts of a dead actor (a lost node, a crash); -1 = unlimited."
    )
    actor_max_task_retries: int = Field(-1, ge=-1, description="Retries of a batch whose actor died; -1 = unlimited.")

    _pairs = field_validator("cpu_actors", "gpu_replicas", mode="before")(lambda cls, v: _pair(v))

    @field_validator("cpu_actors", "gpu_replicas")
    @classmethod
    def _ordered(cls, value):
        if not 1 <= value[0] <= value[1]:
            raise ValueError(f"need 1 <= min <= max, got {list(value)}")
        return value


class FetchConfig(Section):
    retries: int = Field(
        3, ge=0, le=20, description="Retries of a transient read error (5xx, throttling, reset), with backoff."
    )
    backoff_s: float = Field(0.5, ge=0, description="First retry delay in seconds; doubles each retry.")
    timeout_s: float = Field(60.0, gt=0, description="Connect/read timeout of one object-store request, in seconds.")
    max_bytes: int = Field(
        256 * 2**20, ge=1, description="Image files larger than this become error rows (videos: video.max_bytes)."
    )
    threads: int = Field(16, ge=1, le=256, description="Concurrent reads per preprocessing actor.")
    deadline_s: float = Field(
        300.0,
        gt=0,
        description="Most seconds one HTTP(S) request may take in all, however slowly its bytes arrive "
        "(a timed-out request is retried like a timeout).",
    )
    max_redirects: int = Field(5, ge=0, le=30, description="HTTP(S) redirects followed per URL (each hop is checked).")
    max_retry_after_s: float = Field(
        30.0, ge=0, description="Longest wait honoured from an HTTP Retry-After header (429/503) before a retry."
    )
    allow_private_networks: bool = Field(
        False,
        description="Allow HTTP(S) media on loopback, private (10/8, 172.16/12, 192.168/16, fc00::/7) and other "
        "internal addresses. Link-local and cloud metadata addresses (169.254.0.0/16, fe80::/10) are refused always.",
    )


class StorageConfig(Section):
    endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, Ceph, moto); default AWS.")
    gcs_endpoint_url: str | None = Field(
        None, description="gs:// endpoint (a GCS emulator); default Google Cloud Storage (or STORAGE_EMULATOR_HOST)."
    )
    anonymous: bool = Field(
        False,
        description="Unsigned requests (public buckets and containers: S3, GCS, Azure); no credentials are looked up.",
    )
    region: str | None = Field(None, description="S3 region; default from the environment / AWS config.")


class RayConfig(Section):
    address: str | None = Field(
        None, description="Ray cluster address; default: RAY_ADDRESS (set by `ray job submit`), else a new local Ray."
    )


class PipelineConfig(Section):
    """Everything but where rows come from and go to: what the Python API (`internvl_batch.api`) takes."""

    model: ModelConfig = Field(description="Which checkpoint and how to run it.")
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig, description="Image tiling.")
    video: VideoConfig = Field(default_factory=VideoConfig, description="Video frame sampling and limits.")
    generation: GenerationConfig = Field(default_factory=GenerationConfig, description="Decoding.")
    batching: BatchingConfig = Field(default_factory=BatchingConfig, description="GPU micro-batches.")
    task: TaskConfig = Field(default_factory=TaskConfig, description="Default task and prompt.")
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig, description="Actors, GPUs and batch sizes.")
    fetch: FetchConfig = Field(default_factory=FetchConfig, description="Reading media.")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="Object store settings (no credentials).")
    ray: RayConfig = Field(default_factory=RayConfig, description="Ray cluster.")


class JobConfig(PipelineConfig):
    """A whole job: the pipeline, plus manifests in and Parquet out."""

    input: InputConfig = Field(description="Where the rows come from.")
    output: OutputConfig = Field(description="Where results go.")
