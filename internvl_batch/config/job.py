"""Config sections of a job: manifests in, results out, tasks, resources, the Ray cluster."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from internvl_batch.config.base import Section, _pair
from internvl_batch.config.model import PositiveInt
from internvl_batch.output_schema import clash_problem

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
DOCUMENT_SUFFIXES = (".pdf",)


class InputConfig(Section):
    manifests: list[str] = Field(
        default_factory=list,
        description="Manifest files: one path, a list, glob patterns, brace ranges (shard-{000000..000009}.tar: "
        "every shard named must exist) or folders; local paths, s3://, gs:// or az:// URIs. A folder stands for "
        "the manifest files in it (not img2dataset's metadata .parquet beside a .tar of the same name); a "
        "Hugging Face save_to_disk folder (state.json) for the .arrow files it lists; a Hugging Face Hub dataset "
        "repository (README.md, data/) for the files below data/. Rows have `id`, `image` (one URI) or `images` "
        "(a list), optional `question` and `task`, and an optional `version` (a row whose version differs from its "
        "result's is done again). Either this or `media` (or both) must be given.",
    )
    media: list[str] = Field(
        default_factory=list,
        description="Media roots read as they are, without a manifest: folders, prefixes or glob patterns "
        "(`photos/**/*.jpg`) of media objects; local paths, s3://, gs:// or az:// URIs. One row per object "
        "whose suffix is listed in media_image_suffixes, media_video_suffixes or media_document_suffixes (others "
        "are skipped and counted); its id from media_id, its task from task.name/task.tasks, its version (S3/Azure "
        "ETag, GCS generation, local size and mtime) recorded as the result's `source_version`, so that a "
        "replaced object is done again. Listed on the workers, one listing task per subfolder of a root.",
    )
    media_id: Literal["relative", "uri"] = Field(
        "relative",
        description="The id of a media object: relative = its path below the root it was listed under "
        "(`2024/07/cat.jpg`); uri = its full URI or absolute path.",
    )
    media_image_suffixes: list[str] = Field(
        default_factory=lambda: list(IMAGE_SUFFIXES),
        description="Suffixes (any case) of the objects under a media root read as images.",
    )
    media_video_suffixes: list[str] = Field(
        default_factory=lambda: list(VIDEO_SUFFIXES),
        description="Suffixes (any case) of the objects under a media root read as videos.",
    )
    media_document_suffixes: list[str] = Field(
        default_factory=lambda: list(DOCUMENT_SUFFIXES),
        description="Suffixes (any case) of the objects under a media root read as documents (PDF: a row per page).",
    )
    media_question: str | None = Field(
        None,
        description="The question asked of every media object (media roots have no question column): needed "
        "for task vqa, and the row's question for task auto (vqa with one, caption without).",
    )
    format: str = Field(
        "auto",
        description="Manifest format: auto = each file's from its extension, or the name of a registered format "
        "(internvl_batch.manifest.formats: its registry lists the names and the extensions each is chosen by) "
        "for every file; a name that is not registered is refused when the config loads.",
    )
    passthrough_columns: dict[str, str] = Field(
        default_factory=dict,
        description="Manifest columns copied unchanged into the output: a list of names, or a mapping from a "
        "manifest column to its name in the output ({source: source_dataset}) for a column whose name the output "
        "already uses (id, status, task, question, response, media, error, model, run_id, ...: refused, naming "
        "the clash, rather than overwritten or dropped). Values keep their type; the output's first run fixes "
        "it, and a later row whose value does not fit is an error row naming the column.",
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
    id_column: str | None = Field(
        "id",
        min_length=1,
        description="The manifest column read as `id` (WebDataset: a field of the sample's JSON; "
        "without one the sample's key is the id). null = no id column: every row's id is `<file>:<n>`, "
        "`<file>` the manifest's base name (its path below the common folder when two share a name) and `<n>` "
        "1-based: the line for JSONL and CSV (CSV: the line the record ends on; the header is line 1), the row "
        "for Parquet and Arrow (row 1 is datasets' index 0), the sample for WebDataset. The same name a row "
        "without a readable id gets anyway; stable while the files and their names are unchanged.",
    )

    @field_validator("manifests", "media", mode="before")
    @classmethod
    def _one_or_many(cls, value):
        return [value] if isinstance(value, str) else value

    @field_validator("passthrough_columns", mode="before")
    @classmethod
    def _names_or_renames(cls, value):
        if isinstance(value, str):
            value = [value]
        if isinstance(value, (list, tuple)):
            repeated = sorted({name for name in value if value.count(name) > 1})
            if repeated:
                raise ValueError(f"lists {', '.join(map(str, repeated))} more than once")
            return {name: name for name in value}
        return value

    @field_validator("passthrough_columns")
    @classmethod
    def _no_clash(cls, value):
        problem = clash_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("media_image_suffixes", "media_video_suffixes", "media_document_suffixes")
    @classmethod
    def _suffixes(cls, value):
        bad = [s for s in value if not s.startswith(".") or len(s) < 2]
        if bad:
            raise ValueError(f"suffixes start with a dot (.jpg), got {', '.join(map(repr, bad))}")
        return [s.lower() for s in value]

    @model_validator(mode="after")
    def _some_input(self):
        if not self.manifests and not self.media:
            raise ValueError("no input: set input.manifests (manifest files) or input.media (media roots)")
        kinds = [self.media_image_suffixes, self.media_video_suffixes, self.media_document_suffixes]
        shared = sorted(set(kinds[0]) & set(kinds[1]) | set(kinds[0]) & set(kinds[2]) | set(kinds[1]) & set(kinds[2]))
        if shared:
            raise ValueError(f"media suffixes listed for two kinds: {', '.join(shared)}")
        return self


class OutputConfig(Section):
    path: str = Field(
        description="Output directory (local path or s3:// URI): result files (Parquet) go to `<path>/data/` (point "
        "Parquet readers there), the summary, run records and report to `<path>/.internvl-batch/`."
    )
    resume: bool = Field(
        True,
        description="Process only ids without a result under the output path (incremental runs); false discards earlier results and starts over.",
    )
    retry_errors: bool = Field(False, description="When resuming, also reprocess ids whose latest result is an error.")
    on_config_change: Literal["error", "reprocess", "keep"] = Field(
        "error",
        description="When the output holds results of the rows being read that were made with another model, "
        "prompt, generation or preprocessing setting (their `config_fingerprint` differs): error = stop before "
        "any work (exit 2), naming the settings that changed; reprocess = do again every such (id, task) (a model "
        "upgrade re-captions the library incrementally and resumably); keep = keep those answers and do only "
        "keys without one (later runs then accept them too).",
    )
    force: bool = Field(
        False,
        description="Write into a directory that holds files this job did not write (refused otherwise, with "
        "resume or not). Even then only the job's own files are ever deleted (resume: false deletes its result "
        "files, of runs recorded in .internvl-batch/runs/, or _runs/ in an output of the previous layout). An empty path, a filesystem root and the home directory are refused "
        "regardless (`--force` on the command line).",
    )
    rows_per_file: int = Field(1000, ge=1, description="Rows per result file (each file is written atomically).")
    max_error_fraction: float = Field(
        0.1,
        ge=0,
        le=1,
        description="If more than this share of the rows processed in a run fail, the job exits non-zero (after writing everything).",
    )
    report: bool = Field(
        False,
        description="Write `<output>/.internvl-batch/report.html` at the end of a run: a self-contained page with a sample of "
        "answers beside their pictures, failures by stage and type, and plots (also `internvl-batch report OUTPUT`).",
    )
    crashed_rows_exit_code: int = Field(
        3,
        ge=0,
        le=255,
        description="Exit code of a run that otherwise succeeded but has rows on which model replicas kept "
        "dying (`generate: ReplicaCrashed`, see resources.max_crashes_per_row); 0 treats them as any failed row.",
    )


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
    gpu_batch_size: PositiveInt | Literal["auto"] = Field(
        "auto",
        description="Rows handed to a model replica per call; auto = 256 where the replicas run on GPUs, 32 on "
        "CPU. The static engine keeps its slots full only while the call has rows waiting (a row that finishes "
        "hands its slot to a waiting one; the call's last rows finish with slots empty), so a call should hold "
        "several times the rows that generate at once (batching.max_batch_rows and max_batch_tokens).",
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
    max_replica_load_deaths: int = Field(
        3,
        ge=1,
        le=100,
        description="A model replica whose process dies this many times while it loads the model (the node's "
        "memory is too small for it, a crash in a library) ends the job with one line naming it, instead of "
        "being restarted for ever.",
    )
    max_crashes_per_row: int = Field(
        2,
        ge=2,
        le=10,
        description="A model replica that dies (a crash, an accelerator fault) is restarted and its batch "
        "retried, the rows it was generating one at a time; a row on which replicas died this many times "
        "becomes a `generate: ReplicaCrashed` error row instead of being tried again. Raise it on clusters "
        "whose GPUs fault now and then: two transient faults in a row can hit the same row.",
    )

    _pairs = field_validator("cpu_actors", "gpu_replicas", mode="before")(lambda cls, v: _pair(v))

    @field_validator("cpu_actors", "gpu_replicas")
    @classmethod
    def _ordered(cls, value):
        if not 1 <= value[0] <= value[1]:
            raise ValueError(f"need 1 <= min <= max, got {list(value)}")
        return value


class RayConfig(Section):
    address: str | None = Field(
        None, description="Ray cluster address; default: RAY_ADDRESS (set by `ray job submit`), else a new local Ray."
    )
