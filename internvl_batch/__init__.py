"""internvl-batch: InternVL 2.5 batch inference on Ray."""

__version__ = "0.1.0"


def read_results(output_path, storage=None, columns=None, **options):
    """Exactly one current row per id and task under a job's output path (options: `drop_orphans`, `documents`;
    see `internvl_batch.results.read_results`)."""
    from internvl_batch.results import read_results as _read

    return _read(output_path, storage, columns, **options)


def export_output(output_path, format, out, engine="auto", **options):
    """Export a job's output for another tool: `format` label-studio, coco, documents or text, into `out`;
    `options` are `internvl_batch.export.options.ExportOptions`' fields (storage, url_prefix, label_config,
    max_items_per_file, task, page_separator, drop_orphans, overwrite, ...). Returns the export's summary."""
    from internvl_batch.export.options import ExportOptions
    from internvl_batch.pipeline.export import export_output as _export

    return _export(output_path, ExportOptions(format=format, out=str(out), **options), engine)
