"""Manifests: which files a pattern stands for (`discover`), files and read units (`units`, `files`), reading a
unit (`read`), checking a row (`rows`). Each input format is one module of `formats` and one line of its
registry (`formats.REGISTRY`: JSONL, CSV, Parquet, Arrow IPC, WebDataset); the rest asks the registry.

The driver only lists files and plans units; rows are read on the workers (`internvl_batch.manifest.scan`,
`internvl_batch.stages.read`). `read_manifests` runs the same passes in one process, for tests and tools.
"""

from internvl_batch.errors import ManifestError
from internvl_batch.manifest.files import expand_manifests
from internvl_batch.manifest.rows import RESERVED, ParsedRow, parse_row, resolve_relative
from internvl_batch.manifest.units import ManifestFile, ReadUnit

__all__ = [
    "RESERVED",
    "ManifestError",
    "ManifestFile",
    "ParsedRow",
    "ReadUnit",
    "expand_manifests",
    "parse_row",
    "resolve_relative",
]
