"""Shared fixtures: tiny checkpoints written by the project's own generator and loaded by its real loader."""

from __future__ import annotations

import logging
import os
import secrets
import sys

import pytest

logging.getLogger("transformers").setLevel(logging.ERROR)

# Ray reads its authentication settings once, when it is first imported, and a test process (an xdist worker)
# may import it in any test module: set them before any test module is imported. Token authentication is what
# `ray start` uses by default; the local clusters of the tests get the same.
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(16))


_ray_local_modules: set[str] = set()


def pytest_collection_modifyitems(items):
    # The modules that use the shared local Ray cluster (`ray_local`) run first and one after another, so
    # that they start it once (~10 s each time); otherwise the order is unchanged.
    _ray_local_modules.update(item.module.__name__ for item in items if "ray_local" in item.fixturenames)
    items.sort(key=lambda item: item.module.__name__ not in _ray_local_modules)


def pytest_runtest_setup(item):
    # The shared local Ray cluster of the integration tests (`ray_local`) stays up from one module that uses it
    # to the next, and is shut down before a module that does not: its processes would only take CPU from it.
    if item.module.__name__ not in _ray_local_modules and "tests.integration.conftest" in sys.modules:
        sys.modules["tests.integration.conftest"].stop_shared_ray()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A tiny original-layout (published InternVL 2.5 layout) checkpoint, seed 0."""
    from internvl_batch.model.tiny import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-original", layout="original", seed=0)


@pytest.fixture(scope="session")
def tiny_hf_checkpoint(tmp_path_factory):
    """The same tiny model (seed 0) in transformers' native layout."""
    from internvl_batch.model.tiny import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-hf", layout="hf", seed=0)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_checkpoint):
    from internvl_batch.model.checkpoint import read_checkpoint_info
    from internvl_batch.model.tokenizer import load_tokenizer

    return load_tokenizer(read_checkpoint_info(tiny_checkpoint))


@pytest.fixture(scope="session")
def tiny_internlm2_6b_checkpoint(tmp_path_factory):
    """A tiny original-layout checkpoint with an InternLM2 LLM and an InternViT-6B-style vision tower."""
    from internvl_batch.model.tiny import make_tiny_checkpoint

    return make_tiny_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "tiny-internlm2-6b", llm="internlm2", vision="6b-style"
    )
