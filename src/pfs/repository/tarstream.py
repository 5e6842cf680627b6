"""A lean streaming reader of tar archives, for ingesting millions of tiny files.

`tarfile` in stream mode spends 10-15 µs per member building TarInfo objects; this reader
parses the few fields an upload needs (name, size, type) straight from the 512-byte header,
so a member costs a few µs. It is stricter than `tarfile`: a bad checksum, a truncated
header or content, a malformed number or pax record is an error, never a silent end of
the archive. Memory stays bounded whatever the archive: content is handed out in pieces,
unread content is skipped in pieces, decompression output is capped per call, and the
records held whole (pax headers, GNU long names) are limited to 1 MiB.

Formats: v7, ustar (prefix + name), GNU ('L' long names, 'K' long link names, base-256
numbers, 'S' sparse members), pax ('x' and Solaris 'X' per-member headers; 'g' global
headers are skipped, not applied), wrapped in gzip, bzip2 or xz (concatenated streams too).
"""

from __future__ import annotations

import bz2
import lzma
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["Member", "TarError", "members"]

BLOCK = 512
CHUNK = 1 << 18  # bytes asked of the source at a time for headers and small content
IN_CHUNK = 1 << 16  # compressed bytes read at a time
MAX_RECORD = 1 << 20  # pax headers and GNU long names are held whole: cap them
MAX_SIZE = (1 << 63) - 1  # the largest off_t; beyond it a size is nonsense
XZ_MEMLIMIT = 256 << 20  # an xz header may ask for a 1.5 GiB dictionary; xz -9 needs 65 MiB

_ZERO_BLOCK = bytes(BLOCK)
_OCTAL = b"01234567"
_SIGNED = struct.Struct("148b8x356b")
_adler32 = zlib.adler32

# Type flags (byte 156).
_FILE_TYPES = frozenset(b"0\x007")  # regular, old regular, contiguous
_HEADER_ONLY = frozenset(b"123456")  # links, devices, directory, fifo: no content whatever the size says
_DIR = ord("5")
_AREG = 0
_SPARSE = ord("S")
_LONGNAME = ord("L")
_LONGLINK = ord("K")
_PAX = frozenset(b"xX")
_PAX_GLOBAL = ord("g")
_META = frozenset((_LONGNAME, _LONGLINK, _PAX_GLOBAL, *_PAX))  # headers that describe the next member


class TarError(Exception):
    """Not a valid tar stream (message says why, short)."""


@dataclass(slots=True)
class Member:
    """One archive member; `size` is the number of content bytes its reader yields."""

    name: str  # as in the archive (pax path / GNU longname / ustar prefix+name)
    size: int  # 0 for header-only types (links, devices, directories, fifos)
    kind: str  # "file" | "dir" | "other"
    sparse: bool  # GNU sparse: its content is a map plus data, not the file itself


def members(read: Callable[[int], bytes]) -> Iterator[tuple[Member, Callable[[int], bytes]]]:
    """Each member with a function that reads up to n bytes of its content (b"" at its end).

    Content not read before the next member is requested is skipped (read and discarded,
    never held whole in memory). `read` is the underlying stream's read (e.g.
    BufferedReader.read); it must block until data or end of stream. A member's reader
    raises TarError if the stream ends inside the content, and RuntimeError once the
    iteration has moved past its member (a stale reader must not read another's bytes).
    """
    src = _open(read)
    left = 0  # content bytes of the current member not yet handed out
    pad = 0  # padding after the current member's content
    serial = 0  # which member the readers may read
    long_name: bytes | None = None  # from a GNU 'L' record, for the next member
    pax_name: bytes | None = None  # from a pax record, for the next member (wins over 'L')
    pax_size: int | None = None
    pax_sparse = False
    pending = False  # an extended header waits for its member

    def reader_for(mine: int) -> Callable[[int], bytes]:
        def read_content(n: int = -1) -> bytes:
            nonlocal left
            if mine != serial:
                raise RuntimeError("tar member read after the archive moved past it")
            if left <= 0:
                return b""
            if n < 0 or n > left:
                n = left
            elif n == 0:
                return b""
            data = src.some(n)
            if not data:
                raise TarError("archive ends inside a member's content")
            left -= len(data)
            return data

        return read_content

    while True:
        skip = left + pad
        left = pad = 0
        serial += 1
        if skip:
            src.skip(skip)
        hdr = src.take(BLOCK)
        if len(hdr) < BLOCK:
            if hdr or pending:
                raise TarError("archive ends inside a header" if hdr else "archive ends after an extended header")
            return
        if hdr == _ZERO_BLOCK:
            if pending:
                raise TarError("archive ends after an extended header")
            return  # end-of-archive marker; the second zero block and any tail are not read
        _check_sum(hdr)
        kind = hdr[156]
        size = _number(hdr[124:136])
        if size < 0 or size > MAX_SIZE:
            raise TarError("member size out of range")

        if kind not in _META:
            # A real member: the extended headers before it apply to it.
            if pax_name is not None:
                raw = pax_name
            elif long_name is not None:
                raw = long_name
            else:
                raw = _name(hdr, kind)
            sparse = pax_sparse
            if pax_size is not None:
                size = pax_size
            long_name = pax_name = pax_size = None
            pax_sparse = pending = False

            if kind in _FILE_TYPES:
                typ = "file"
                if kind == _AREG and raw.endswith(b"/"):  # how v7 wrote a directory
                    typ = "dir"
                    size = 0
            elif kind in _HEADER_ONLY:
                typ = "dir" if kind == _DIR else "other"
                size = 0
            elif kind == _SPARSE:
                typ = "file"
                sparse = True
                if hdr[482]:  # extension blocks with more of the sparse map precede the data
                    _skip_sparse_extensions(src)
            else:  # unknown or vendor types ('D', 'M', 'V', ...) carry `size` bytes of data
                typ = "other"
            left = size
            pad = -size % BLOCK
            yield Member(raw.decode("utf-8", "surrogateescape"), size, typ, sparse), reader_for(serial)
            continue

        # An extended header: its data describes the next member.
        if size > MAX_RECORD:
            raise TarError("extended header larger than 1 MiB")
        pad = -size % BLOCK
        if kind == _PAX_GLOBAL:
            left = size  # skipped, not applied: one header must not rename every member
            continue
        data = src.take(size)
        if len(data) < size:
            raise TarError("archive ends inside an extended header")
        pending = True
        if kind == _LONGNAME:
            long_name = data.rstrip(b"\0")
        elif kind in _PAX:
            name, psize, psparse = _parse_pax(data)
            if name is not None:
                pax_name = name
            if psize is not None:
                pax_size = psize
            pax_sparse = pax_sparse or psparse
        # 'K' (long link name): nothing to keep.


