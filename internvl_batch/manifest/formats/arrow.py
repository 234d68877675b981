"""Arrow IPC manifests (`input.format: arrow`, `.arrow`, `.arrows`, `.feather`): Hugging Face `datasets`
save_to_disk shards, `.arrow` files.

`datasets` writes its shards (`data-00000-of-00001.arrow`) in the Arrow IPC *stream* format; pyarrow's
`new_file` and Feather v2 write the IPC *file* format, which is the same messages between a magic number and
a footer. Both are read; Feather v1 (`FEA1`) is not (the error says how to convert it).

A file is read in parallel like a Parquet file: the layout step reads only the message headers (the record
count and body length of each record batch, and where it starts), skipping the bodies, and `ArrowFormat.units`
cuts the batches into runs of about `input.split_bytes` by byte offset. A unit then reads its batches from
its offsets. Files with dictionary-encoded columns (never written by `datasets`) need every dictionary
message before their batches: such a file is one unit, read in order from its start (`ReadUnit.start` 0).

Rows are made as for Parquet (`parquet.bounded_rows`): an `Image` feature (struct {bytes, path}) or encoded
bytes in `image`/`images`/`document` are the row's images; a cell over `fetch.max_bytes` makes its row an
error row. A record batch is read whole (Arrow's unit), so before reading one its stored size is checked: a
batch larger than its rows x (`fetch.max_bytes` + 1 MiB for the other columns) is not read, and its rows are
error rows (a compressed body is bounded by its stored size only). A file that is not Arrow, or is cut short,
is a `ConfigError` naming it, as an unreadable Parquet file is.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import replace
from typing import NamedTuple

from internvl_batch.config import StorageConfig
from internvl_batch.errors import ConfigError
from internvl_batch.filesystems import fsspec_filesystem, is_local, local_path
from internvl_batch.manifest.formats.base import ManifestFormat, RowCounts, runs
from internvl_batch.manifest.formats.parquet import bounded_rows, media_columns
from internvl_batch.manifest.row_errors import row_error
from internvl_batch.manifest.units import ReadUnit, check_id_column, open_manifest

CONTINUATION = b"\xff\xff\xff\xff"
SCHEMA, DICTIONARY, RECORD_BATCH = 1, 2, 3  # flatbuf MessageHeader values (Arrow's Message.fbs)
ROW_ALLOWANCE = 2**20  # bytes per row allowed for the columns other than media when bounding a batch


class ArrowFormat(ManifestFormat):
    name = "arrow"
    title = "Arrow"
    # `datasets` save_to_disk shards (stream format), `.arrows` streams, Feather v2 files.
    suffixes = (".arrow", ".arrows", ".feather")

    def needs_layout(self, unit: ReadUnit) -> bool:
        return True

    def layout(self, unit: ReadUnit, storage: StorageConfig) -> list[tuple[int, int, int, int]]:
        return arrow_batches(unit.file.uri, storage, unit.file.id_field)

    def units(
        self, planned: list[ReadUnit], layouts: list[object], split_bytes: int, first_index: int
    ) -> list[ReadUnit]:
        """Runs of consecutive record batches of about `split_bytes`, as byte offsets, numbered by first row."""
        out: list[ReadUnit] = []
        for unit, batches in zip(planned, layouts):
            for start, stop, first in runs([(rows, size) for rows, size, *_ in batches], split_bytes):
                # (A file whose batches cannot be read apart is laid out as one batch at offset 0: read whole.)
                begin, end = (batches[start][2], batches[stop - 1][3]) if stop > start else (unit.file.size,) * 2
                out.append(replace(unit, index=first_index + len(out), start=begin, stop=end, first_line=first))
        return out

    def rows(self, unit: ReadUnit, storage: StorageConfig, counts: RowCounts) -> Iterator[tuple[int, object]]:
        return arrow_rows(unit, storage, unit.file.id_field)


class Header(NamedTuple):
    """One IPC message, from its header alone: its kind, rows (record batches), body bytes and extent."""

    kind: int
    rows: int
    body: int
    start: int
    end: int


def arrow_batches(uri: str, storage: StorageConfig, id_field: str | None = "id") -> list[tuple[int, int, int, int]]:
    """The layout of an Arrow IPC file: (rows, body bytes, start offset, end offset) per record batch, read
    from the message headers only. A file with dictionary messages is laid out as one batch at offset 0 (it
    is read whole, in order). The file must have the `id_field` column unless that is None."""
    with _Opened(uri, storage) as (f, size):
        begin = _stream_start(f, uri)
        schema, position = _schema(f, begin, size, uri)
        check_id_column(uri, schema.names, id_field)
        batches = []
        while (header := _header(f, position, size, uri)) is not None:
            if header.kind == DICTIONARY:
                return [(0, size, 0, size)]
            if header.kind == RECORD_BATCH:
                batches.append((header.rows, header.body, header.start, header.end))
            position = header.end
        return batches


def arrow_rows(unit: ReadUnit, storage: StorageConfig, id_field: str | None = "id") -> Iterator[tuple[int, object]]:
    """The unit's record batches as (row number, raw row or ManifestError), in file order."""
    import pyarrow as pa

    uri = unit.file.uri
    media = media_columns(unit)
    limit = unit.file.max_media_bytes
    number = unit.first_line
    with _Opened(uri, storage) as (f, size):
        begin = _stream_start(f, uri)
        schema, _ = _schema(f, begin, size, uri)
        check_id_column(uri, schema.names, id_field)
        try:
            for rows, batch in _batches(f, unit, begin, schema, size, limit):
                if batch is None:  # over the bound: not read
                    for _ in range(rows):
                        yield number, row_error(_too_big(rows, limit), None)
                        number += 1
                    continue
                for row in bounded_rows(pa.Table.from_batches([batch]), id_field, media, limit, {}):
                    yield number, row
                    number += 1
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - a corrupt body: the file, as for Parquet
            raise ConfigError(f"manifest {uri}: not a readable Arrow file: {type(exc).__name__}: {exc}") from None


