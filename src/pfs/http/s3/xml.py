"""S3's XML: the answers the gateway renders and the few request bodies it parses.

Rendering builds the text directly with escaping (SDKs parse it; S3's element names and namespace are kept
exactly). A character XML 1.0 cannot carry at all (control characters but tab, LF and CR; lone surrogates)
is never written, even as `&#1;`, which is not well-formed either: a listing whose key, prefix or marker
has one is InvalidArgument, whose message says to list with `encoding-type=url`, the remedy S3 documents
(URL-encoded names are plain ASCII). pfs paths cannot contain control characters, so in practice only a
client's own prefix or marker can trigger it. CR is written as `&#13;` so that it survives XML's line-end
normalisation. Error bodies never fail: there such characters are shown as `\\xNN`.

Request bodies are parsed with defusedxml rather than the standard library alone: a DTD is refused
outright, so no entity expansion (billion laughs, quadratic blowup) or external entity (file or network
reads) can happen, and bodies are bounded in bytes, elements and depth before any of it is used. Every
way a body can be wrong is MalformedXML (or S3's more specific code), never a parser exception.
"""

from __future__ import annotations

import io
import re
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape

from defusedxml import ElementTree as SafeET
from defusedxml.common import DefusedXmlException

from .protocol import MAX_KEYS, MAX_PARTS, S3_NS, Page, S3Error, encode_token, iso_time, quote_etag, unquote_etag

MAX_DELETE_BODY = 2 << 20  # 1000 keys of up to 1024 bytes, with version ids and some escaping
MAX_COMPLETE_BODY = 4 << 20  # 10,000 parts with ETags and checksums, pretty-printed
MAX_CREATE_BUCKET_BODY = 64 << 10

_ILLEGAL_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_ESCAPES = {'"': "&quot;", "\r": "&#13;"}
_XML_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class Owner:
    id: str
    display_name: str = ""


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    etag: str
    last_modified: float
    storage_class: str = "STANDARD"


@dataclass(frozen=True)
class VersionInfo:
    version_id: str
    is_latest: bool
    last_modified: float
    etag: str = ""
    size: int = 0
    delete_marker: bool = False
    storage_class: str = "STANDARD"


@dataclass(frozen=True)
class PartInfo:
    part_number: int
    size: int
    etag: str
    last_modified: float


@dataclass(frozen=True)
class UploadInfo:
    upload_id: str
    initiated: float
    storage_class: str = "STANDARD"


# -- rendering -----------------------------------------------------------------------------------------------


def _text(value: str) -> str:
    if _ILLEGAL_XML.search(value):
        raise S3Error(
            "InvalidArgument",
            "a key, prefix or marker has characters XML 1.0 cannot carry: list with encoding-type=url",
        )
    return escape(value, _ESCAPES)


def _safe_text(value: str) -> str:
    """For error bodies, which must always render: unrepresentable characters shown as \\xNN / \\uNNNN."""
    shown = _ILLEGAL_XML.sub(lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100 else f"\\u{ord(m[0]):04x}", value)
    return escape(shown, _ESCAPES)


class _Doc:
    """An XML document written as text: elements in order, values escaped."""

    def __init__(self, root: str, *, namespace: bool = True) -> None:
        self._root = root
        xmlns = f' xmlns="{S3_NS}"' if namespace else ""
        self._parts = [f'<?xml version="1.0" encoding="UTF-8"?>\n<{root}{xmlns}>']

    def el(self, name: str, value: str | int | bool | None, *, url: bool = False) -> None:
        """`<name>value</name>`; None writes nothing; `url` URL-encodes the value (EncodingType=url)."""
        if value is None:
            return
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int):
            text = str(value)
        elif url:
            text = urllib.parse.quote(value, safe="/", errors="surrogatepass")
        else:
            text = _text(value)
        self._parts.append(f"<{name}>{text}</{name}>")

    def raw(self, text: str) -> None:
        self._parts.append(text)

    def open(self, name: str) -> None:
        self._parts.append(f"<{name}>")

    def close(self, name: str) -> None:
        self._parts.append(f"</{name}>")

    def owner(self, owner: Owner | None, element: str = "Owner") -> None:
        if owner is None:
            return
        self.open(element)
        self.el("ID", owner.id)
        self.el("DisplayName", owner.display_name)
        self.close(element)

    def finish(self) -> bytes:
        self._parts.append(f"</{self._root}>")
        return "".join(self._parts).encode("utf-8")


