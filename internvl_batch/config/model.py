"""Config sections of the model: which checkpoint and how to run it, decoding, GPU micro-batches."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from internvl_batch.config.base import Section


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
