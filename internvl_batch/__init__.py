"""internvl-batch: InternVL 2.5 batch inference on Ray."""

__version__ = "0.1.0"


def read_results(output_path, storage=None, columns=None, **options):
    """Exactly one current row per id and task under a job's output path (options: `drop_orphans`, `documents`;
    see `internvl_batch.results.read_results`)."""
    from internvl_batch.results import read_results as _read

    return _read(output_path, storage, columns, **options)