def error_xml(
    code: str, message: str, resource: str = "", request_id: str = "", extra: Mapping[str, str] | None = None
) -> bytes:
    """S3's error body (no namespace, as S3 writes it); `extra` adds elements such as RequestTime."""
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error>',
        f"<Code>{_safe_text(code)}</Code><Message>{_safe_text(message)}</Message>",
    ]
    if resource:
        parts.append(f"<Resource>{_safe_text(resource)}</Resource>")
    if request_id:
        parts.append(f"<RequestId>{_safe_text(request_id)}</RequestId>")
    for name, value in (extra or {}).items():
        if _XML_NAME.fullmatch(name):
            parts.append(f"<{name}>{_safe_text(value)}</{name}>")
    parts.append("</Error>")
    return "".join(parts).encode("utf-8")


def error_body(error: S3Error, request_id: str = "") -> bytes:
    return error_xml(error.code, error.message, error.resource, request_id, error.extra)


def list_buckets_xml(buckets: Sequence[tuple[str, float]], owner: Owner) -> bytes:
    """ListBuckets: (name, creation time) pairs."""
    doc = _Doc("ListAllMyBucketsResult")
    doc.owner(owner)
    doc.open("Buckets")
    for name, created in buckets:
        doc.open("Bucket")
        doc.el("Name", name)
        doc.el("CreationDate", iso_time(created))
        doc.close("Bucket")
    doc.close("Buckets")
    return doc.finish()


def _contents(doc: _Doc, page: Page[ObjectInfo], url: bool, owner: Owner | None) -> None:
    for key, info in page.contents:
        doc.open("Contents")
        doc.el("Key", key, url=url)
        doc.el("LastModified", iso_time(info.last_modified))
        doc.el("ETag", quote_etag(info.etag))
        doc.el("Size", info.size)
        doc.owner(owner)
        doc.el("StorageClass", info.storage_class)
        doc.close("Contents")
    _common_prefixes(doc, page.common_prefixes, url)


def _common_prefixes(doc: _Doc, prefixes: Sequence[str], url: bool) -> None:
    for prefix in prefixes:
        doc.open("CommonPrefixes")
        doc.el("Prefix", prefix, url=url)
        doc.close("CommonPrefixes")


def list_objects_v1_xml(
    bucket: str,
    page: Page[ObjectInfo],
    *,
    prefix: str = "",
    delimiter: str | None = None,
    marker: str = "",
    max_keys: int = MAX_KEYS,
    url: bool = False,
    owner: Owner | None = None,
) -> bytes:
    """ListObjects (V1). NextMarker is given whenever the page is truncated (S3 gives it only with a
    delimiter; SDKs use it when present and fall back to the last key otherwise). `url`: EncodingType=url,
    which URL-encodes Prefix, Marker, NextMarker, Delimiter, Key and the common prefixes."""
    doc = _Doc("ListBucketResult")
    doc.el("Name", bucket)
    doc.el("Prefix", prefix, url=url)
    doc.el("Marker", marker, url=url)
    if page.is_truncated:
        doc.el("NextMarker", page.next_marker, url=url)
    doc.el("MaxKeys", max_keys)
    doc.el("Delimiter", delimiter or None, url=url)
    doc.el("IsTruncated", page.is_truncated)
    doc.el("EncodingType", "url" if url else None)
    _contents(doc, page, url, owner)
    return doc.finish()


