"""Exports of a job's output into the tools its results are used in: Label Studio (pre-labels to correct), COCO
(detection boxes, captions), and OCR text per document (`text`: a file per document; `documents`: JSONL or
Parquet). `internvl-batch export OUT --format F --out PATH`, or `pipeline.export.export_output`. Each reads
only the current rows (the latest run's per id and task), in partitions by document id (`rows.py`), and never
holds the output.
"""
