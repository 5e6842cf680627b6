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
from dataclasses import dataclass, field

PREVIEW_BYTES = 256 << 10  # what a file page reads of a file at most
SNIFF_BYTES = 8 << 10  # what the raw route reads to tell text from binary
CSV_ROWS = 200

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
    kind: str  # "empty", "image", "text", "json", "table", "binary"
    cut: bool = False  # only the first PREVIEW_BYTES are shown
    lines: list[str] = field(default_factory=list)  # text and json
    rows: list[list[str]] = field(default_factory=list)  # table: the first is the header
    more_rows: bool = False  # the table has rows beyond those shown


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