def list_objects_v2_xml(
    bucket: str,
    page: Page[ObjectInfo],
    *,
    prefix: str = "",
    delimiter: str | None = None,
    max_keys: int = MAX_KEYS,
    start_after: str | None = None,
    continuation_token: str | None = None,
    url: bool = False,
    owner: Owner | None = None,
) -> bytes:
    """ListObjectsV2. The next continuation token is `encode_token(page.next_marker)`; `owner` is given
    only with fetch-owner=true, as in S3."""
    doc = _Doc("ListBucketResult")
    doc.el("Name", bucket)
    doc.el("Prefix", prefix, url=url)
    doc.el("MaxKeys", max_keys)
    doc.el("KeyCount", page.key_count)
    doc.el("IsTruncated", page.is_truncated)
    doc.el("ContinuationToken", continuation_token)
    if page.is_truncated and page.next_marker is not None:
        doc.el("NextContinuationToken", encode_token(page.next_marker))
    doc.el("StartAfter", start_after, url=url)
    doc.el("Delimiter", delimiter or None, url=url)
    doc.el("EncodingType", "url" if url else None)
    _contents(doc, page, url, owner)
    return doc.finish()


def list_object_versions_xml(
    bucket: str,
    versions: Sequence[tuple[str, VersionInfo]],
    common_prefixes: Sequence[str] = (),
    *,
    prefix: str = "",
    delimiter: str | None = None,
    key_marker: str = "",
    version_id_marker: str = "",
    next_key_marker: str | None = None,
    next_version_id_marker: str | None = None,
    max_keys: int = MAX_KEYS,
    is_truncated: bool = False,
    url: bool = False,
    owner: Owner | None = None,
) -> bytes:
    """ListObjectVersions: (key, version) pairs in key order, newest version first within a key; delete
    markers are written as DeleteMarker elements in their place."""
    doc = _Doc("ListVersionsResult")
    doc.el("Name", bucket)
    doc.el("Prefix", prefix, url=url)
    doc.el("KeyMarker", key_marker, url=url)
    doc.el("VersionIdMarker", version_id_marker)
    if is_truncated:
        doc.el("NextKeyMarker", next_key_marker, url=url)
        doc.el("NextVersionIdMarker", next_version_id_marker)
    doc.el("MaxKeys", max_keys)
    doc.el("Delimiter", delimiter or None, url=url)
    doc.el("IsTruncated", is_truncated)
    doc.el("EncodingType", "url" if url else None)
    for key, version in versions:
        element = "DeleteMarker" if version.delete_marker else "Version"
        doc.open(element)
        doc.el("Key", key, url=url)
        doc.el("VersionId", version.version_id)
        doc.el("IsLatest", version.is_latest)
        doc.el("LastModified", iso_time(version.last_modified))
        if not version.delete_marker:
            doc.el("ETag", quote_etag(version.etag))
            doc.el("Size", version.size)
            doc.el("StorageClass", version.storage_class)
        doc.owner(owner)
        doc.close(element)
    _common_prefixes(doc, common_prefixes, url)
    return doc.finish()


def initiate_multipart_xml(bucket: str, key: str, upload_id: str) -> bytes:
    doc = _Doc("InitiateMultipartUploadResult")
    doc.el("Bucket", bucket)
    doc.el("Key", key)
    doc.el("UploadId", upload_id)
    return doc.finish()


def complete_multipart_xml(location: str, bucket: str, key: str, etag: str) -> bytes:
    doc = _Doc("CompleteMultipartUploadResult")
    doc.el("Location", location)
    doc.el("Bucket", bucket)
    doc.el("Key", key)
    doc.el("ETag", quote_etag(etag))
    return doc.finish()