def _batches(f, unit: ReadUnit, begin: int, schema, size: int, limit: int | None):
    """(rows, RecordBatch or None when over the bound) for the unit's batches."""
    import pyarrow as pa

    if unit.start == 0:  # read whole, in order: the stream reader keeps the dictionaries
        f.seek(begin)
        for batch in pa.ipc.open_stream(f):
            yield batch.num_rows, batch
        return
    position = unit.start
    while position < unit.stop and (header := _header(f, position, size, unit.file.uri)) is not None:
        if header.kind == RECORD_BATCH:
            if limit is not None and header.body > header.rows * (limit + ROW_ALLOWANCE):
                yield header.rows, None
            else:
                f.seek(position)
                yield header.rows, pa.ipc.read_record_batch(pa.ipc.read_message(f), schema)
        position = header.end


def _too_big(rows: int, limit: int) -> str:
    return (
        f"a record batch of {rows} rows was not read: it is larger than fetch.max_bytes={limit} per row (plus "
        f"{ROW_ALLOWANCE} bytes for its other columns), so some image in it is over the limit"
    )


class _Opened:
    """(file, size): a local file memory-mapped (reading a batch copies nothing), others through fsspec."""

    def __init__(self, uri: str, storage: StorageConfig) -> None:
        self.uri, self.storage, self.file = uri, storage, None

    def __enter__(self):
        import pyarrow as pa

        if is_local(self.uri):
            try:
                self.file = pa.memory_map(local_path(self.uri), "r")
            except Exception as exc:  # noqa: BLE001
                raise ConfigError(f"manifest {self.uri}: cannot read: {type(exc).__name__}: {exc}") from None
            return self.file, self.file.size()
        fs, path = fsspec_filesystem(self.uri, self.storage)
        self.file = open_manifest(fs, path, self.uri)
        return self.file, self.file.size

    def __exit__(self, *exc) -> None:
        self.file.close()


