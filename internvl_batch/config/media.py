"""Config sections of the media: tiling, video sampling, fetching, object stores."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from internvl_batch.config.base import Section

# Pillow refuses images above 2x this many pixels by default; we make the limit explicit and configurable.
DEFAULT_MAX_PIXELS = 178_956_970


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
    isolate_decoding: bool = Field(
        True,
        description="Decode media (images, video frames, PDF pages) in a child process of each CPU actor, so "
        "that a decoder crash or hang on a hostile file costs that row (`DecoderCrashed`, `DecodeTimeout`) "
        "instead of the actor; false decodes in the actor itself.",
    )
    decode_timeout_s: float = Field(
        120.0,
        gt=0,
        description="A row whose media are not decoded within this time becomes `decode: DecodeTimeout` and its "
        "decoder process is replaced (with isolate_decoding). Generous: a long video or a 50-page PDF "
        "takes seconds.",
    )
    decoder_memory_mb: int = Field(
        8192,
        ge=0,
        description="Virtual-memory limit of the decoder process in MiB (0: none); an allocation beyond it fails "
        "that row instead of exhausting the node.",
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
    decoder: Literal["auto", "pyav", "decord"] = Field(
        "auto",
        description="Video decoder: pyav (FFmpeg in its wheels, every platform; decord's frame numbering), decord "
        "(the reference's; the `decord` extra, x86_64 Linux wheels only; imported only when chosen), or auto "
        "(PyAV: the same pixels as decord but for 10-bit video, BENCHMARKS.md).",
    )
    ranged_reads: bool = Field(
        True,
        description="With PyAV, read MP4/MOV videos on object stores (s3://, gs://, az://) in byte ranges: the "
        "index (moov, at the start or the end) and the sampled frames' groups of pictures, not the whole object "
        "(its size is still checked against max_bytes first). Other containers, and decord, download the file.",
    )


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
        description="Most seconds one read (an HTTP(S) request, or an object-store read: its size, then its "
        "bytes) may take in all, however slowly its bytes arrive (a read that runs out of time is retried like a "
        "timeout).",
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
    local_roots: list[str] | None = Field(
        None,
        description="Directories under which media given as local paths or file:// URIs may be read (after "
        "symlinks are resolved). Default (null): each local manifest's directory tree, plus the working directory "
        "when the job starts its own local Ray (the Python API: the working directory and base_uri's directory). "
        "[] refuses every local read: set it on clusters fed by untrusted manifests. /proc, /sys and /dev are "
        "never read, and file:// URIs must name no host or localhost.",
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