def list_parts_xml(
    bucket: str,
    key: str,
    upload_id: str,
    parts: Sequence[PartInfo],
    *,
    part_number_marker: int = 0,
    next_part_number_marker: int | None = None,
    max_parts: int = MAX_KEYS,
    is_truncated: bool = False,
    owner: Owner | None = None,
    storage_class: str = "STANDARD",
) -> bytes:
    doc = _Doc("ListPartsResult")
    doc.el("Bucket", bucket)
    doc.el("Key", key)
    doc.el("UploadId", upload_id)
    doc.owner(owner, "Initiator")
    doc.owner(owner)
    doc.el("StorageClass", storage_class)
    doc.el("PartNumberMarker", part_number_marker)
    if is_truncated:
        doc.el("NextPartNumberMarker", next_part_number_marker)
    doc.el("MaxParts", max_parts)
    doc.el("IsTruncated", is_truncated)
    for part in parts:
        doc.open("Part")
        doc.el("PartNumber", part.part_number)
        doc.el("LastModified", iso_time(part.last_modified))
        doc.el("ETag", quote_etag(part.etag))
        doc.el("Size", part.size)
        doc.close("Part")
    return doc.finish()


def copy_object_result_xml(etag: str, last_modified: float, *, part: bool = False) -> bytes:
    """CopyObject's answer, or UploadPartCopy's (`part`)."""
    doc = _Doc("CopyPartResult" if part else "CopyObjectResult")
    doc.el("LastModified", iso_time(last_modified))
    doc.el("ETag", quote_etag(etag))
    return doc.finish()


def delete_result_xml(
    deleted: Sequence[tuple[str, str | None]],
    errors: Sequence[tuple[str, str | None, str, str]],
    quiet: bool = False,
) -> bytes:
    """DeleteObjects: `deleted` (key, version id); `errors` (key, version id, code, message). Quiet mode
    reports only the errors, as S3 does."""
    doc = _Doc("DeleteResult")
    if not quiet:
        for key, version_id in deleted:
            doc.open("Deleted")
            doc.el("Key", key)
            doc.el("VersionId", version_id)
            doc.close("Deleted")
    for key, version_id, code, message in errors:
        doc.open("Error")
        doc.el("Key", key)
        doc.el("VersionId", version_id)
        doc.raw(f"<Code>{_safe_text(code)}</Code><Message>{_safe_text(message)}</Message>")
        doc.close("Error")
    return doc.finish()


def location_xml(region: str) -> bytes:
    """GetBucketLocation: us-east-1 is an empty LocationConstraint, as S3 answers (SDKs read it as such)."""
    if region == "us-east-1":
        return f'<?xml version="1.0" encoding="UTF-8"?>\n<LocationConstraint xmlns="{S3_NS}"/>'.encode()
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<LocationConstraint xmlns="{S3_NS}">'
        f"{_text(region)}</LocationConstraint>".encode()
    )


def list_multipart_uploads_xml(
    bucket: str,
    uploads: Sequence[tuple[str, UploadInfo]],
    common_prefixes: Sequence[str] = (),
    *,
    prefix: str = "",
    delimiter: str | None = None,
    key_marker: str = "",
    upload_id_marker: str = "",
    next_key_marker: str | None = None,
    next_upload_id_marker: str | None = None,
    max_uploads: int = MAX_KEYS,
    is_truncated: bool = False,
    url: bool = False,
    owner: Owner | None = None,
) -> bytes:
    doc = _Doc("ListMultipartUploadsResult")
    doc.el("Bucket", bucket)
    doc.el("KeyMarker", key_marker, url=url)
    doc.el("UploadIdMarker", upload_id_marker)
    if is_truncated:
        doc.el("NextKeyMarker", next_key_marker, url=url)
        doc.el("NextUploadIdMarker", next_upload_id_marker)
    doc.el("Prefix", prefix, url=url)
    doc.el("Delimiter", delimiter or None, url=url)
    doc.el("MaxUploads", max_uploads)
    doc.el("IsTruncated", is_truncated)
    doc.el("EncodingType", "url" if url else None)
    for key, upload in uploads:
        doc.open("Upload")
        doc.el("Key", key, url=url)
        doc.el("UploadId", upload.upload_id)
        doc.owner(owner, "Initiator")
        doc.owner(owner)
        doc.el("StorageClass", upload.storage_class)
        doc.el("Initiated", iso_time(upload.initiated))
        doc.close("Upload")
    _common_prefixes(doc, common_prefixes, url)
    return doc.finish()


