"""Tar archives as uploads: every regular file of a stream stored as a file entry.

Nothing is staged here, so a bad archive changes nothing; the caller stages all the files
at once. Links and devices are refused (they could point outside the tree), and so are
sparse members (a few bytes on the wire that expand to any size); a member's declared
size is held to the file-size limit before any of it is read.
"""

from __future__ import annotations

import io
import tarfile
from typing import TYPE_CHECKING

from ..errors import BadRequest, PayloadTooLarge
from ..paths import clean_path
from ..storage.trees import Entry

if TYPE_CHECKING:
    from .repo import Repository

PIECE = 1 << 20  # bytes handed to the chunker at a time


def unpack_tar(repo: Repository, raw: io.RawIOBase, prefix: str) -> list[tuple[str, Entry]]:
    """Store every regular file of a tar stream under `prefix`; (path, entry) sorted."""
    items: dict[str, Entry] = {}
    with repo.objects.batch() as batch:
        try:
            with tarfile.open(fileobj=io.BufferedReader(raw, PIECE), mode="r|*") as tar:
                for member in tar:
                    if member.isdir():
                        continue
                    if not member.isfile():
                        raise BadRequest(f"archive member {member.name[:200]!r} is not a regular file")
                    if member.issparse():  # holes cost no bytes to send and a full file's CPU to expand
                        raise BadRequest(f"archive member {member.name[:200]!r} is a sparse file: not accepted")
                    limit = repo.max_file_size
                    if limit is not None and member.size > limit:
                        raise PayloadTooLarge(
                            f"archive member {member.name[:200]!r} is larger than the limit of {limit} bytes"
                        )
                    name = member.name[2:] if member.name.startswith("./") else member.name
                    path = clean_path(f"{prefix}/{name}" if prefix else name)
                    writer = repo.writer(batch)
                    src = tar.extractfile(member)
                    assert src is not None
                    while piece := src.read(PIECE):
                        writer.write(piece)
                    items[path] = writer.finish()
        except tarfile.TarError as exc:
            raise BadRequest(f"not a valid tar archive: {exc}") from None
    return sorted(items.items())