def _check_sum(hdr: bytes) -> None:
    """The stored checksum must match the unsigned byte sum (or the signed one old tars wrote).

    Adler-32's low half is 1 + the byte sum mod 65521, exact for up to 256 bytes: several
    times faster than summing in Python.
    """
    a = _adler32
    unsigned = (a(hdr[:256]) & 0xFFFF) + (a(hdr[256:]) & 0xFFFF) - (a(hdr[148:156]) & 0xFFFF) - 1 + 256
    stored = _number(hdr[148:156])
    if stored != unsigned and stored != 256 + sum(_SIGNED.unpack_from(hdr)):
        raise TarError("header checksum mismatch")


def _number(field: bytes) -> int:
    """A numeric header field: octal (space or NUL terminated) or GNU base-256."""
    first = field[0]
    if first & 0x80:
        if first == 0x80:
            return int.from_bytes(field[1:], "big")
        if first == 0xFF:
            return int.from_bytes(field, "big", signed=True)
        raise TarError("malformed number in header")
    end = field.find(0)
    if end >= 0:
        field = field[:end]
    field = field.strip()
    if not field:
        return 0
    if field.translate(None, _OCTAL):  # int() would also take "0o", "_", signs
        raise TarError("malformed number in header")
    return int(field, 8)


def _name(hdr: bytes, kind: int) -> bytes:
    """The header's own name: ustar (and star) put a prefix before it, GNU and v7 do not."""
    end = hdr.find(0, 0, 100)
    name = hdr[:end] if end >= 0 else hdr[:100]
    if hdr[257:263] == b"ustar\0" and kind != _SPARSE:
        # star's format marks itself with "tar\0" at the end and keeps atime/ctime after a shorter prefix.
        stop = 476 if hdr[508:512] == b"tar\0" else 500
        end = hdr.find(0, 345, stop)
        prefix = hdr[345 : end if end >= 0 else stop]
        if prefix:
            name = prefix + b"/" + name
    return name


def _skip_sparse_extensions(src: _Source) -> None:
    """Old GNU sparse members chain 512-byte map blocks before the data; byte 504 says "more"."""
    while True:
        ext = src.take(BLOCK)
        if len(ext) < BLOCK:
            raise TarError("archive ends inside a sparse header")
        if not ext[504]:
            return


def _parse_pax(data: bytes) -> tuple[bytes | None, int | None, bool]:
    """Path, size and whether it is GNU sparse, from pax records "<len> <key>=<value>\\n"."""
    name = sparse_name = None
    size = None
    sparse = False
    pos = 0
    n = len(data)
    while pos < n and data[pos]:  # NUL padding ends the records
        space = data.find(b" ", pos, pos + 21)
        digits = data[pos:space]
        if space < 0 or not digits.isdigit():
            raise TarError("malformed pax header")
        length = int(digits)
        end = pos + length
        if length < 5 or end > n or data[end - 1] != 0x0A:
            raise TarError("malformed pax header")
        key, eq, value = data[space + 1 : end - 1].partition(b"=")
        if not key or not eq:
            raise TarError("malformed pax header")
        if key == b"path":
            name = value
        elif key == b"size":
            if not value.isdigit() or len(value) > 19 or int(value) > MAX_SIZE:
                raise TarError("malformed size in pax header")
            size = int(value)
        elif key.startswith(b"GNU.sparse."):
            sparse = True
            if key == b"GNU.sparse.name":
                sparse_name = value
        pos = end
    return (sparse_name if sparse_name is not None else name), size, sparse


