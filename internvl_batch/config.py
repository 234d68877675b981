"""The job's typed configuration. Every field is described; YAML files in `configs/` only load into this.

Sections: `model` (what to load and how), `preprocess` (tiling), `generation` (decoding), `batching` (GPU
micro-batches). Unknown keys are errors everywhere (`extra="forbid"`), so a typo never silently does nothing.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from internvl_batch.imaging.decode import DEFAULT_MAX_PIXELS


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(Section):
    path: str = Field(
        description="Checkpoint: a local directory (original InternVL 2.5 layout or native transformers layout) "
        "or a Hugging Face Hub id such as OpenGVLab/InternVL2_5-4B (downloaded without its Python files)."
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32", "float64"] = Field(
        "auto", description="Weights and activations dtype; auto = bfloat16 on CUDA, float32 on CPU."
    )
    device: str = Field("auto", description="Torch device for a one-device replica; auto = cuda if available, else cpu.")
    attn_implementation: Literal["auto", "flash_attention_2", "sdpa", "eager"] = Field(
        "auto", description="Attention kernel; auto = flash_attention_2 when importable on CUDA, else sdpa."
    )


class PreprocessConfig(Section):
    max_num: int | None = Field(
        None, ge=1, le=64, description="Most tiles per image (thumbnail excluded); default: the checkpoint's max_dynamic_patch (12)."
    )
    min_num: int | None = Field(
        None, ge=1, le=64, description="Fewest tiles per image; default: the checkpoint's min_dynamic_patch (1)."
    )
    use_thumbnail: bool | None = Field(
        None, description="Append a whole-image thumbnail tile when an image is cut into several; default: the checkpoint's use_thumbnail."
    )
    exif_transpose: bool = Field(
        True, description="Apply EXIF orientation (phone photos). false reproduces the reference bit for bit."
    )
    max_pixels: int = Field(
        DEFAULT_MAX_PIXELS, ge=1, description="Images with more pixels are refused from their header (decompression bombs)."
    )

    @model_validator(mode="after")
    def _order(self):
        if self.max_num is not None and self.min_num is not None and self.min_num > self.max_num:
            raise ValueError(f"min_num ({self.min_num}) must not exceed max_num ({self.max_num})")
        return self


class GenerationConfig(Section):
    max_new_tokens: int = Field(256, ge=1, le=32768, description="Most tokens generated per row.")
    do_sample: bool = Field(False, description="Sample instead of greedy decoding (greedy is the default and deterministic).")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature (do_sample only).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass (do_sample only).")
    top_k: int = Field(0, ge=0, description="Sample among the k most likely tokens; 0 = no limit (do_sample only).")
    seed: int | None = Field(
        None, description="Seed set before each micro-batch when sampling; sampled text then also depends on batching."
    )


class BatchingConfig(Section):
    max_batch_rows: int = Field(32, ge=1, description="Most rows in one GPU micro-batch.")
    max_batch_tokens: int = Field(
        65536, ge=1, description="Most tokens in one micro-batch, counted as rows x (longest prompt + max_new_tokens)."
    )
    max_batch_tiles: int = Field(128, ge=1, description="Most image tiles in one micro-batch (vision tower memory).")
    vision_chunk_tiles: int = Field(64, ge=1, description="Tiles per vision-tower forward pass within a micro-batch.")