def acl_xml(owner: Owner) -> bytes:
    """GetBucketAcl / GetObjectAcl of something private to its owner: FULL_CONTROL for the owner only."""
    doc = _Doc("AccessControlPolicy")
    doc.owner(owner)
    doc.open("AccessControlList")
    doc.raw('<Grant><Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="CanonicalUser">')
    doc.el("ID", owner.id)
    doc.el("DisplayName", owner.display_name)
    doc.raw("</Grantee><Permission>FULL_CONTROL</Permission></Grant>")
    doc.close("AccessControlList")
    return doc.finish()


def versioning_xml(status: str | None = "Enabled") -> bytes:
    """GetBucketVersioning: pfs keeps every version (commits), so Enabled; None renders the empty
    configuration S3 gives a bucket that never had versioning."""
    doc = _Doc("VersioningConfiguration")
    doc.el("Status", status)
    return doc.finish()


# -- parsing -------------------------------------------------------------------------------------------------


def _malformed(detail: str) -> S3Error:
    return S3Error("MalformedXML", f"The XML you provided was not well-formed or did not validate: {detail}")


def _local(tag: object) -> str:
    """An element's name without the S3 namespace (clients send it or not); any other namespace is wrong."""
    if not isinstance(tag, str):
        raise _malformed("unexpected XML node")
    if tag.startswith("{"):
        namespace, _, name = tag[1:].partition("}")
        if namespace != S3_NS:
            raise _malformed(f"unexpected namespace {namespace[:100]!r}")
        return name
    return tag


def _parse(body: bytes, root: str, limit: int, max_elements: int, max_depth: int) -> ET.Element:
    """The document's root element, parsed within bounds: `limit` bytes (MaxMessageLengthExceeded), and the
    parse stops at the first element past `max_elements` or deeper than `max_depth`."""
    if len(body) > limit:
        raise S3Error("MaxMessageLengthExceeded", f"Your request was too big: more than {limit} bytes of XML.")
    top: ET.Element | None = None
    count = depth = 0
    try:
        for event, element in SafeET.iterparse(io.BytesIO(body), events=("start", "end"), forbid_dtd=True):
            if event == "end":
                depth -= 1
                continue
            count += 1
            depth += 1
            if count > max_elements:
                raise _malformed(f"more than {max_elements} elements")
            if depth > max_depth:
                raise _malformed(f"elements nested deeper than {max_depth}")
            if top is None:
                top = element
    except (ET.ParseError, DefusedXmlException, ValueError, LookupError, UnicodeError) as e:
        # ParseError: not well-formed; DefusedXmlException: a DTD, entity or external reference;
        # LookupError/UnicodeError: an encoding declaration Python does not know or bytes that are not in it
        raise _malformed(type(e).__name__) from None
    if top is None:
        raise _malformed("no root element")
    if _local(top.tag) != root:
        raise _malformed(f"the root element must be {root}")
    return top


def _single_text(seen: dict[str, str], name: str, element: ET.Element) -> str:
    if name in seen:
        raise _malformed(f"{name} is given twice")
    seen[name] = element.text or ""
    return seen[name]