class _Source:
    """The (decompressed) stream with a buffer: headers and small content are slices of it."""

    __slots__ = ("_buf", "_pos", "_next")

    def __init__(self, next_chunk: Callable[[int], bytes], first: bytes) -> None:
        self._next = next_chunk  # up to n bytes, at least one unless at the end
        self._buf = first
        self._pos = 0

    def take(self, n: int) -> bytes:
        """Exactly n bytes, or fewer only at the end of the stream."""
        pos = self._pos
        end = pos + n
        if end <= len(self._buf):
            self._pos = end
            return self._buf[pos:end]
        parts = [self._buf[pos:]]
        have = len(parts[0])
        self._buf = b""
        self._pos = 0
        while have < n:
            chunk = self._next(max(CHUNK, n - have))
            if not chunk:
                break
            need = n - have
            if len(chunk) > need:
                parts.append(chunk[:need])
                self._buf = chunk
                self._pos = need
                break
            parts.append(chunk)
            have += len(chunk)
        return b"".join(parts)

    def some(self, n: int) -> bytes:
        """Between 1 and n bytes (b"" only at the end): what is buffered, else a fresh read."""
        pos = self._pos
        buf = self._buf
        if pos < len(buf):
            end = min(pos + n, len(buf))
            self._pos = end
            return buf[pos:end]
        if n >= CHUNK:  # large content goes straight through, not via the buffer
            return self._next(n)
        buf = self._buf = self._next(CHUNK)
        self._pos = min(n, len(buf))
        return buf[:n]

    def skip(self, n: int) -> None:
        """Discard n bytes, a piece at a time; the stream must hold them."""
        avail = len(self._buf) - self._pos
        if n <= avail:
            self._pos += n
            return
        n -= avail
        self._buf = b""
        self._pos = 0
        while n > 0:
            chunk = self._next(min(n, 1 << 20))
            if not chunk:
                raise TarError("archive ends inside a member's content")
            if len(chunk) > n:
                self._buf = chunk
                self._pos = n
                return
            n -= len(chunk)


def _open(read: Callable[[int], bytes]) -> _Source:
    """Sniff the compression from the first bytes and wrap the stream accordingly."""
    head = read(CHUNK) or b""
    while 0 < len(head) < 10:  # enough for any magic; a pipe may hand out a few bytes at a time
        more = read(CHUNK)
        if not more:
            break
        head += more
    new: Callable[[], Any] | None = None
    if head[:3] == b"\x1f\x8b\x08":
        new = _new_gzip
    elif head[:3] == b"BZh" and head[3:4].isdigit() and head[4:10] in (b"1AY&SY", b"\x17rE8P\x90"):
        new = bz2.BZ2Decompressor
    elif head[:6] == b"\xfd7zXZ\x00":
        new = _new_xz
    elif head[:4] == b"\x28\xb5\x2f\xfd":
        raise TarError("zstd-compressed archives are not supported")
    if new is None:

        def raw(n: int) -> bytes:
            return read(n) or b""

        return _Source(raw, head)
    return _Source(_Inflate(read, new, head), b"")


def _new_gzip() -> Any:
    return zlib.decompressobj(16 + zlib.MAX_WBITS)


def _new_xz() -> Any:
    return lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=XZ_MEMLIMIT)


class _Inflate:
    """Decompressed bytes on demand, at most n per call, across concatenated streams."""

    __slots__ = ("_read", "_new", "_d", "_in", "_zlib")

    def __init__(self, read: Callable[[int], bytes], new: Callable[[], Any], first: bytes) -> None:
        self._read = read
        self._new = new
        self._d = new()
        self._in = first  # compressed bytes not yet given to the decompressor
        self._zlib = new is _new_gzip  # zlib keeps unfed input outside; bz2 and lzma inside

    def __call__(self, n: int) -> bytes:
        try:
            return self._decompress(max(n, 1))
        except (zlib.error, OSError, EOFError, lzma.LZMAError) as exc:
            raise TarError(f"corrupt compressed stream: {exc}") from None

    def _decompress(self, n: int) -> bytes:
        d = self._d
        out: bytes
        while True:
            if d.eof:
                self._in = d.unused_data + self._in
                if not self._in:
                    self._in = self._read(IN_CHUNK) or b""
                    if not self._in:
                        return b""
                d = self._d = self._new()  # another stream follows (pigz, pbzip2, cat a.gz b.gz)
            if self._zlib:
                if not self._in:
                    self._in = self._read(IN_CHUNK) or b""
                starved = not self._in  # zlib may still hold output for an empty call
                out = d.decompress(self._in, n)
                self._in = d.unconsumed_tail
                if starved and not out and not d.eof:
                    raise TarError("compressed stream is truncated")
            elif d.needs_input:
                if not self._in:
                    self._in = self._read(IN_CHUNK) or b""
                    if not self._in:
                        raise TarError("compressed stream is truncated")
                out = d.decompress(self._in, n)
                self._in = b""
            else:
                out = d.decompress(b"", n)
            if out:
                return out