def _stream_start(f, uri: str) -> int:
    """Where the messages start: after the magic number of the IPC file format, else at 0 (a stream)."""
    head = f.read(8)
    if head.startswith(b"ARROW1"):
        return 8
    if head.startswith(CONTINUATION) or (len(head) >= 4 and 0 < struct.unpack_from("<i", head)[0] < 2**24):
        return 0  # a stream (the pre-1.0 one has no continuation marker)
    if head.startswith(b"FEA1"):
        raise ConfigError(
            f"manifest {uri}: a Feather v1 file, which is not read; convert it to Feather v2 (Arrow IPC) with "
            "pyarrow.feather.write_feather(pyarrow.feather.read_table(path), new_path)"
        )
    raise ConfigError(f"manifest {uri}: not an Arrow IPC file or stream (it starts with {head[:8]!r})")


def _schema(f, begin: int, size: int, uri: str):
    """(the schema, where the message after it starts)."""
    import pyarrow as pa

    header = _header(f, begin, size, uri)
    if header is None or header.kind != SCHEMA:
        raise ConfigError(f"manifest {uri}: not a readable Arrow file: it does not start with a schema")
    f.seek(begin)
    try:
        return pa.ipc.read_schema(pa.ipc.read_message(f)), header.end
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"manifest {uri}: not a readable Arrow file: {type(exc).__name__}: {exc}") from None


def _header(f, position: int, size: int, uri: str) -> Header | None:
    """The message at `position`, from its prefix and metadata only; None at the end of the stream."""
    f.seek(position)
    prefix = f.read(4)
    if len(prefix) < 4:
        return None  # the end of the file (a stream without its end marker)
    offset = 4
    if prefix == CONTINUATION:
        prefix = f.read(4)
        offset = 8
    length = struct.unpack("<i", prefix)[0] if len(prefix) == 4 else -1
    if length == 0:
        return None  # the end-of-stream marker
    metadata = f.read(length) if length > 0 else b""
    try:
        if length < 0 or len(metadata) < length:
            raise ValueError("cut short")
        kind, rows, body = _message_fields(metadata)
    except (ValueError, struct.error, IndexError) as exc:
        raise ConfigError(
            f"manifest {uri}: not a readable Arrow file: bad message at byte {position} ({exc})"
        ) from None
    end = position + offset + length + body
    if end > size:
        raise ConfigError(
            f"manifest {uri}: not a readable Arrow file: it is cut short (a message at byte {position} ends at byte "
            f"{end}, the file has {size})"
        )
    return Header(kind, rows, body, position, end)


def _message_fields(buf: bytes) -> tuple[int, int, int]:
    """(header kind, record batch rows, body length) from a Message flatbuffer (Arrow's Message.fbs: table
    Message {version: short, header: MessageHeader (a union: its type byte, then its table), bodyLength: long};
    table RecordBatch {length: long, ...}). pyarrow offers no way to read a header without its body."""

    def field(table: int, index: int) -> int:  # the field's position, or 0 when it holds its default
        vtable = table - struct.unpack_from("<i", buf, table)[0]
        slot = 4 + 2 * index
        if slot >= struct.unpack_from("<H", buf, vtable)[0]:
            return 0
        at = struct.unpack_from("<H", buf, vtable + slot)[0]
        return table + at if at else 0

    root = struct.unpack_from("<I", buf, 0)[0]
    kind_at, header_at, body_at = field(root, 1), field(root, 2), field(root, 3)
    kind = buf[kind_at] if kind_at else 0
    body = struct.unpack_from("<q", buf, body_at)[0] if body_at else 0
    rows = 0
    if kind == RECORD_BATCH and header_at:
        batch = header_at + struct.unpack_from("<I", buf, header_at)[0]
        length_at = field(batch, 0)
        rows = struct.unpack_from("<q", buf, length_at)[0] if length_at else 0
    if body < 0 or rows < 0:
        raise ValueError("negative length")
    return kind, rows, body
