"""Validation of every user-supplied name: file paths, branch names, commit ids.

Names are checked once at the edge, strictly, so nothing below ever has to worry about
`..`, absolute paths or control characters escaping into storage keys.
"""

from __future__ import annotations

import re

from .errors import BadRequest, InvalidName, InvalidPath

MAX_PATH = 4096
MAX_SEGMENT = 255
MAX_DEPTH = 256  # directories a path may go through: deep enough for any real tree, and
# bounded so that no walk of a tree (commit, diff, listing, sync) can run out of stack
MAX_MESSAGE = 8192  # bytes of a commit message: git's are rarely a tenth of this
_REF_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,99}$")
_HEX_RE = re.compile(r"^[0-9a-f]{4,64}$")
_FORBIDDEN = set(chr(c) for c in range(0x20)) | {"\x7f", "\\", "*"}


# What most paths are: ASCII segments of allowed characters. One regex match instead of a
# loop per segment (an archive of a million files checks a million paths).
_PLAIN = re.compile(r"[^\x00-\x1f\x7f\\*/]{1,255}(?:/[^\x00-\x1f\x7f\\*/]{1,255})*")


def clean_path(raw: str, *, allow_root: bool = False) -> str:
    """Return a canonical relative path ("a/b.txt"), or raise InvalidPath."""
    if (
        raw.isascii()
        and len(raw) <= MAX_PATH
        and _PLAIN.fullmatch(raw)
        and raw.count("/") < MAX_DEPTH
        and "/./" not in f"/{raw}/"
        and "/../" not in f"/{raw}/"
    ):
        return raw
    if "\x00" in raw:
        raise InvalidPath("path contains a NUL byte")
    if raw.startswith("/"):
        raise InvalidPath(f"absolute paths are not allowed: {raw[:100]!r}")
    if raw.endswith("/"):
        raw = raw[:-1]
    if raw == "":
        if allow_root:
            return ""
        raise InvalidPath("empty path")
    if len(raw.encode("utf-8", "surrogatepass")) > MAX_PATH:
        raise InvalidPath(f"path longer than {MAX_PATH} bytes")
    segments = raw.split("/")
    if len(segments) > MAX_DEPTH:
        raise InvalidPath(f"path deeper than {MAX_DEPTH} levels")
    for seg in segments:
        if seg in ("", ".", ".."):
            raise InvalidPath(f"path segment {seg!r} is not allowed in {raw[:100]!r}")
        if len(seg.encode("utf-8", "surrogatepass")) > MAX_SEGMENT:
            raise InvalidPath(f"path segment longer than {MAX_SEGMENT} bytes")
        bad = _FORBIDDEN.intersection(seg)
        if bad:
            raise InvalidPath(f"path contains a forbidden character {sorted(bad)[0]!r}")
        try:
            seg.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidPath("path is not valid UTF-8") from None
    return raw


def check_branch(name: str) -> str:
    """Branch names: git-like, short, and never mistakable for a commit id."""
    if not _REF_RE.fullmatch(name) or ".." in name or name.endswith(".lock"):  # fullmatch: "$" allows a final "\n"
        raise InvalidName(f"invalid branch name {name[:100]!r}: use letters, digits, '.', '_' and '-'")
    if is_commit_like(name):
        raise InvalidName(f"branch name {name!r} looks like a commit id")
    return name


_REPO_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_IPV4_RE = re.compile(r"^\d+\.\d+\.\d+\.\d+$")


_USER_RE = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")
_PATTERN_RE = re.compile(r"[A-Za-z0-9_*?\[][A-Za-z0-9._*?\[\]!-]{0,99}")


def check_user_name(name: str) -> str:
    """User names: 1-64 lowercase letters, digits, '.', '_', '@' and '-' (an e-mail address
    fits), starting with a letter or digit; they appear in audit entries and logs as given."""
    if not _USER_RE.fullmatch(name):
        raise InvalidName(
            f"invalid user name {name[:100]!r}: 1-64 lowercase letters, digits, '.', '_', '@' and '-',"
            " starting with a letter or digit"
        )
    return name


def check_branch_pattern(pattern: str) -> str:
    """A protected-branch rule: a branch name, or a glob of one (`release-*`, `v[0-9]*`)."""
    if not _PATTERN_RE.fullmatch(pattern) or ".." in pattern:
        raise InvalidName(
            f"invalid branch pattern {pattern[:100]!r}: a branch name, with '*', '?' or '[...]' as wildcards"
        )
    return pattern