def parse_delete(body: bytes) -> tuple[list[tuple[str, str | None]], bool]:
    """DeleteObjects' body -> ([(key, version id or None)], quiet): 1 to 1000 objects, each with a non-empty
    Key (keys are returned as sent, the caller checks each and reports bad ones per key). Conditional
    deletes (ETag, LastModifiedTime, Size in an Object) are NotImplemented rather than ignored, since
    ignoring them would delete what the client asked to keep."""
    top = _parse(body, "Delete", MAX_DELETE_BODY, 2 + MAX_KEYS * 3, 3)
    quiet = False
    seen_top: dict[str, str] = {}
    objects: list[tuple[str, str | None]] = []
    for child in top:
        name = _local(child.tag)
        if name == "Quiet":
            value = _single_text(seen_top, name, child).strip().lower()
            if value not in ("true", "false"):
                raise _malformed("Quiet must be true or false")
            quiet = value == "true"
        elif name == "Object":
            fields: dict[str, str] = {}
            for item in child:
                field = _local(item.tag)
                if field in ("ETag", "LastModifiedTime", "Size"):
                    raise S3Error("NotImplemented", f"conditional deletes ({field} in Delete) are not supported")
                if field not in ("Key", "VersionId"):
                    raise _malformed(f"unexpected element {field[:64]!r} in Object")
                _single_text(fields, field, item)
            if not fields.get("Key"):
                raise _malformed("every Object needs a non-empty Key")
            objects.append((fields["Key"], fields.get("VersionId") or None))
            if len(objects) > MAX_KEYS:
                raise _malformed(f"at most {MAX_KEYS} objects can be deleted in one request")
        else:
            raise _malformed(f"unexpected element {name[:64]!r} in Delete")
    if not objects:
        raise _malformed("Delete names no Object")
    return objects, quiet


def parse_complete_multipart(body: bytes) -> list[tuple[int, str]]:
    """CompleteMultipartUpload's body -> [(part number, ETag without quotes)]: at least one part, numbers
    1..10000 (InvalidArgument) in strictly ascending order (InvalidPartOrder). Per-part checksums
    (ChecksumCRC32, ...) are accepted and not used: pfs verifies content by its own hashes."""
    top = _parse(body, "CompleteMultipartUpload", MAX_COMPLETE_BODY, 1 + MAX_PARTS * 8, 3)
    parts: list[tuple[int, str]] = []
    for child in top:
        if _local(child.tag) != "Part":
            raise _malformed("CompleteMultipartUpload may hold only Part elements")
        fields: dict[str, str] = {}
        for item in child:
            field = _local(item.tag)
            if field in ("PartNumber", "ETag"):
                _single_text(fields, field, item)
            elif not field.startswith("Checksum"):
                raise _malformed(f"unexpected element {field[:64]!r} in Part")
        number_text = fields.get("PartNumber", "").strip()
        etag = unquote_etag(fields.get("ETag", ""))
        if not re.fullmatch(r"[0-9]{1,9}", number_text) or not etag or len(etag) > 128:
            raise _malformed("every Part needs a PartNumber and an ETag")
        number = int(number_text)
        if not 1 <= number <= MAX_PARTS:
            raise S3Error("InvalidArgument", f"Part number must be an integer between 1 and {MAX_PARTS}, inclusive")
        if parts and number <= parts[-1][0]:
            raise S3Error("InvalidPartOrder")
        parts.append((number, etag))
    if not parts:
        raise _malformed("You must specify at least one part")
    return parts


def parse_create_bucket(body: bytes) -> str | None:
    """CreateBucket's optional body -> its LocationConstraint (None: none given, or no body)."""
    if len(body) <= MAX_CREATE_BUCKET_BODY and not body.strip():
        return None
    top = _parse(body, "CreateBucketConfiguration", MAX_CREATE_BUCKET_BODY, 16, 3)
    seen: dict[str, str] = {}
    for child in top:
        name = _local(child.tag)
        if name != "LocationConstraint":
            raise _malformed(f"unexpected element {name[:64]!r} in CreateBucketConfiguration")
        _single_text(seen, name, child)
    location = seen.get("LocationConstraint", "").strip()
    if location and not re.fullmatch(r"[a-z0-9-]{1,32}", location):
        raise S3Error("InvalidLocationConstraint")
    return location or None
