"""Manifests: which files a pattern stands for (`discover`), files and read units (`files`), reading a unit
(`read`; per format: `parquet`, `arrow`, `webdataset`), checking a row (`rows`).

The driver only lists files and plans units; rows are read on the workers (`internvl_batch.manifest.scan`,
`internvl_batch.stages.read`). `read_manifests` runs the same passes in one process, for tests and tools.
"""

from internvl_batch.errors import ManifestError
from internvl_batch.manifest.files import ManifestFile, ReadUnit, expand_manifests
from internvl_batch.manifest.rows import RESERVED, ParsedRow, parse_row, resolve_relative

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
