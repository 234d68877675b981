"""Config sections of the model: which checkpoint and how to run it, decoding, GPU micro-batches."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from internvl_batch.config.base import Section

# A count of at least 1 (in unions with "auto", where a field-level `ge` cannot apply).
PositiveInt = Annotated[int, Field(ge=1)]


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
        "auto",
        description="Attention kernel; auto = sdpa with the static engine (its padded decode needs a mask, not "
        "flash-attention's unpadding); with generation.engine=generate, flash_attention_2 where flash-attn imports, "
        "the GPU is sm80 or newer and the dtype float16/bfloat16, else sdpa.",
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
    engine: Literal["auto", "static", "generate"] = Field(
        "auto",
        description="static = our decode loop: a static KV cache in row slots, no host synchronisation per "
        "step, rows leave at their stop token or limit and waiting rows take their slots (continuous batching); "
        "generate = transformers' `generate` per micro-batch (rows wait for the longest); auto = static.",
    )
    compile: bool | None = Field(
        None,
        description="Compile the static engine's decode step with torch.compile (CUDA graphs on GPU): one "
        "compile per (slots, cache length) bucket, reused across batches; default: on CUDA, off on CPU.",
    )
    poll_steps: int = Field(
        8,
        ge=1,
        le=256,
        description="Static engine: decode steps between checks for finished rows (each check is one small "
        "device-to-host copy; a finished row costs at most this many extra steps).",
    )


class BatchingConfig(Section):
    max_batch_rows: PositiveInt | Literal["auto"] = Field(
        "auto",
        description="Most rows generating at once on a replica (a micro-batch, or the static engine's slots); "
        "auto = what `internvl-batch plan` says fits the replica's GPU memory for this model, tiles and "
        "max_new_tokens (32 on CPU).",
    )
    max_batch_tokens: PositiveInt | Literal["auto"] = Field(
        "auto",
        description="Most tokens generating at once, counted as rows x (longest prompt + max_new_tokens); auto = "
        "from the same plan as max_batch_rows (65536 on CPU).",
    )
    max_batch_tiles: int = Field(128, ge=1, description="Most image tiles in one micro-batch (vision tower memory).")
    vision_chunk_tiles: int = Field(64, ge=1, description="Tiles per vision-tower forward pass within a micro-batch.")
    max_padding_fraction: float = Field(
        0.25,
        ge=0,
        le=1,
        description="A micro-batch closes before a row that would make more than this share of its prefill padding.",
    )
