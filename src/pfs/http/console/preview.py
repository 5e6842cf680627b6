"""How the console shows a stored file: pure functions from a name and its first bytes to
a preview, and the Content-Type a raw download may safely carry.

Stored bytes are untrusted: nothing here ever yields markup. The templates escape every
string they get, and the raw route never answers text/html (nor SVG, which may hold
scripts), so a file cannot run code in the console's origin whatever its name or content.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

PREVIEW_BYTES = 256 << 10  # what a file page reads of a file at most
SNIFF_BYTES = 8 << 10  # what the raw route reads to tell text from binary
CSV_ROWS = 200
PARQUET_FOOTER_MAX = 4 << 20  # a Parquet footer (schema, row groups) read at most
PARQUET_GROUP_MAX = 64 << 20  # uncompressed bytes of the first row group read for its rows
PARQUET_COLUMNS = 50  # columns shown
PARQUET_ROWS = 50  # rows shown
CELL_MAX = 200  # characters of one shown value

IMAGE_TYPES = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "bmp": "image/bmp",
    "ico": "image/x-icon",
    "avif": "image/avif",
}  # not svg: an SVG document runs scripts when opened on its own
TABLES = {"csv": ",", "tsv": "\t"}


def extension(name: str) -> str:
    base = name.rpartition("/")[2]
    return base.rpartition(".")[2].lower() if "." in base else ""


def image_type(name: str) -> str | None:
    return IMAGE_TYPES.get(extension(name))


def as_text(head: bytes, complete: bool) -> str | None:
    """`head` decoded as UTF-8 if it reads as text (no NUL, valid UTF-8; a character cut
    at the end of an incomplete read is dropped), else None."""
    if b"\x00" in head:
        return None
    try:
        return codecs.getincrementaldecoder("utf-8")().decode(head, final=complete)
    except UnicodeDecodeError:
        return None


def raw_type(name: str, head: bytes, complete: bool) -> str:
    """The Content-Type of a raw answer: an image type by name, text/plain for text,
    else application/octet-stream; never anything a browser would render as a page."""
    image = image_type(name)
    if image is not None:
        return image
    return "text/plain; charset=utf-8" if as_text(head, complete) is not None else "application/octet-stream"


@dataclass
class Preview:
    kind: str  # "empty", "image", "text", "json", "table", "parquet", "binary"
    cut: bool = False  # only the first PREVIEW_BYTES are shown
    lines: list[str] = field(default_factory=list)  # text and json
    rows: list[list[str]] = field(default_factory=list)  # table, parquet: the first is the header
    more_rows: bool = False  # the table has rows beyond those shown
    schema: list[tuple[str, str]] = field(default_factory=list)  # parquet: (column, type)
    summary: str = ""  # parquet: rows, row groups, columns
    note: str = ""  # why part of it is not shown


def preview(name: str, size: int, head: bytes) -> Preview:
    """What a file page shows of a file whose first bytes are `head` (at most
    PREVIEW_BYTES of its `size`)."""
    if size == 0:
        return Preview("empty")
    if image_type(name) is not None:
        return Preview("image")
    cut = size > len(head)
    text = as_text(head, not cut)
    if text is None:
        return Preview("binary")
    ext = extension(name)
    if ext in TABLES:
        table = _table(text, TABLES[ext], cut)
        if table is not None:
            return table
    if ext == "json" and not cut:
        try:
            pretty = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        except (ValueError, RecursionError):
            pass  # not JSON after all: shown as text
        else:
            return Preview("json", lines=pretty.split("\n"))
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return Preview("text", cut=cut, lines=lines)


def _table(text: str, delimiter: str, cut: bool) -> Preview | None:
    """The first CSV_ROWS rows (plus the header); None if it does not parse as a table."""
    if cut:  # the last line may be a piece of a row: left out
        text = text[: text.rfind("\n") + 1]
    rows: list[list[str]] = []
    try:
        for row in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter):
            if len(rows) > CSV_ROWS:
                return Preview("table", cut=cut, rows=rows[: CSV_ROWS + 1], more_rows=True)
            rows.append(row)
    except csv.Error:
        return None
    return Preview("table", cut=cut, rows=rows, more_rows=cut)


def is_parquet(name: str) -> bool:
    return extension(name) in ("parquet", "pq")


def parquet(size: int, read: Callable[[int, int], bytes]) -> Preview:
    """A Parquet file's schema and first rows, read through `read(first, last)` (byte
    ranges of the stored file): its footer (at most PARQUET_FOOTER_MAX bytes) and, when
    its first row group is at most PARQUET_GROUP_MAX bytes uncompressed, that group's
    first PARQUET_ROWS rows of the first PARQUET_COLUMNS columns. Needs pyarrow (an
    optional dependency); the bytes are untrusted, so anything pyarrow refuses is shown as
    a binary file with the reason."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        return Preview("binary", note="Install pyarrow on the server to preview Parquet files.")
    if size < 12:
        return Preview("binary", note="Too short to be a Parquet file.")
    tail = read(size - 8, size - 1)
    footer = int.from_bytes(tail[:4], "little")
    if tail[4:] != b"PAR1":
        return Preview("binary", note="Not a Parquet file (no PAR1 footer).")
    if footer + 12 > size or footer > PARQUET_FOOTER_MAX:
        return Preview("binary", note=f"Its Parquet footer ({footer} bytes) is not shown (limit {PARQUET_FOOTER_MAX}).")
    try:
        pf = pq.ParquetFile(_Ranges(size, read))
        meta = pf.metadata
        arrow = pf.schema_arrow
        schema = [(f.name, str(f.type)) for f in list(arrow)[:PARQUET_COLUMNS]]
        summary = f"{meta.num_rows} rows in {meta.num_row_groups} row group(s), {meta.num_columns} columns"
        shown = PARQUET_COLUMNS if meta.num_columns > PARQUET_COLUMNS else None
        note = f"The first {PARQUET_COLUMNS} columns are shown. " if shown else ""
        rows: list[list[str]] = []
        if meta.num_row_groups and meta.row_group(0).total_byte_size <= PARQUET_GROUP_MAX:
            columns = [name for name, _ in schema]
            table = pf.read_row_group(0, columns=columns).slice(0, PARQUET_ROWS)
            rows = [columns] + [[_cell(row[c]) for c in columns] for row in table.to_pylist()]
        elif meta.num_row_groups:
            note += f"Its first row group is over {PARQUET_GROUP_MAX >> 20} MiB: only the schema is shown."
    except Exception as exc:  # noqa: BLE001 - untrusted bytes: whatever pyarrow refuses is shown as binary
        return Preview("binary", note=f"Not readable as Parquet: {str(exc)[:300]}")
    more = meta.num_rows > len(rows) - 1 if rows else False
    return Preview("parquet", rows=rows, more_rows=more, schema=schema, summary=summary, note=note.strip())


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= CELL_MAX else text[:CELL_MAX] + "…"


class _Ranges(io.RawIOBase):
    """A stored file as a seekable file object for pyarrow: each read is a byte range."""

    def __init__(self, size: int, read: Callable[[int, int], bytes]) -> None:
        self.size, self.read_range, self.pos = size, read, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.size - self.pos)
        if n <= 0:
            return 0
        data = self.read_range(self.pos, self.pos + n - 1)
        buffer[: len(data)] = data
        self.pos += len(data)
        return len(data)
