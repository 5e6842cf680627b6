"""The streaming tar reader: archives from `tarfile` and GNU tar, compression, spec traps, bad input."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import random
import shutil
import subprocess
import tarfile
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from pfs.repository.tarstream import Member, TarError, members

BIG = 3 << 20
LONG_100 = "d" * 60 + "/" + "f" * 60  # fits ustar's prefix + name
LONG_255 = "/".join(["x" * 50] * 6)  # too long for ustar
UNICODE = "répertoire/файл-ü.txt"


def reader(data: bytes, most: int | None = None) -> Callable[[int], bytes]:
    """`read` of a stream; `most` caps each answer, like a socket handing out pieces."""
    bio = io.BytesIO(data)
    if most is None:
        return bio.read
    cap = most
    return lambda n: bio.read(min(n, cap))


def drain(read: Callable[[int], bytes], piece: int = 1 << 20) -> bytes:
    parts = []
    while chunk := read(piece):
        assert len(chunk) <= piece
        parts.append(chunk)
    return b"".join(parts)


def listing(data: bytes, most: int | None = None) -> list[tuple[str, int, str, bool, bytes]]:
    return [(m.name, m.size, m.kind, m.sparse, drain(rd)) for m, rd in members(reader(data, most))]


def normalized(data: bytes) -> list[tuple[str, str, bytes]]:
    """Our view, in tarfile's terms (tarfile strips a directory's trailing slash)."""
    return [(n.rstrip("/") if k == "dir" else n, k, c) for n, _, k, _, c in listing(data)]


def via_tarfile(data: bytes) -> list[tuple[str, str, bytes]]:
    out = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|*") as tf:
        for ti in tf:
            kind = "dir" if ti.isdir() else "file" if ti.isreg() else "other"
            content = b""
            if ti.isreg():
                src = tf.extractfile(ti)
                assert src is not None
                content = src.read()
            out.append((ti.name, kind, content))
    return out


def contents(big: int = BIG) -> dict[str, bytes]:
    rnd = random.Random(7)
    return {
        "short.txt": b"hello\n",
        LONG_100: b"long name" * 20,
        UNICODE: "ünïcode".encode() * 3,
        "empty": b"",
        "exact.bin": rnd.randbytes(1024),  # a multiple of 512: no padding
        "big.bin": rnd.randbytes(big),
        "after.txt": b"after the big one",
    }


def make_tar(fmt: int, long_255: bool = True, mode: str = "w", big: int = BIG) -> bytes:
    buf = io.BytesIO()
    files = contents(big)
    if long_255:
        files[LONG_255] = b"very long name"
    with tarfile.open(fileobj=buf, mode=mode, format=fmt, encoding="utf-8") as tf:  # type: ignore[call-overload]
        d = tarfile.TarInfo("adir")
        d.type = tarfile.DIRTYPE
        tf.addfile(d)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        sym = tarfile.TarInfo("sym")
        sym.type = tarfile.SYMTYPE
        sym.linkname = LONG_255 if long_255 else "short.txt"
        tf.addfile(sym)
        hard = tarfile.TarInfo("hard")
        hard.type = tarfile.LNKTYPE
        hard.linkname = "short.txt"
        tf.addfile(hard)
        fifo = tarfile.TarInfo("fifo")
        fifo.type = tarfile.FIFOTYPE
        tf.addfile(fifo)
        tf.addfile(tarfile.TarInfo("last"), io.BytesIO(b""))
    return buf.getvalue()


FORMATS = {"ustar": tarfile.USTAR_FORMAT, "gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT}


@pytest.mark.parametrize("fmt", FORMATS)
def test_tarfile_archives_round_trip(fmt: str) -> None:
    long_255 = fmt != "ustar"
    data = make_tar(FORMATS[fmt], long_255)
    got = listing(data)
    files = contents()
    if long_255:
        files[LONG_255] = b"very long name"
    expected = [("adir/", 0, "dir", False, b"")]
    expected += [(name, len(c), "file", False, c) for name, c in files.items()]
    expected += [(n, 0, "other", False, b"") for n in ("sym", "hard", "fifo")]
    expected += [("last", 0, "file", False, b"")]
    assert got == expected
    assert normalized(data) == via_tarfile(data)


@pytest.mark.parametrize("fmt", FORMATS)
def test_unread_content_is_skipped(fmt: str) -> None:
    data = make_tar(FORMATS[fmt], fmt != "ustar")
    names = [m.name for m, _ in members(reader(data))]  # nothing read at all
    assert names == [n for n, *_ in listing(data)]
    seen = {}
    for m, rd in members(reader(data)):
        if m.name == "big.bin":
            assert len(rd(10)) == 10  # a little, then move on
        else:
            seen[m.name] = drain(rd)
    assert seen["after.txt"] == b"after the big one"
    assert seen[UNICODE] == contents()[UNICODE]


def test_big_member_read_in_pieces() -> None:
    data = make_tar(tarfile.PAX_FORMAT)
    for m, rd in members(reader(data)):
        if m.name == "big.bin":
            pieces = []
            while chunk := rd(1 << 20):
                pieces.append(chunk)
            assert len(pieces) >= 3 and max(map(len, pieces)) <= 1 << 20
            assert b"".join(pieces) == contents()["big.bin"]
            assert rd(1 << 20) == b""
        if m.name == "short.txt":
            assert [rd(2), rd(2), rd(100), rd(100)] == [b"he", b"ll", b"o\n", b""]


@pytest.mark.parametrize("most", [1, 7, 511, 513, 100_000])
def test_short_reads_from_the_stream(most: int) -> None:
    """A stream that hands out a few bytes at a time (a socket) reads the same."""
    data = make_tar(tarfile.GNU_FORMAT)
    if most < 100:  # keep the 1-byte case quick
        data = make_tar_small()
    assert listing(data, most) == listing(data)
    packed = gzip.compress(data)
    assert listing(packed, most) == listing(data)


def make_tar_small() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for i, name in enumerate(["a", LONG_255, UNICODE, "e"]):
            info = tarfile.TarInfo(name)
            body = bytes([65 + i]) * (i * 300)
            info.size = len(body)
            tf.addfile(info, io.BytesIO(body))
    return buf.getvalue()


def test_stale_reader_refuses() -> None:
    it = members(reader(make_tar(tarfile.USTAR_FORMAT, False)))
    _, first = next(it)
    next(it)
    with pytest.raises(RuntimeError):
        first(10)


def test_matches_tarfile_on_many_members() -> None:
    rnd = random.Random(11)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for i in range(2000):
            depth = rnd.randrange(1, 8)
            name = "/".join(f"d{rnd.randrange(1000)}-{'é' * rnd.randrange(3)}" for _ in range(depth)) + f"/f{i}"
            if i % 97 == 0:
                name += "-" + "n" * 300
            body = rnd.randbytes(rnd.choice([0, 1, 100, 511, 512, 513, 1024, rnd.randrange(3000)]))
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tf.addfile(info, io.BytesIO(body))
    data = buf.getvalue()
    ours = [(m.name, m.size, drain(rd)) for m, rd in members(reader(data))]
    theirs = via_tarfile(data)
    assert len(ours) == 2000
    assert [(n, len(c), c) for n, _, c in theirs] == ours


@pytest.mark.parametrize(
    ("compress", "mode"),
    [
        (gzip.compress, "w:gz"),
        (bz2.compress, "w:bz2"),
        (lzma.compress, "w:xz"),
    ],
)
def test_compressed_archives(compress: Callable[[bytes], bytes], mode: str) -> None:
    plain = make_tar(tarfile.PAX_FORMAT, big=300_000)
    expected = listing(plain)
    assert listing(compress(plain)) == expected
    assert listing(make_tar(tarfile.PAX_FORMAT, mode=mode, big=300_000)) == expected
    # Concatenated streams (pigz, pbzip2, `cat a.gz b.gz`) are one archive.
    cut = 5000
    assert listing(compress(plain[:cut]) + compress(plain[cut:])) == expected


@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress, lzma.compress])
def test_bad_compressed_streams(compress: Callable[[bytes], bytes]) -> None:
    packed = compress(make_tar(tarfile.USTAR_FORMAT, False, big=300_000))
    with pytest.raises(TarError):
        listing(packed[: len(packed) // 2])
    corrupt = bytearray(packed)
    for i in range(20, len(corrupt) // 2, 50):
        corrupt[i] ^= 0x55
    with pytest.raises(TarError):
        listing(bytes(corrupt))


def test_zstd_is_refused_plainly() -> None:
    with pytest.raises(TarError, match="zstd"):
        listing(b"\x28\xb5\x2f\xfd" + bytes(600))


def test_decompression_output_is_bounded() -> None:
    """A member of 64 MiB of zeros (64 KiB compressed) is skipped without holding it."""
    size = 64 << 20
    info = tarfile.TarInfo("zeros")
    info.size = size
    head = info.tobuf(tarfile.USTAR_FORMAT)
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [z.compress(head)]
    zeros = bytes(1 << 20)
    parts += [z.compress(zeros) for _ in range(size >> 20)]
    tail = tarfile.TarInfo("tail")
    tail.size = 2
    parts += [z.compress(tail.tobuf(tarfile.USTAR_FORMAT) + b"ok".ljust(512, b"\0") + bytes(1024)), z.flush()]
    packed = b"".join(parts)
    assert len(packed) < 1 << 20
    tracemalloc.start()
    try:
        got = [(m.name, m.size, drain(rd) if m.name == "tail" else b"") for m, rd in members(reader(packed))]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got == [("zeros", size, b""), ("tail", 2, b"ok")]
    assert peak < 8 << 20


# --- GNU tar --------------------------------------------------------------------------------


OVER_100 = "sub/" + "m" * 60 + "/" + "n" * 60


def make_tree(root: Path) -> None:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "short.txt").write_bytes(b"hello")
    (root / "empty").write_bytes(b"")
    (root / "sub" / ("m" * 60)).mkdir()
    (root / "sub" / ("m" * 60) / ("n" * 60)).write_bytes(b"a name over 100 bytes")
    deep = root / "sub" / "deeper" / ("p" * 100) / ("q" * 100)
    deep.mkdir(parents=True)
    (deep / ("r" * 100)).write_bytes(b"a path over 255 bytes")
    (root / "sub" / "ünï😀.txt").write_bytes(b"non-ascii")
    (root / "sub" / "blob").write_bytes(random.Random(3).randbytes(200_000))
    (root / "link").symlink_to("short.txt")


@pytest.mark.skipif(shutil.which("tar") is None, reason="no tar command")
@pytest.mark.parametrize(
    "flags",
    [
        ["-cf"],
        ["--format=gnu", "-cf"],
        ["--format=posix", "-cf"],
        ["--format=ustar", "-cf"],
        ["--format=v7", "-cf"],
        ["-czf"],
        ["-cjf"],
        ["-cJf"],
        ["--format=posix", "-czf"],
    ],
)
def test_gnu_tar_archives(tmp_path: Path, flags: list[str]) -> None:
    tool = {"-czf": "gzip", "-cjf": "bzip2", "-cJf": "xz"}.get(flags[-1])
    if tool and shutil.which(tool) is None:
        pytest.skip(f"no {tool}")
    tree = tmp_path / "tree"
    tree.mkdir()
    make_tree(tree)
    out = tmp_path / "out.tar"
    v7 = "--format=v7" in flags
    listed = "--format=ustar" in flags or v7  # these formats cannot hold the longest path
    args = ["tar", *flags, str(out), "-C", str(tree)]
    if listed:
        args += ["short.txt", "empty", "link", "sub/ünï😀.txt", "sub/blob"] + ([] if v7 else [OVER_100])
    else:
        args.append(".")
    subprocess.run(args, check=True, capture_output=True)
    data = out.read_bytes()
    ours = normalized(data)
    assert ours == via_tarfile(data)
    files = {n.removeprefix("./"): c for n, k, c in ours if k == "file"}
    assert files["short.txt"] == b"hello"
    assert files["empty"] == b""
    assert files["sub/ünï😀.txt"] == b"non-ascii"
    assert files["sub/blob"] == random.Random(3).randbytes(200_000)
    if not v7:
        assert files[OVER_100] == b"a name over 100 bytes"
    if not listed:
        assert files[f"sub/deeper/{'p' * 100}/{'q' * 100}/{'r' * 100}"] == b"a path over 255 bytes"
        assert ("./sub/deeper", "dir", b"") in ours
    assert ("link" if listed else "./link", "other", b"") in ours


@pytest.mark.skipif(shutil.which("tar") is None, reason="no tar command")
@pytest.mark.parametrize("fmt", ["gnu", "posix"])
def test_gnu_tar_sparse_members(tmp_path: Path, fmt: str) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    with open(tree / "holes", "wb") as f:
        for i in range(40):  # many data islands: old GNU sparse needs extension blocks
            f.seek(i * (64 << 10))
            f.write(b"x" * 10)
        f.truncate(4 << 20)
    (tree / "zafter").write_bytes(b"after the sparse one")
    out = tmp_path / "out.tar"
    subprocess.run(
        ["tar", f"--format={fmt}", "--sparse", "-cf", str(out), "-C", str(tree), "holes", "zafter"],
        check=True,
        capture_output=True,
    )
    got = listing(out.read_bytes())
    sparse = [(name, kind) for name, _, kind, is_sparse, _ in got if is_sparse]
    if not sparse:
        pytest.skip("this file system keeps no holes, so tar wrote no sparse member")
    assert len(sparse) == 1 and sparse[0][1] == "file"
    assert got[-1][0] == "zafter" and got[-1][4] == b"after the sparse one"


# --- hand-made headers: the spec's traps ------------------------------------------------


def header(
    name: bytes,
    size: int = 0,
    typ: bytes = b"0",
    magic: bytes = b"ustar\x0000",
    size_field: bytes | None = None,
    prefix: bytes = b"",
    extra: dict[int, bytes] | None = None,
    signed: bool = False,
) -> bytes:
    b = bytearray(512)
    b[0 : len(name)] = name
    b[100:108] = b"0000644\0"
    b[108:116] = b"0000000\0"
    b[116:124] = b"0000000\0"
    b[124:136] = size_field if size_field is not None else b"%011o\0" % size
    b[136:148] = b"00000000000\0"
    b[156:157] = typ
    b[257:265] = magic
    b[345 : 345 + len(prefix)] = prefix
    for at, value in (extra or {}).items():
        b[at : at + len(value)] = value
    b[148:156] = b" " * 8
    total = sum(x - 256 if signed and x > 127 else x for x in b)
    b[148:156] = b"%06o\0 " % total
    return bytes(b)


def padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % 512)


def pax(records: dict[bytes, bytes], typ: bytes = b"x") -> bytes:
    body = b""
    for key, value in records.items():
        rest = b" " + key + b"=" + value + b"\n"
        n = len(rest) + 1
        while len(str(n)) + len(rest) != n:
            n += 1
        body += str(n).encode() + rest
    return header(b"PaxHeader", len(body), typ) + padded(body)


END = bytes(1024)


def one(data: bytes) -> tuple[Member, bytes]:
    got = [(m, drain(rd)) for m, rd in members(reader(data))]
    assert len(got) == 1
    return got[0]


def test_pax_size_and_path_override_the_header() -> None:
    data = pax({b"path": b"from/pax", b"size": b"5"}) + header(b"short", 0) + padded(b"12345") + END
    assert one(data) == (Member("from/pax", 5, "file", False), b"12345")


def test_pax_path_wins_over_gnu_longname_which_wins_over_the_header() -> None:
    longname = header(b"././@LongLink", 10, b"L") + padded(b"from/L/x\0\0")
    assert one(longname + header(b"hdr", 1) + padded(b"a") + END)[0].name == "from/L/x"
    data = longname + pax({b"path": b"from/pax"}) + header(b"hdr", 1) + padded(b"a") + END
    assert one(data)[0].name == "from/pax"


def test_extended_headers_apply_to_one_member_only() -> None:
    data = pax({b"path": b"p", b"size": b"3"}) + header(b"a", 0) + padded(b"abc") + header(b"b", 2) + padded(b"de")
    assert [(m.name, m.size) for m, _ in members(reader(data + END))] == [("p", 3), ("b", 2)]


def test_global_pax_header_is_skipped_not_applied() -> None:
    data = pax({b"path": b"everything", b"comment": b"x" * 600}, b"g") + header(b"a", 1) + padded(b"z") + END
    assert one(data) == (Member("a", 1, "file", False), b"z")


def test_long_link_name_is_skipped() -> None:
    data = header(b"././@LongLink", 300, b"K") + padded(b"t" * 299 + b"\0") + header(b"l", 0, b"2") + END
    assert one(data) == (Member("l", 0, "other", False), b"")


def test_ustar_prefix_only_with_ustar_magic() -> None:
    assert one(header(b"name", prefix=b"the/prefix") + END)[0].name == "the/prefix/name"
    # GNU keeps atime/ctime where ustar has its prefix.
    gnu = header(b"name", magic=b"ustar  \0", prefix=b"14567123456\x0014567123456\0")
    assert one(gnu + END)[0].name == "name"
    # star: a shorter prefix, then atime and ctime, and "tar\0" at the end.
    star = header(b"name", prefix=b"pre", extra={476: b"14567123456\0", 508: b"tar\0"})
    assert one(star + END)[0].name == "pre/name"
    star_full = header(b"name", prefix=b"p" * 131 + b"14567123456\0", extra={508: b"tar\0"})
    assert one(star_full + END)[0].name == "p" * 131 + "/name"


def test_v7_headers() -> None:
    v7 = bytes(8)
    data = header(b"dir/", typ=b"\0", magic=v7) + header(b"file", 3, b"\0", magic=v7) + padded(b"abc") + END
    got = [(m, drain(rd)) for m, rd in members(reader(data))]
    assert got == [(Member("dir/", 0, "dir", False), b""), (Member("file", 3, "file", False), b"abc")]


def test_name_fields() -> None:
    full = b"n" * 100  # no NUL at all
    assert one(header(full) + END)[0].name == "n" * 100
    assert one(header(b"cut\0junk") + END)[0].name == "cut"
    assert one(header(b"\xff\xfe.bin") + END)[0].name == "\udcff\udcfe.bin"
    assert one(pax({b"path": b"a\0b"}) + header(b"x") + END)[0].name == "a\0b"  # the caller refuses it
    assert one(pax({b"GNU.sparse.name": b"real", b"path": b"tmp"}) + header(b"x") + END)[0] == Member(
        "real", 0, "file", True
    )


@pytest.mark.parametrize(
    "field",
    [
        b"00000000005\0",
        b"00000000005 ",
        b"5\0\0\0\0\0\0\0\0\0\0\0",
        b"    5 \0\0\0\0\0\0",
        b"000000000005",
        b"\x80" + bytes(10) + b"\x05",
    ],
)
def test_size_fields(field: bytes) -> None:
    assert one(header(b"f", size_field=field) + padded(b"hello") + END) == (Member("f", 5, "file", False), b"hello")


@pytest.mark.parametrize(
    "field",
    [
        b"0o000000005\0",
        b"0000_000005\0",
        b"-0000000005\0",
        b"00000000009\0",
        b"\xff" * 12,
        b"\x80" + b"\xff" * 11,
        b"\x81" + bytes(11),
    ],
)
def test_bad_size_fields(field: bytes) -> None:
    with pytest.raises(TarError):
        listing(header(b"f", size_field=field) + padded(b"hello") + END)


def test_signed_checksum_is_accepted() -> None:
    data = header("é".encode(), 1, signed=True) + padded(b"x") + END
    assert one(data)[0].name == "é"


def test_header_only_types_have_no_content_whatever_their_size() -> None:
    data = header(b"h", 512, b"1") + header(b"d", 512, b"5") + header(b"after", 2) + padded(b"ok") + END
    got = [(m, drain(rd)) for m, rd in members(reader(data))]
    assert got == [
        (Member("h", 0, "other", False), b""),
        (Member("d", 0, "dir", False), b""),
        (Member("after", 2, "file", False), b"ok"),
    ]


def test_unknown_types_carry_their_data() -> None:
    data = header(b"dumpdir", 4, b"D") + padded(b"Yabc") + header(b"b", 1) + padded(b"z") + END
    got = [(m, drain(rd)) for m, rd in members(reader(data))]
    assert got == [(Member("dumpdir", 4, "other", False), b"Yabc"), (Member("b", 1, "file", False), b"z")]


def test_old_gnu_sparse_with_extension_blocks() -> None:
    gnu = b"ustar  \0"
    ext = bytearray(512)
    ext[504] = 1
    last = bytes(512)
    data = header(b"s", 3, b"S", magic=gnu, extra={482: b"\1"}) + bytes(ext) + last + padded(b"abc")
    data += header(b"t", 1, magic=gnu) + padded(b"z") + END
    got = [(m, drain(rd)) for m, rd in members(reader(data))]
    assert got == [(Member("s", 3, "file", True), b"abc"), (Member("t", 1, "file", False), b"z")]


def test_end_of_archive() -> None:
    assert listing(b"") == []
    assert listing(bytes(512)) == []
    assert listing(bytes(10240)) == []
    body = header(b"a", 1) + padded(b"z")
    assert [n for n, *_ in listing(body)] == ["a"]  # no end marker: a clean end at a header
    assert [n for n, *_ in listing(body + bytes(512) + b"trailing junk")] == ["a"]


# --- bad input ------------------------------------------------------------------------------


def bad(data: bytes, match: str | None = None) -> None:
    with pytest.raises(TarError, match=match):
        listing(data)


def test_truncated_header() -> None:
    data = header(b"a", 1) + padded(b"z") + header(b"b", 1) + padded(b"y") + END
    bad(data[:100], "inside a header")
    bad(data[: 1024 + 300], "inside a header")


def test_truncated_content() -> None:
    data = header(b"a", 2000) + padded(b"z" * 2000) + END
    bad(data[:1000], "inside a member")
    with pytest.raises(TarError):  # unread, the skip finds it
        for _ in members(reader(data[:1000])):
            pass
    bad(data[: 512 + 2010], "inside a member")  # the padding is missing


def test_checksum_errors() -> None:
    data = bytearray(header(b"a", 1) + padded(b"z") + header(b"b", 1) + padded(b"y") + END)
    data[3] ^= 1
    bad(bytes(data), "checksum")
    data[3] ^= 1
    data[1024 + 20] = ord("q")  # the second header: tarfile would end the archive quietly
    bad(bytes(data), "checksum")


def test_garbage() -> None:
    bad(b"this is not a tar archive\n" * 100)
    bad(random.Random(5).randbytes(10_000))
    bad(b"tiny")


def test_oversized_extended_headers() -> None:
    bad(header(b"PaxHeader", 1 << 30, b"x") + bytes(4096), "1 MiB")
    bad(header(b"././@LongLink", (1 << 20) + 1, b"L") + bytes(4096), "1 MiB")
    ok = header(b"././@LongLink", 1 << 20, b"L") + b"n" * ((1 << 20) - 1) + b"\0" + header(b"x") + END
    assert one(ok)[0].name == "n" * ((1 << 20) - 1)


@pytest.mark.parametrize(
    "body",
    [
        b"99 path=x\n",
        b"9 path=x\n\n",
        b"8 path=x",
        b"x path=x\n",
        b"10 pathx y\n",
        b"7 =abc\n",
        b"12 size=abc\n",
        b"11 size=-5\n",
        b"29 size=99999999999999999999\n",
    ],
)
def test_malformed_pax_records(body: bytes) -> None:
    bad(header(b"PaxHeader", len(body), b"x") + padded(body) + header(b"a") + END)


def test_extended_header_without_member() -> None:
    bad(pax({b"path": b"p"}), "extended header")
    bad(pax({b"path": b"p"}) + END, "extended header")
    bad(header(b"PaxHeader", 100, b"x") + b"20 path=", "extended header")