def check_repo_name(name: str) -> str:
    """Repository names are S3 bucket names (the gateway's buckets): 3-63 characters,
    lowercase letters, digits and hyphens, a letter or digit at each end; not the forms
    S3 reserves (`xn--…`, `…-s3alias`)."""
    if (
        not _REPO_RE.fullmatch(name)
        or name.startswith(("xn--", "sthree-"))
        or name.endswith(("-s3alias", "--ol-s3"))
        or _IPV4_RE.fullmatch(name)
    ):
        raise InvalidName(
            f"invalid repository name {name[:100]!r}: 3-63 lowercase letters, digits and '-',"
            " starting and ending with a letter or digit"
        )
    return name


MAX_META = 2048  # bytes of an object's metadata, names and values together: S3's own limit
_META_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")


def check_meta(items: object) -> tuple[tuple[str, str], ...]:
    """An object's metadata (content-type, x-amz-meta-*, … as an S3 client sets them):
    lowercase token names, printable values, at most 2 KiB in all; sorted by name."""
    if not isinstance(items, dict | tuple | list):
        raise BadRequest("metadata must be a mapping of names to values")
    pairs = list(items.items()) if isinstance(items, dict) else list(items)
    total = 0
    out: dict[str, str] = {}
    for pair in pairs:
        if not (isinstance(pair, tuple | list) and len(pair) == 2):
            raise BadRequest("metadata must be a mapping of names to values")
        name, value = pair
        if not isinstance(name, str) or not isinstance(value, str) or not _META_NAME_RE.fullmatch(name):
            raise BadRequest(f"invalid metadata name {str(name)[:60]!r}")
        if _FORBIDDEN.intersection(value) - {"\\", "*"} or "\x7f" in value:
            raise BadRequest(f"metadata {name!r} has a control character")
        if name in out:
            raise BadRequest(f"metadata {name!r} is given twice")
        total += len(name.encode()) + len(value.encode("utf-8", "surrogatepass"))
        out[name] = value
    if total > MAX_META:
        raise BadRequest(f"metadata larger than {MAX_META} bytes")
    return tuple(sorted(out.items()))


def check_message(message: str) -> str:
    """Commit messages: any text (newlines too; plain-text output escapes what it shows),
    bounded, since every log reader pays for every message."""
    if "\x00" in message:
        raise BadRequest("commit message contains a NUL byte")
    if len(message.encode("utf-8", "surrogatepass")) > MAX_MESSAGE:
        raise BadRequest(f"commit message longer than {MAX_MESSAGE} bytes")
    try:
        message.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("commit message is not valid UTF-8") from None
    return message


def is_commit_like(name: str) -> bool:
    return bool(_HEX_RE.fullmatch(name)) and len(name) >= 8


def parent_dirs(path: str) -> list[str]:
    """ "a/b/c" -> ["a", "a/b"]."""
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def under(path: str, directory: str) -> str | None:
    """`path` relative to `directory` ("" for the directory itself; every path is under the
    root, ""); None if it is neither that directory nor below it."""
    if directory == "":
        return path
    if path == directory:
        return ""
    if path.startswith(directory) and path[len(directory)] == "/":
        return path[len(directory) + 1 :]
    return None


def split(path: str) -> tuple[str, str]:
    """ "a/b/c" -> ("a/b", "c"); "c" -> ("", "c")."""
    head, _, tail = path.rpartition("/")
    return head, tail


def join(directory: str, name: str) -> str:
    return f"{directory}/{name}" if directory else name


_DURATION = re.compile(r"(\d{1,9}(?:\.\d{1,6})?)([smhd]?)")
_UNIT = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
MAX_DURATION = 3650 * 86400.0  # ten years


def parse_duration(text: str, what: str = "duration") -> float:
    """Seconds from "90", "90s", "30m", "24h", "7d" (a grace period, a retention)."""
    m = _DURATION.fullmatch(text.strip())
    if m is None:
        raise BadRequest(f"{what} {text[:40]!r} is not a duration: give seconds, or a number with s, m, h or d")
    seconds = float(m.group(1)) * _UNIT[m.group(2)]
    if seconds > MAX_DURATION:
        raise BadRequest(f"{what} {text[:40]!r} is more than ten years")
    return seconds


def human_duration(seconds: float) -> str:
    """2592000 -> "30d", 5400 -> "90m": the largest unit `parse_duration` reads back exactly."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size:.0f}{unit}"
    return f"{seconds:g}s"


def human_bytes(n: int | None) -> str:
    """1536 -> "1.5 KiB"; None (not computed) -> "-"."""
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
