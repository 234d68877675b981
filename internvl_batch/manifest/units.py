"""The values the manifest code passes around: a manifest file (`ManifestFile`) and a read unit (`ReadUnit`),
plus the two checks every format's reader shares (`open_manifest`, `check_id_column`).

This module sits below the formats (`manifest.formats`) and the generic code above them (`files`, `read`,
`scan`), so that both can use these values without importing each other. `files` re-exports the two classes.
"""

from __future__ import annotations

from dataclasses import dataclass

from internvl_batch.errors import ConfigError


@dataclass(frozen=True)
class MediaOptions:
    """How a media root (`input.media`) becomes rows: the kinds its suffixes select, how ids are named, the
    question every row asks."""

    image_suffixes: tuple[str, ...]
    video_suffixes: tuple[str, ...]
    document_suffixes: tuple[str, ...]
    id_mode: str = "relative"  # relative: the path below the root; uri: the object's full URI
    question: str | None = None

    def kind_of(self, name: str) -> str | None:
        """image | video | document for a name whose (lower-case) suffix is listed, else None."""
        name = name.lower()
        for kind, suffixes in (
            ("image", self.image_suffixes),
            ("video", self.video_suffixes),
            ("document", self.document_suffixes),
        ):
            if name.endswith(suffixes):
                return kind
        return None


@dataclass(frozen=True)
class ManifestFile:
    uri: str
    format: str  # a registered format's name (`manifest.formats`): jsonl | csv | parquet | arrow | webdataset
    size: int  # bytes
    label: str  # how error ids name the file: `<label>:<line>` (the base name unless two files share it)
    renames: tuple[tuple[str, str], ...] = ()  # (column in the file, name it is read as): input.image_column...
    max_media_bytes: int | None = None  # fetch.max_bytes for media held in the file (WebDataset, Parquet cells)
    row_ids: bool = False  # input.id_column: null: every row's id is `<label>:<line or row>`, none is read
    media: MediaOptions | None = None  # a media root (`input.media`, format `media`): `uri` is the root or pattern

    @property
    def id_field(self) -> str | None:
        """The column read as `id` (input.id_column), or None when ids are made from the row's position."""
        if self.row_ids:
            return None
        return next((old for old, new in self.renames if new == "id"), "id")


@dataclass(frozen=True)
class ReadUnit:
    """A part of one manifest file that one worker reads. What `start` and `stop` mean is the format's business
    (`ManifestFormat.plan` and `.units`): JSONL: a byte range; Parquet: a run of row groups; Arrow: byte offsets
    of a run of record batches (0: the whole file); CSV, WebDataset: 0 and the file's size; a media root: its
    own files, or some of its folders (`folders`)."""

    index: int  # position of the unit in manifest order
    file: ManifestFile
    start: int  # JSONL: first byte; Parquet: first row group; Arrow: first batch's offset (0: whole file); CSV: 0
    stop: int  # JSONL, Arrow: end byte (exclusive); Parquet: end row group (exclusive); CSV: file size
    first_line: int = 1  # line (JSONL, CSV) or row (Parquet, Arrow) number of the unit's first row, 1-based
    folders: tuple[str, ...] = ()  # a media root's unit: the folders below the root whose whole trees it lists
    # (`stop` 1), in order; none with `stop` 0: the files directly in the root


def check_id_column(uri: str, columns: list[str], id_field: str | None, what: str = "columns") -> None:
    """Raise the `ConfigError` of a tabular manifest without its id column, naming the columns it has and the
    two fixes: another column as the id, or ids made from the rows' positions."""
    if id_field is None or id_field in columns:
        return
    shown = ", ".join(columns[:20]) + (f", ... ({len(columns)} in all)" if len(columns) > 20 else "")
    setting = "input.id_column" if id_field == "id" else f"input.id_column ({id_field!r})"
    raise ConfigError(
        f"manifest {uri}: no `{id_field}` column ({what}: {shown or 'none'}); set {setting} to the column that "
        "holds each row's id, or input.id_column: null to name rows `<file>:<row>`"
    )


def open_manifest(fs, path: str, uri: str):
    """The file opened for binary reading; a `ConfigError` naming `uri` when it cannot be."""
    try:
        return fs.open(path, "rb")
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"manifest {uri}: cannot read: {type(exc).__name__}: {exc}") from None
