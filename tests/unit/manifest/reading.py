"""Manifests read as the job reads them (`manifest.local.read_manifests`: the scan and the read stage in one
process), for the manifest tests."""

from internvl_batch.config_loader import load_config
from internvl_batch.manifest.local import read_manifests
from tests.media import encode, make_photo


def photo(seed: int) -> bytes:
    return encode(make_photo(96, 64, seed=seed), "JPEG")


def read_rows(manifests, **input_options):
    """(request rows as dicts, the scan's totals, the manifest report) for `input.manifests` and options."""
    config = load_config(
        None,
        base={
            "input": {"manifests": [str(m) for m in manifests], **input_options},
            "output": {"path": "unused"},
            "model": {"path": "tiny"},
        },
    )
    table, totals, report = read_manifests(config)
    return (table.to_pylist() if table is not None else []), totals, report
