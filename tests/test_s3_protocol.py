"""The S3 gateway's protocol layer, without a server: SigV4, aws-chunked bodies, XML, names, listing pages.

Signatures are made by botocore itself (its signers, and boto3 clients whose requests are captured before
they are sent), aws-chunked bodies by botocore's own encoder or by AWS's documented example and chain, and
rendered XML is read back by botocore's parsers: agreement with our own code alone would prove little.
Hostile input must give an S3Error with S3's code, quickly, never another exception.
"""

from __future__ import annotations

import base64
import bisect
import calendar
import contextlib
import datetime as dt
import hashlib
import hmac
import io
import random
import time
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

import boto3
import botocore.auth
import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest, AWSResponse
from botocore.config import Config as BotoConfig
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum

from pfs.http.s3 import protocol, sigv4
from pfs.http.s3 import xml as s3xml
from pfs.http.s3.protocol import S3Error

NOW = dt.datetime(2026, 1, 2, 3, 4, 5)  # botocore signs at this (naive UTC) time in every test
NOW_TS = float(calendar.timegm(NOW.timetuple()))
ACCESS_KEY = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
CREDS = Credentials(ACCESS_KEY, SECRET)
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: NOW)


@contextlib.contextmanager
def s3_error(code: str) -> Iterator[pytest.ExceptionInfo[S3Error]]:
    """The block raises an S3Error with this code (and nothing else)."""
    with pytest.raises(S3Error) as info:
        yield info
    assert info.value.code == code, (info.value.code, info.value.message)
    assert info.value.status == protocol.CODES[code][0]


# -- requests signed by botocore -----------------------------------------------------------------------------


def _text_headers(headers: Any) -> dict[str, str]:
    return {k: v.decode("latin-1") if isinstance(v, bytes) else v for k, v in headers.items()}


def sign(
    method: str, url: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[str, str, dict[str, str]]:
    """(raw path, raw query, headers with Host) of a request signed by botocore's S3 signer."""
    request = AWSRequest(method=method, url=url, data=body, headers=headers or {})
    S3SigV4Auth(CREDS, "s3", "us-east-1").add_auth(request)
    parts = urlsplit(request.url)
    sent = _text_headers(request.headers)
    sent["Host"] = parts.netloc
    return parts.path, parts.query, sent


def check(
    method: str, path: str | bytes, raw_query: str, headers: dict[str, str], secret: str = SECRET, now: float = NOW_TS
) -> sigv4.SigV4Auth:
    """What the gateway will do: authenticate, then verify with the key's secret."""
    query = protocol.parse_query(raw_query)
    auth = sigv4.authenticate(headers, query, now=now)
    assert auth is not None
    sigv4.verify(auth, method, path, query, headers, sigv4.payload_hash(auth, headers), secret)
    return auth


URL = "http://repo.s3.localhost:9000/master/dir/a%20b%2Bc~%28x%29.txt?partNumber=2&uploadId=a%2Bb%2Fc"


def test_sigv4_verifies_botocore_header_signatures() -> None:
    path, query, headers = sign(
        "PUT", URL, b"hello", {"Content-Type": "text/plain", "x-amz-meta-color": " dark   blue "}
    )
    auth = check("PUT", path, query, headers)
    assert (auth.access_key, auth.date, auth.region, auth.service) == (ACCESS_KEY, "20260102", "us-east-1", "s3")
    assert auth.amz_date == "20260102T030405Z" and not auth.presigned
    assert "x-amz-meta-color" in auth.signed_headers


@pytest.mark.parametrize(
    "tamper",
    ["header", "path", "query", "extra-query", "secret", "method", "host", "payload-hash", "region"],
)
def test_sigv4_one_changed_byte_fails(tamper: str) -> None:
    path, query, headers = sign("PUT", URL, b"hello", {"x-amz-meta-color": "blue"})
    method, secret = "PUT", SECRET
    if tamper == "header":
        headers["x-amz-meta-color"] = "bluf"
    elif tamper == "path":
        path = path.replace("a%20b", "a%20c")
    elif tamper == "query":
        query = query.replace("partNumber=2", "partNumber=3")
    elif tamper == "extra-query":
        query += "&versionId=1"
    elif tamper == "secret":
        secret = SECRET[:-1] + "X"
    elif tamper == "method":
        method = "POST"
    elif tamper == "host":
        headers["Host"] = "other.s3.localhost:9000"
    elif tamper == "payload-hash":
        headers["X-Amz-Content-SHA256"] = hashlib.sha256(b"hellp").hexdigest()
    elif tamper == "region":
        headers["Authorization"] = headers["Authorization"].replace("us-east-1", "eu-west-1")
    with s3_error("SignatureDoesNotMatch") as info:
        check(method, path, query, headers, secret)
    assert info.value.extra["AWSAccessKeyId"] == ACCESS_KEY
    assert info.value.extra["StringToSign"].startswith("AWS4-HMAC-SHA256\n20260102T030405Z\n")


def test_sigv4_path_in_another_legal_encoding_still_verifies() -> None:
    # botocore signs "~" as is; a proxy may forward it as %7E: both name the same key
    path, query, headers = sign("GET", "http://repo.s3.localhost:9000/master/a~b.txt")
    check("GET", path.replace("~", "%7E"), query, headers)
    check("GET", path.encode(), query, headers)  # ASGI's raw_path is bytes


def test_sigv4_unsigned_amz_header_is_access_denied() -> None:
    path, query, headers = sign("PUT", URL, b"x")
    headers["x-amz-copy-source"] = "repo/master/secret"
    with s3_error("AccessDenied") as info:
        check("PUT", path, query, headers)
    assert info.value.extra["HeadersNotSigned"] == "x-amz-copy-source"


def test_sigv4_aws_documented_seed_signature() -> None:
    """The seed request of AWS's chunked-upload example (docs: sigv4-streaming), signature 4f232c...."""
    headers = {
        "Host": "s3.amazonaws.com",
        "x-amz-date": "20130524T000000Z",
        "x-amz-storage-class": "REDUCED_REDUNDANCY",
        "Authorization": "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
        "SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;"
        "x-amz-decoded-content-length;x-amz-storage-class,"
        "Signature=4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9",
        "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        "Content-Encoding": "aws-chunked",
        "x-amz-decoded-content-length": "66560",
        "Content-Length": "66824",
    }
    when = float(calendar.timegm((2013, 5, 24, 0, 0, 0)))
    check("PUT", "/examplebucket/chunkObject.txt", "", headers, now=when)
    headers["x-amz-storage-class"] = "STANDARD"
    with s3_error("SignatureDoesNotMatch"):
        check("PUT", "/examplebucket/chunkObject.txt", "", headers, now=when)


def test_sigv4_presigned_from_botocore() -> None:
    request = AWSRequest(method="GET", url="http://repo.s3.localhost:9000/master/a%20b.txt?versionId=v1")
    S3SigV4QueryAuth(CREDS, "s3", "us-east-1", expires=600).add_auth(request)
    parts = urlsplit(request.url)
    headers = {"host": parts.netloc}
    auth = check("GET", parts.path, parts.query, headers)
    assert auth.presigned and auth.expires == 600 and auth.signed_headers == ("host",)
    assert sigv4.payload_hash(auth, headers) == "UNSIGNED-PAYLOAD"
    check("GET", parts.path, parts.query, headers, now=NOW_TS + 600)  # the last valid second
    with s3_error("AccessDenied") as info:
        check("GET", parts.path, parts.query, headers, now=NOW_TS + 601)
    assert info.value.message == "Request has expired"
    with s3_error("AccessDenied"):
        check("GET", parts.path, parts.query, headers, now=NOW_TS - 16 * 60)  # not valid yet
    with s3_error("SignatureDoesNotMatch"):
        check("GET", parts.path, parts.query.replace("versionId=v1", "versionId=v2"), headers)
    with s3_error("SignatureDoesNotMatch"):
        check("GET", parts.path, parts.query.replace("X-Amz-Expires=600", "X-Amz-Expires=6000"), headers)


def _presigned_query(**changes: str | None) -> list[tuple[str, str]]:
    params = {
        "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
        "X-Amz-Credential": f"{ACCESS_KEY}/20260102/us-east-1/s3/aws4_request",
        "X-Amz-Date": "20260102T030405Z",
        "X-Amz-Expires": "600",
        "X-Amz-SignedHeaders": "host",
        "X-Amz-Signature": "a" * 64,
    }
    for name, value in changes.items():
        key = "X-Amz-" + name
        if value is None:
            del params[key]
        else:
            params[key] = value
    return list(params.items())


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({}, None),
        ({"Algorithm": None}, "AuthorizationQueryParametersError"),
        ({"Credential": None}, "AuthorizationQueryParametersError"),
        ({"Date": None}, "AuthorizationQueryParametersError"),
        ({"Expires": None}, "AuthorizationQueryParametersError"),
        ({"SignedHeaders": None}, "AuthorizationQueryParametersError"),
        ({"Signature": None}, "AuthorizationQueryParametersError"),
        ({"Algorithm": "AWS4-HMAC-SHA1"}, "AuthorizationQueryParametersError"),
        ({"Expires": "0"}, "AuthorizationQueryParametersError"),
        ({"Expires": "604801"}, "AuthorizationQueryParametersError"),
        ({"Expires": "604800"}, None),
        ({"Expires": "-5"}, "AuthorizationQueryParametersError"),
        ({"Expires": "9" * 400}, "AuthorizationQueryParametersError"),
        ({"Date": "2026-01-02T03:04:05Z"}, "AuthorizationQueryParametersError"),
        ({"Date": "20260102T030405Z\n"}, "AuthorizationQueryParametersError"),
        ({"Date": "20260103T030405Z"}, "AuthorizationQueryParametersError"),  # not the credential's day
        ({"Credential": f"{ACCESS_KEY}/20260102/us-east-1/s3"}, "AuthorizationQueryParametersError"),
        ({"Credential": f"{ACCESS_KEY}/20260102/us-east-1/ec2/aws4_request"}, "AuthorizationQueryParametersError"),
        ({"SignedHeaders": "x-amz-date"}, "AuthorizationQueryParametersError"),  # no host
        ({"Signature": "A" * 64}, "SignatureDoesNotMatch"),
        ({"Signature": "a" * 63}, "SignatureDoesNotMatch"),
    ],
)
def test_sigv4_presigned_structure(changes: dict[str, str | None], code: str | None) -> None:
    query = _presigned_query(**changes)
    if code is None:
        auth = sigv4.parse_presigned(query, now=NOW_TS)
        assert auth.presigned and auth.access_key == ACCESS_KEY
    else:
        with s3_error(code):
            sigv4.parse_presigned(query, now=NOW_TS)


def test_sigv4_presigned_repeated_parameter() -> None:
    with s3_error("AuthorizationQueryParametersError"):
        sigv4.parse_presigned([*_presigned_query(), ("X-Amz-Expires", "60")], now=NOW_TS)


GOOD_AUTH = (
    f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/20260102/us-east-1/s3/aws4_request, "
    "SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=" + "0123456789abcdef" * 4
)


def test_parse_authorization_tolerates_spacing_and_order() -> None:
    auth = sigv4.parse_authorization(GOOD_AUTH)
    assert auth.signed_headers == ("host", "x-amz-content-sha256", "x-amz-date")
    assert auth.scope == "20260102/us-east-1/s3/aws4_request" and auth.amz_date == ""
    compact = GOOD_AUTH.replace(", ", ",")
    reordered = (
        "AWS4-HMAC-SHA256  Signature=" + "0123456789abcdef" * 4 + " ,SignedHeaders=host;x-amz-content-sha256;"
        f"x-amz-date,  Credential={ACCESS_KEY}/20260102/us-east-1/s3/aws4_request"
    )
    assert sigv4.parse_authorization(compact) == auth
    assert sigv4.parse_authorization(reordered) == auth


@pytest.mark.parametrize(
    ("header", "code"),
    [
        ("AWS AKIDEXAMPLE:frJIUN8DYpKDtOLCwo//yllqDzg=", "InvalidRequest"),  # SigV2
        ("Basic dXNlcjpwYXNz", "InvalidArgument"),
        ("", "InvalidArgument"),
        ("AWS4-ECDSA-P256-SHA256 Credential=x", "InvalidArgument"),
        (GOOD_AUTH.replace("Credential=", "Credentials="), "AuthorizationHeaderMalformed"),
        (GOOD_AUTH.split(", Signature")[0], "AuthorizationHeaderMalformed"),  # no Signature
        (GOOD_AUTH.replace("SignedHeaders=host;x-amz-content-sha256;x-amz-date, ", ""), "AuthorizationHeaderMalformed"),
        (
            GOOD_AUTH.replace(f"Credential={ACCESS_KEY}/20260102/us-east-1/s3/aws4_request, ", ""),
            "AuthorizationHeaderMalformed",
        ),
        (GOOD_AUTH + ", Signature=" + "f" * 64, "AuthorizationHeaderMalformed"),  # repeated
        (GOOD_AUTH.replace("/s3/aws4_request", "/aws4_request"), "AuthorizationHeaderMalformed"),
        (GOOD_AUTH.replace("/s3/", "/iam/"), "AuthorizationHeaderMalformed"),
        (GOOD_AUTH.replace("aws4_request", "aws5_request"), "AuthorizationHeaderMalformed"),
        (GOOD_AUTH.replace("20260102", "20261302"), "AuthorizationHeaderMalformed"),
        (GOOD_AUTH.replace("20260102", "2026012"), "AuthorizationHeaderMalformed"),
        (GOOD_AUTH.replace(ACCESS_KEY, "AKID EXAMPLE"), "AuthorizationHeaderMalformed"),
        (GOOD_AUTH.replace("host;x-amz-content-sha256;x-amz-date", "x-amz-date;host"), "AuthorizationHeaderMalformed"),
        (GOOD_AUTH.replace("host;x-amz-content-sha256;x-amz-date", "Host;x-amz-date"), "AuthorizationHeaderMalformed"),
        (GOOD_AUTH.replace("host;x-amz-content-sha256;x-amz-date", "x-amz-date"), "AuthorizationHeaderMalformed"),
        (GOOD_AUTH.replace("host;", "host;host;"), "AuthorizationHeaderMalformed"),
        (GOOD_AUTH.replace("0123456789abcdef" * 4, "0123456789ABCDEF" * 4), "SignatureDoesNotMatch"),
        (GOOD_AUTH.replace("0123456789abcdef" * 4, "0123456789abcdef" * 3), "SignatureDoesNotMatch"),
        (GOOD_AUTH + " " * 10_000, "AuthorizationHeaderMalformed"),
    ],
)
def test_parse_authorization_refuses(header: str, code: str) -> None:
    with s3_error(code):
        sigv4.parse_authorization(header)


def _auth_headers(**changes: str | None) -> dict[str, str]:
    headers: dict[str, str | None] = {
        "Host": "repo.s3.localhost:9000",
        "Authorization": GOOD_AUTH,
        "X-Amz-Date": "20260102T030405Z",
        "X-Amz-Content-SHA256": EMPTY_SHA256,
    }
    headers.update(changes)
    return {k: v for k, v in headers.items() if v is not None}


def test_authenticate_anonymous_and_mechanisms() -> None:
    assert sigv4.authenticate({"Host": "x"}, [("prefix", "a")], now=NOW_TS) is None
    auth = sigv4.authenticate(_auth_headers(), [], now=NOW_TS)
    assert auth is not None and auth.amz_date == "20260102T030405Z"
    with s3_error("InvalidArgument"):  # two mechanisms at once
        sigv4.authenticate(_auth_headers(), _presigned_query(), now=NOW_TS)
    with s3_error("InvalidRequest"):  # SigV2 presigned
        sigv4.authenticate({}, [("AWSAccessKeyId", "AKID"), ("Signature", "x"), ("Expires", "1")], now=NOW_TS)


@pytest.mark.parametrize(
    ("skew", "ok"), [(0, True), (14 * 60, True), (-14 * 60, True), (16 * 60, False), (-16 * 60, False)]
)
def test_authenticate_clock_skew(skew: int, ok: bool) -> None:
    if ok:
        assert sigv4.authenticate(_auth_headers(), [], now=NOW_TS + skew) is not None
    else:
        with s3_error("RequestTimeTooSkewed") as info:
            sigv4.authenticate(_auth_headers(), [], now=NOW_TS + skew)
        assert info.value.extra["RequestTime"] == "20260102T030405Z"


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"X-Amz-Date": "20260102T030405"}, "AccessDenied"),
        ({"X-Amz-Date": "2026-01-02T03:04:05Z"}, "AccessDenied"),
        ({"X-Amz-Date": "20260132T030405Z"}, "AccessDenied"),
        ({"X-Amz-Date": None}, "AccessDenied"),
        ({"X-Amz-Date": "20260103T000005Z"}, "AuthorizationHeaderMalformed"),  # not the credential's day
        ({"X-Amz-Content-SHA256": None}, "InvalidRequest"),
        ({"X-Amz-Content-SHA256": "deadbeef"}, "InvalidArgument"),
        ({"X-Amz-Content-SHA256": "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD"}, "NotImplemented"),
    ],
)
def test_authenticate_refuses(changes: dict[str, str | None], code: str) -> None:
    with s3_error(code):
        sigv4.authenticate(_auth_headers(**changes), [], now=NOW_TS)


def test_authenticate_date_header_when_no_x_amz_date() -> None:
    headers = _auth_headers(**{"X-Amz-Date": None, "Date": "Fri, 02 Jan 2026 03:04:05 GMT"})
    auth = sigv4.authenticate(headers, [], now=NOW_TS)
    assert auth is not None and auth.amz_date == "20260102T030405Z"


def test_signing_key_matches_aws_documented_derivation() -> None:
    # AWS's "deriving the signing key" example (its secret has a "+" where the S3 examples' has a "/")
    key = sigv4.signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215", "us-east-1", "iam")
    assert key.hex() == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"


# -- boto3 clients, their requests captured before they are sent ---------------------------------------------


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: object) -> Iterator[bytes]:
        yield self._body


Responder = Callable[[Any], tuple[int, dict[str, str], bytes]]


class FakeS3:
    """A boto3 client whose requests never leave the process: each is recorded (with its body) and answered
    by `respond`."""

    def __init__(self, https: bool = False, style: str = "path", sigv2_presign: bool = False) -> None:
        self.sent: list[tuple[Any, bytes]] = []
        self.respond: Responder = lambda request: (200, {}, b"")
        self.client = boto3.client(
            "s3",
            endpoint_url=("https" if https else "http") + "://s3.localhost:9000",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET,
            region_name="us-east-1",
            config=BotoConfig(
                s3={"addressing_style": style},
                request_checksum_calculation="when_supported",
                response_checksum_validation="when_required",
                retries={"max_attempts": 1},
                # boto3 presigns with SigV2 for us-east-1 unless told otherwise (checked below)
                signature_version=None if sigv2_presign else "s3v4",
            ),
        )
        self.client.meta.events.register("before-send.s3", self._send)

    def _send(self, request: Any, **_: object) -> AWSResponse:
        body = request.body
        data = body.read() if hasattr(body, "read") else (body or b"")
        self.sent.append((request, data.encode() if isinstance(data, str) else data))
        status, headers, payload = self.respond(request)
        return AWSResponse(request.url, status, headers, _Raw(payload))

    def verify_last(self, secret: str = SECRET) -> tuple[sigv4.SigV4Auth, dict[str, str], bytes]:
        request, body = self.sent[-1]
        parts = urlsplit(request.url)
        headers = _text_headers(request.headers)
        headers["Host"] = parts.netloc
        auth = check(request.method, parts.path, parts.query, headers, secret)
        return auth, headers, body


@pytest.fixture(scope="module")
def _clients() -> dict[str, FakeS3]:
    return {"http": FakeS3(), "https": FakeS3(https=True, style="virtual"), "v2": FakeS3(sigv2_presign=True)}


def _fresh(fake: FakeS3) -> FakeS3:
    fake.sent.clear()
    fake.respond = lambda request: (200, {}, b"")
    return fake


@pytest.fixture
def fake_s3(_clients: dict[str, FakeS3]) -> FakeS3:
    return _fresh(_clients["http"])


@pytest.fixture
def fake_s3_https(_clients: dict[str, FakeS3]) -> FakeS3:
    return _fresh(_clients["https"])


def test_boto3_requests_verify(fake_s3: FakeS3) -> None:
    client = fake_s3.client
    client.put_object(Bucket="repo", Key="master/dir/a b+c(1)~&é.txt", Body=b"hello", Metadata={"k": "v"})
    auth, headers, body = fake_s3.verify_last()
    request = fake_s3.sent[-1][0]
    assert protocol.bucket_and_key(headers["Host"], urlsplit(request.url).path, ["s3.localhost"]) == (
        "repo",
        "master/dir/a b+c(1)~&é.txt",
    )
    hasher = protocol.PayloadHasher(headers)
    hasher.update(body)
    hasher.check()  # x-amz-content-sha256 and the SDK's x-amz-checksum-crc32 agree with the body
    client.list_objects_v2(Bucket="repo", Prefix="master/a b", Delimiter="/", StartAfter="master/a+")
    fake_s3.verify_last()
    fake_s3.respond = _answer(s3xml.delete_result_xml([("master/a", None)], []))
    client.delete_objects(Bucket="repo", Delete={"Objects": [{"Key": "master/a"}]})
    fake_s3.verify_last()
    with s3_error("SignatureDoesNotMatch"):
        fake_s3.verify_last(secret="not the secret")


def test_boto3_presigned_url_verifies(fake_s3: FakeS3, _clients: dict[str, FakeS3]) -> None:
    params = {"Bucket": "repo", "Key": "master/a b.txt"}
    url = fake_s3.client.generate_presigned_url("get_object", Params=params, ExpiresIn=300)
    parts = urlsplit(url)
    check("GET", parts.path, parts.query, {"Host": parts.netloc})
    with s3_error("AccessDenied"):
        check("GET", parts.path, parts.query, {"Host": parts.netloc}, now=NOW_TS + 301)
    # boto3's default for us-east-1 is a SigV2 URL, refused with S3's own words for it
    parts = urlsplit(_clients["v2"].client.generate_presigned_url("get_object", Params=params))
    with s3_error("InvalidRequest") as info:
        check("GET", parts.path, parts.query, {"Host": parts.netloc})
    assert "AWS4-HMAC-SHA256" in info.value.message


def test_boto3_https_put_is_aws_chunked_and_decodes(fake_s3_https: FakeS3) -> None:
    payload = bytes(range(256)) * 300
    fake_s3_https.client.put_object(Bucket="repo", Key="master/big.bin", Body=io.BytesIO(payload))
    auth, headers, body = fake_s3_https.verify_last()
    assert protocol.bucket_and_key(headers["Host"], "/master/big.bin", ["s3.localhost"]) == ("repo", "master/big.bin")
    assert sigv4.is_aws_chunked(headers)
    assert headers["X-Amz-Content-SHA256"] == "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
    decoder = sigv4.AwsChunkedDecoder.from_request(headers, auth, SECRET)
    out = b"".join(decoder.feed(body[i : i + 1000]) for i in range(0, len(body), 1000))
    assert out == payload
    assert decoder.finish() == {"x-amz-checksum-crc32": _crc32_b64(payload)}


# -- aws-chunked ---------------------------------------------------------------------------------------------

AWS_SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
AWS_CHUNK_SIGNATURES = [
    "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
    "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
    "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
]
AWS_DATE = "20130524T000000Z"
AWS_SCOPE = "20130524/us-east-1/s3/aws4_request"


def aws_example_body() -> bytes:
    """AWS's chunked-upload example: 65536 + 1024 bytes of 'a' and the final chunk, with its signatures."""
    out = b""
    for size, chunk_signature in zip((65536, 1024, 0), AWS_CHUNK_SIGNATURES, strict=True):
        out += f"{size:x};chunk-signature={chunk_signature}\r\n".encode() + b"a" * size + b"\r\n"
    return out


def aws_decoder(decoded_length: int | None = 66560) -> sigv4.AwsChunkedDecoder:
    return sigv4.AwsChunkedDecoder(
        signing_key=sigv4.signing_key(SECRET, "20130524", "us-east-1"),
        seed_signature=AWS_SEED,
        amz_date=AWS_DATE,
        scope=AWS_SCOPE,
        decoded_length=decoded_length,
    )


def decode(decoder: sigv4.AwsChunkedDecoder, body: bytes, step: int) -> bytes:
    out = b"".join(decoder.feed(body[i : i + step]) for i in range(0, len(body), step))
    decoder.finish()
    return out


@pytest.mark.parametrize("step", [1, 7, 4096, 1 << 20])
def test_chunked_aws_documented_example(step: int) -> None:
    assert decode(aws_decoder(), aws_example_body(), step) == b"a" * 66560


def _flip(body: bytes, at: int) -> bytes:
    return body[:at] + bytes([body[at] ^ 1]) + body[at + 1 :]


@pytest.mark.parametrize(
    ("name", "mutate", "code"),
    [
        ("data byte", lambda b: _flip(b, 66_000), "SignatureDoesNotMatch"),
        ("signature", lambda b: b.replace(b"ad80c730", b"ad80c731"), "SignatureDoesNotMatch"),
        (
            "no signature",
            lambda b: b.replace(b";chunk-signature=" + AWS_CHUNK_SIGNATURES[1].encode(), b""),
            "SignatureDoesNotMatch",
        ),
        ("final signature", lambda b: b.replace(AWS_CHUNK_SIGNATURES[2].encode(), b"0" * 64), "SignatureDoesNotMatch"),
        ("truncated in data", lambda b: b[:40_000], "IncompleteBody"),
        ("truncated before final", lambda b: b[: b.index(b"0;chunk-signature")], "IncompleteBody"),
        ("truncated in a header", lambda b: b[: b.index(b"0;chunk-signature") + 10], "IncompleteBody"),
        ("data after end", lambda b: b + b"x", "InvalidRequest"),
        ("chunk longer than size", lambda b: b.replace(b"400;", b"3ff;"), "InvalidRequest"),
        ("size not hex", lambda b: b.replace(b"400;", b"4g0;"), "InvalidRequest"),
        ("size negative", lambda b: b.replace(b"400;", b"-400;"), "InvalidRequest"),
        (
            "bare LF header",
            lambda b: b.replace(AWS_CHUNK_SIGNATURES[0].encode() + b"\r\n", AWS_CHUNK_SIGNATURES[0].encode() + b"\n"),
            "InvalidRequest",
        ),
        (
            "chunks swapped",
            lambda b: b.replace(AWS_CHUNK_SIGNATURES[0].encode(), b"X" * 64).replace(
                AWS_CHUNK_SIGNATURES[1].encode(), AWS_CHUNK_SIGNATURES[0].encode()
            ),
            "SignatureDoesNotMatch",
        ),
    ],
)
def test_chunked_corrupted_streams(name: str, mutate: Callable[[bytes], bytes], code: str) -> None:
    with s3_error(code):
        decode(aws_decoder(None), mutate(aws_example_body()), 8192)


def test_chunked_decoded_length_must_match() -> None:
    with s3_error("IncompleteBody"):
        decode(aws_decoder(66561), aws_example_body(), 8192)
    with s3_error("InvalidRequest"):
        decode(aws_decoder(66559), aws_example_body(), 8192)


def test_chunked_memory_is_bounded() -> None:
    decoder = sigv4.AwsChunkedDecoder()
    with s3_error("InvalidRequest"):  # a header line that never ends is refused at 4 KiB, not buffered
        decoder.feed(b"1" * (1 << 20))
    decoder = sigv4.AwsChunkedDecoder()
    for _ in range(4):
        decoder.feed(b"f" * 1000)  # a header line arriving slowly is held, up to the limit
    with s3_error("InvalidRequest"):
        decoder.feed(b"f" * 200)
    decoder = sigv4.AwsChunkedDecoder()
    assert decoder.feed(b"ffffffffffff\r\n") == b""  # a huge chunk is passed through as it comes
    assert decoder.feed(b"x" * 100_000) == b"x" * 100_000
    assert len(decoder._line) == 0
    with s3_error("IncompleteBody"):
        decoder.finish()


def _crc32_b64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def botocore_unsigned_trailer_body(payload: bytes, chunk_size: int = 1000) -> bytes:
    wrapper = AwsChunkedWrapper(
        io.BytesIO(payload), checksum_cls=Crc32Checksum, checksum_name="x-amz-checksum-crc32", chunk_size=chunk_size
    )
    return bytes(wrapper.read())


def test_chunked_unsigned_trailer_from_botocore() -> None:
    payload = b"pfs" * 3000
    body = botocore_unsigned_trailer_body(payload)
    decoder = sigv4.AwsChunkedDecoder(decoded_length=len(payload), trailer="x-amz-checksum-crc32")
    assert decode(decoder, body, 333) == payload
    assert decoder.trailers == {"x-amz-checksum-crc32": _crc32_b64(payload)}
    corrupt = body.replace(b"pfspfs", b"pfsPfs", 1)
    with s3_error("BadDigest"):
        decode(sigv4.AwsChunkedDecoder(trailer="x-amz-checksum-crc32"), corrupt, 333)
    no_trailer = body[: body.index(b"x-amz-checksum")] + b"\r\n"
    with s3_error("IncompleteBody"):
        decode(sigv4.AwsChunkedDecoder(trailer="x-amz-checksum-crc32"), no_trailer, 333)
    with s3_error("InvalidRequest"):  # a trailer the headers did not declare
        decode(sigv4.AwsChunkedDecoder(), body, 333)
    bad_value = body.replace(_crc32_b64(payload).encode(), b"!!!!")
    with s3_error("InvalidRequest"):
        decode(sigv4.AwsChunkedDecoder(trailer="x-amz-checksum-crc32"), bad_value, 333)


def signed_stream(
    chunks: list[bytes], key: bytes, seed: str, trailer: tuple[str, str] | None = None, eol: bytes = b"\r\n"
) -> bytes:
    """A body signed by the documented chain, computed here independently of sigv4.py."""
    previous, out = seed, b""
    for data in [*chunks, b""]:
        to_sign = "\n".join(
            ["AWS4-HMAC-SHA256-PAYLOAD", AWS_DATE, AWS_SCOPE, previous, EMPTY_SHA256, hashlib.sha256(data).hexdigest()]
        )
        previous = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        out += f"{len(data):x};chunk-signature={previous}\r\n".encode() + data + (b"\r\n" if data else b"")
    if trailer is not None:
        line = f"{trailer[0]}:{trailer[1]}"
        to_sign = "\n".join(
            [
                "AWS4-HMAC-SHA256-TRAILER",
                AWS_DATE,
                AWS_SCOPE,
                previous,
                hashlib.sha256((line + "\n").encode()).hexdigest(),
            ]
        )
        trailer_signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        out += line.encode() + eol + f"x-amz-trailer-signature:{trailer_signature}\r\n".encode()
    return out + b"\r\n"


@pytest.mark.parametrize("eol", [b"\r\n", b"\n\r\n"])  # AWS's examples show "\n\r\n" after a trailer
def test_chunked_signed_trailer(eol: bytes) -> None:
    key = sigv4.signing_key(SECRET, "20130524", "us-east-1")
    payload = [b"x" * 9000, b"y" * 100]
    crc = _crc32_b64(b"".join(payload))

    def decoder() -> sigv4.AwsChunkedDecoder:
        return sigv4.AwsChunkedDecoder(
            signing_key=key,
            seed_signature=AWS_SEED,
            amz_date=AWS_DATE,
            scope=AWS_SCOPE,
            signed_trailer=True,
            decoded_length=9100,
            trailer="x-amz-checksum-crc32",
        )

    body = signed_stream(payload, key, AWS_SEED, ("x-amz-checksum-crc32", crc), eol)
    d = decoder()
    assert decode(d, body, 500) == b"".join(payload)
    assert d.trailers == {"x-amz-checksum-crc32": crc}
    forged = signed_stream(payload, key, AWS_SEED, ("x-amz-checksum-crc32", crc), eol).replace(
        crc.encode(), b"AAAAAA=="
    )
    with s3_error("SignatureDoesNotMatch"):
        decode(decoder(), forged, 500)
    unsigned = body[: body.index(b"x-amz-trailer-signature")] + b"\r\n"
    with s3_error("SignatureDoesNotMatch"):
        decode(decoder(), unsigned, 500)
    other_key = signed_stream(payload, b"k" * 32, AWS_SEED, ("x-amz-checksum-crc32", crc), eol)
    with s3_error("SignatureDoesNotMatch"):
        decode(decoder(), other_key, 500)


def test_chunked_from_request() -> None:
    auth = sigv4.authenticate(
        _auth_headers(**{"X-Amz-Content-SHA256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"}), [], now=NOW_TS
    )
    headers = {"x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "x-amz-decoded-content-length": "5"}
    assert sigv4.AwsChunkedDecoder.from_request(headers, auth, SECRET)._key is not None
    with s3_error("MissingContentLength"):
        sigv4.AwsChunkedDecoder.from_request({"x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER"}, None, None)
    with s3_error("InvalidRequest"):  # signed chunks but an anonymous request
        sigv4.AwsChunkedDecoder.from_request(headers, None, None)
    with s3_error("InvalidRequest"):
        sigv4.AwsChunkedDecoder.from_request({"x-amz-content-sha256": EMPTY_SHA256}, auth, SECRET)
    with s3_error("NotImplemented"):
        sigv4.AwsChunkedDecoder.from_request(
            {"x-amz-content-sha256": "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD", "x-amz-decoded-content-length": "1"},
            auth,
            SECRET,
        )
    with s3_error("InvalidArgument"):
        sigv4.AwsChunkedDecoder.from_request({**headers, "x-amz-decoded-content-length": "-1"}, auth, SECRET)


def test_chunked_unverified_checks_framing_not_signatures() -> None:
    """With no secret to check chunk signatures against (any access key accepted), the body is
    still decoded strictly: framing, declared length, trailing checksum."""
    auth = sigv4.authenticate(
        _auth_headers(**{"X-Amz-Content-SHA256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"}), [], now=NOW_TS
    )
    headers = {"x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "x-amz-decoded-content-length": "5"}
    body = b"5;chunk-signature=" + b"0" * 64 + b"\r\nhello\r\n0;chunk-signature=" + b"0" * 64 + b"\r\n\r\n"
    decoder = sigv4.AwsChunkedDecoder.unverified(headers, auth)
    assert decode(decoder, body, 7) == b"hello"
    with s3_error("IncompleteBody"):
        decode(sigv4.AwsChunkedDecoder.unverified({**headers, "x-amz-decoded-content-length": "6"}, auth), body, 7)
    with s3_error("InvalidRequest"):  # signed chunks need a signed request
        sigv4.AwsChunkedDecoder.unverified(headers, None)
    with s3_error("MissingContentLength"):
        sigv4.AwsChunkedDecoder.unverified({"x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"}, auth)
    payload = b"pfs" * 3000
    trailer = {
        "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        "x-amz-decoded-content-length": str(len(payload)),
        "x-amz-trailer": "x-amz-checksum-crc32",
    }
    corrupt = botocore_unsigned_trailer_body(payload).replace(b"pfspfs", b"pfsPfs", 1)
    with s3_error("BadDigest"):
        decode(sigv4.AwsChunkedDecoder.unverified(trailer, None), corrupt, 333)


# -- XML: rendering, read back by botocore -------------------------------------------------------------------

KEYS = ["master/a b.txt", "master/a+b.txt", "master/c&d<e>.txt", "master/é/ü.txt", "master/100%.txt", "master/q'\"x"]
KEYS += ["master/é/v.txt", "master/ü.txt"]
T0 = 1767225600.0  # 2026-01-01T00:00:00Z


def _answer(xml: bytes, status: int = 200) -> Responder:
    return lambda request: (status, {"Content-Type": "application/xml"}, xml)


def test_render_list_objects_v2_read_by_botocore(fake_s3: FakeS3) -> None:
    items = sorted((k, s3xml.ObjectInfo(size=i, etag=f"e{i}", last_modified=T0 + i)) for i, k in enumerate(KEYS))
    page = protocol.list_page(iter(items), "master/", "/", 6, None)
    assert page.is_truncated and page.common_prefixes == ["master/é/"]

    def respond(request: Any) -> tuple[int, dict[str, str], bytes]:
        query = dict(protocol.parse_query(urlsplit(request.url).query))
        url = query.get("encoding-type") == "url"
        assert url  # boto3 asks for it, and decodes what it gets
        return 200, {}, s3xml.list_objects_v2_xml("repo", page, prefix="master/", delimiter="/", max_keys=6, url=url)

    fake_s3.respond = respond
    answer = fake_s3.client.list_objects_v2(Bucket="repo", Prefix="master/", Delimiter="/", MaxKeys=6)
    assert [c["Key"] for c in answer["Contents"]] == [k for k, _ in page.contents]
    assert answer["Contents"][0]["ETag"] == f'"{page.contents[0][1].etag}"'
    assert answer["Contents"][0]["LastModified"] == dt.datetime.fromtimestamp(page.contents[0][1].last_modified, dt.UTC)
    assert [p["Prefix"] for p in answer["CommonPrefixes"]] == ["master/é/"]
    assert answer["IsTruncated"] and answer["KeyCount"] == 6
    assert protocol.decode_token(answer["NextContinuationToken"]) == page.next_marker


def test_render_list_objects_v1_and_versions_read_by_botocore(fake_s3: FakeS3) -> None:
    items = [(k, s3xml.ObjectInfo(size=1, etag="e", last_modified=T0)) for k in sorted(KEYS)]
    page = protocol.list_page(iter(items), "", None, 2, None)
    owner = s3xml.Owner("id1", "pfs")
    fake_s3.respond = _answer(s3xml.list_objects_v1_xml("repo", page, marker="", max_keys=2, url=True, owner=owner))
    answer = fake_s3.client.list_objects(Bucket="repo", MaxKeys=2)
    assert [c["Key"] for c in answer["Contents"]] == sorted(KEYS)[:2]
    assert answer["NextMarker"] == sorted(KEYS)[1] and answer["IsTruncated"]
    assert answer["Contents"][0]["Owner"] == {"ID": "id1", "DisplayName": "pfs"}
    versions = [
        ("master/a b.txt", s3xml.VersionInfo("v2", True, T0, etag="e2", size=2)),
        ("master/a b.txt", s3xml.VersionInfo("v1", False, T0 - 1, delete_marker=True)),
    ]
    fake_s3.respond = _answer(s3xml.list_object_versions_xml("repo", versions, ["master/d/"], delimiter="/", url=True))
    answer = fake_s3.client.list_object_versions(Bucket="repo", Delimiter="/")
    assert [(v["Key"], v["VersionId"], v["IsLatest"], v["Size"]) for v in answer["Versions"]] == [
        ("master/a b.txt", "v2", True, 2)
    ]
    assert [(m["Key"], m["VersionId"]) for m in answer["DeleteMarkers"]] == [("master/a b.txt", "v1")]
    assert answer["CommonPrefixes"] == [{"Prefix": "master/d/"}]


def test_render_other_answers_read_by_botocore(fake_s3: FakeS3) -> None:
    client = fake_s3.client
    owner = s3xml.Owner("id1", "pfs")
    fake_s3.respond = _answer(s3xml.list_buckets_xml([("repo", T0), ("other", T0 + 1.5)], owner))
    answer = client.list_buckets()
    assert [(b["Name"], b["CreationDate"].timestamp()) for b in answer["Buckets"]] == [
        ("repo", T0),
        ("other", T0 + 1.5),
    ]
    fake_s3.respond = _answer(s3xml.initiate_multipart_xml("repo", "master/a&b", "up-1"))
    assert client.create_multipart_upload(Bucket="repo", Key="master/a&b")["UploadId"] == "up-1"
    parts = [s3xml.PartInfo(1, 5 << 20, "aa", T0), s3xml.PartInfo(2, 7, '"bb"', T0)]
    fake_s3.respond = _answer(s3xml.list_parts_xml("repo", "master/a", "up-1", parts, max_parts=2, owner=owner))
    answer = client.list_parts(Bucket="repo", Key="master/a", UploadId="up-1")
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in answer["Parts"]] == [(1, '"aa"', 5 << 20), (2, '"bb"', 7)]
    etag = protocol.multipart_etag([hashlib.md5(b"a").digest(), hashlib.md5(b"b").digest()])
    fake_s3.respond = _answer(s3xml.complete_multipart_xml("http://x/repo/master/a", "repo", "master/a", etag))
    answer = client.complete_multipart_upload(
        Bucket="repo", Key="master/a", UploadId="up-1", MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": "aa"}]}
    )
    assert answer["ETag"] == etag
    fake_s3.respond = _answer(s3xml.copy_object_result_xml("abc", T0))
    answer = client.copy_object(Bucket="repo", Key="master/b", CopySource="repo/master/a")
    assert answer["CopyObjectResult"]["ETag"] == '"abc"'
    fake_s3.respond = _answer(
        s3xml.delete_result_xml([("master/a", None), ("master/b", "v1")], [("c", None, "InvalidArgument", "bad key")])
    )
    answer = client.delete_objects(Bucket="repo", Delete={"Objects": [{"Key": "master/a"}]})
    assert [d["Key"] for d in answer["Deleted"]] == ["master/a", "master/b"]
    assert answer["Errors"] == [{"Key": "c", "Code": "InvalidArgument", "Message": "bad key"}]
    fake_s3.respond = _answer(s3xml.location_xml("eu-west-1"))
    assert client.get_bucket_location(Bucket="repo")["LocationConstraint"] == "eu-west-1"
    fake_s3.respond = _answer(s3xml.location_xml("us-east-1"))
    assert client.get_bucket_location(Bucket="repo")["LocationConstraint"] is None
    fake_s3.respond = _answer(s3xml.acl_xml(owner))
    acl = client.get_bucket_acl(Bucket="repo")
    assert acl["Owner"]["ID"] == "id1"
    assert [(g["Grantee"]["ID"], g["Grantee"]["Type"], g["Permission"]) for g in acl["Grants"]] == [
        ("id1", "CanonicalUser", "FULL_CONTROL")
    ]
    fake_s3.respond = _answer(s3xml.versioning_xml())
    assert client.get_bucket_versioning(Bucket="repo")["Status"] == "Enabled"
    uploads = [("master/a b", s3xml.UploadInfo("up-1", T0))]
    fake_s3.respond = _answer(s3xml.list_multipart_uploads_xml("repo", uploads, ["master/d/"]))
    answer = client.list_multipart_uploads(Bucket="repo")
    assert [(u["Key"], u["UploadId"]) for u in answer["Uploads"]] == [("master/a b", "up-1")]


def test_render_error_read_by_botocore(fake_s3: FakeS3) -> None:
    error = S3Error("NoSuchKey", resource="/repo/master/x")
    fake_s3.respond = _answer(s3xml.error_body(error, "req-1"), error.status)
    with pytest.raises(ClientError) as info:
        fake_s3.client.get_object(Bucket="repo", Key="master/x")
    assert info.value.response["Error"]["Code"] == "NoSuchKey"
    assert info.value.response["Error"]["Message"] == "The specified key does not exist."
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_render_quiet_delete_and_times() -> None:
    quiet = ET.fromstring(s3xml.delete_result_xml([("master/a", None)], [("b", "v", "AccessDenied", "no")], quiet=True))
    ns = {"s": protocol.S3_NS}
    assert quiet.findall("s:Deleted", ns) == [] and quiet.find("s:Error/s:Key", ns).text == "b"  # type: ignore[union-attr]
    assert protocol.iso_time(0) == "1970-01-01T00:00:00.000Z"
    assert protocol.iso_time(T0 + 0.1239) == "2026-01-01T00:00:00.123Z"
    assert protocol.http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"
    assert protocol.parse_http_date("Thu, 01 Jan 1970 00:00:10 GMT") == 10.0
    assert protocol.parse_http_date("yesterday") is None


def test_render_characters_xml_cannot_carry() -> None:
    items = [("master/a\x01b", s3xml.ObjectInfo(1, "e", T0)), ("master/c\rd", s3xml.ObjectInfo(1, "e", T0))]
    page = protocol.list_page(iter(items), "", None, 10, None)
    with s3_error("InvalidArgument") as info:
        s3xml.list_objects_v2_xml("repo", page)
    assert "encoding-type=url" in info.value.message
    with s3_error("InvalidArgument"):  # a client's own prefix echoed back
        s3xml.list_objects_v2_xml("repo", protocol.Page(), prefix="x\x00")
    root = ET.fromstring(s3xml.list_objects_v2_xml("repo", page, url=True))
    keys = [unquote(e.text or "") for e in root.iter(f"{{{protocol.S3_NS}}}Key")]
    assert keys == ["master/a\x01b", "master/c\rd"]
    # CR survives XML's line-end normalisation; an error body renders whatever its message holds
    only_cr = protocol.Page(contents=[items[1]])
    assert [
        e.text for e in ET.fromstring(s3xml.list_objects_v2_xml("repo", only_cr)).iter(f"{{{protocol.S3_NS}}}Key")
    ] == ["master/c\rd"]
    error = ET.fromstring(s3xml.error_xml("InvalidArgument", "bad \x00\x1b\ud800 key", "/repo/a\x01", "r"))
    assert error.findtext("Message") == "bad \\x00\\x1b\\ud800 key" and error.findtext("Resource") == "/repo/a\\x01"


# -- XML: parsing request bodies -----------------------------------------------------------------------------


def delete_body(keys: list[str], quiet: bool | None = None, ns: bool = True) -> bytes:
    objects = "".join(f"<Object><Key>{k}</Key></Object>" for k in keys)
    q = "" if quiet is None else f"<Quiet>{str(quiet).lower()}</Quiet>"
    xmlns = f' xmlns="{protocol.S3_NS}"' if ns else ""
    return f'<?xml version="1.0" encoding="UTF-8"?><Delete{xmlns}>{q}{objects}</Delete>'.encode()


def test_parse_delete_boto3_body(fake_s3: FakeS3) -> None:
    fake_s3.respond = _answer(s3xml.delete_result_xml([], []))
    objects = [{"Key": "master/a"}, {"Key": " master/b & <c> ", "VersionId": "v1"}]
    fake_s3.client.delete_objects(Bucket="repo", Delete={"Objects": objects, "Quiet": True})
    assert s3xml.parse_delete(fake_s3.sent[-1][1]) == ([("master/a", None), (" master/b & <c> ", "v1")], True)


def test_parse_delete_limits() -> None:
    keys = [f"master/k{i}" for i in range(1000)]
    assert s3xml.parse_delete(delete_body(keys, ns=False)) == ([(k, None) for k in keys], False)
    with s3_error("MalformedXML"):
        s3xml.parse_delete(delete_body([*keys, "master/one-more"]))
    with s3_error("MalformedXML"):
        s3xml.parse_delete(delete_body([]))
    with s3_error("MaxMessageLengthExceeded"):
        s3xml.parse_delete(delete_body(["master/k"]) + b" " * s3xml.MAX_DELETE_BODY)


BOMB = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + b"".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10 if i > 1 else "&lol;" * 10}">'.encode() for i in range(1, 10))
    + b"]><Delete><Object><Key>&lol9;</Key></Object></Delete>"
)
HOSTILE_XML = {
    "billion laughs": BOMB,
    "external entity": b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    b"<Delete><Object><Key>&x;</Key></Object></Delete>",
    "external DTD": b'<?xml version="1.0"?><!DOCTYPE Delete SYSTEM "http://127.0.0.1:1/x.dtd"><Delete/>',
    "plain DTD": b"<!DOCTYPE Delete><Delete><Object><Key>a</Key></Object></Delete>",
    "not XML": b"this is not xml",
    "empty": b"",
    "truncated": b"<Delete><Object><Key>a</Key></Object>",
    "binary": b"\x00\xff\xfe<Delete/>",
    "unknown encoding": b'<?xml version="1.0" encoding="x-bogus"?><Delete><Object><Key>a</Key></Object></Delete>',
    "bad bytes": b"<Delete><Object><Key>\xff\xfe</Key></Object></Delete>",
    "control char ref": b"<Delete><Object><Key>a&#1;</Key></Object></Delete>",
    "wrong root": b"<Remove><Object><Key>a</Key></Object></Remove>",
    "foreign namespace": b'<Delete xmlns="http://evil/"><Object><Key>a</Key></Object></Delete>',
    "deep": b"<Delete>" + b"<Object>" * 100_000 + b"</Object>" * 100_000 + b"</Delete>",
    "wide": b"<Delete>" + b"<Quiet/>" * 200_000 + b"</Delete>",
    "unknown element": b"<Delete><Object><Key>a</Key><Colour>red</Colour></Object></Delete>",
    "two keys": b"<Delete><Object><Key>a</Key><Key>b</Key></Object></Delete>",
    "empty key": b"<Delete><Object><Key></Key></Object></Delete>",
    "bad quiet": b"<Delete><Quiet>maybe</Quiet><Object><Key>a</Key></Object></Delete>",
}


@pytest.mark.parametrize("name", list(HOSTILE_XML))
def test_parse_delete_hostile(name: str) -> None:
    started = time.monotonic()
    with s3_error("MalformedXML"):
        s3xml.parse_delete(HOSTILE_XML[name])
    assert time.monotonic() - started < 1.0


def test_parse_delete_conditional_is_not_ignored() -> None:
    with s3_error("NotImplemented"):
        s3xml.parse_delete(b"<Delete><Object><Key>a</Key><ETag>x</ETag></Object></Delete>")


def complete_body(parts: list[tuple[str, str]]) -> bytes:
    inner = "".join(f"<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>" for n, e in parts)
    return f'<CompleteMultipartUpload xmlns="{protocol.S3_NS}">{inner}</CompleteMultipartUpload>'.encode()


def test_parse_complete_multipart(fake_s3: FakeS3) -> None:
    fake_s3.respond = _answer(s3xml.complete_multipart_xml("l", "repo", "master/a", '"x-2"'))
    fake_s3.client.complete_multipart_upload(
        Bucket="repo",
        Key="master/a",
        UploadId="u",
        MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": '"aa"'}, {"PartNumber": 3, "ETag": "bb", "ChecksumCRC32": "AAAAAA=="}]
        },
    )
    assert s3xml.parse_complete_multipart(fake_s3.sent[-1][1]) == [(1, "aa"), (3, "bb")]
    assert s3xml.parse_complete_multipart(complete_body([("1", "&quot;a&quot;"), (" 2 ", '"b"')])) == [
        (1, "a"),
        (2, "b"),
    ]
    many = [(str(i), f"e{i}") for i in range(1, 10_001)]
    assert len(s3xml.parse_complete_multipart(complete_body(many))) == 10_000


@pytest.mark.parametrize(
    ("parts", "code"),
    [
        ([("0", "a")], "InvalidArgument"),
        ([("10001", "a")], "InvalidArgument"),
        ([("1", "a"), ("10001", "b")], "InvalidArgument"),
        ([("2", "a"), ("1", "b")], "InvalidPartOrder"),
        ([("1", "a"), ("1", "b")], "InvalidPartOrder"),
        ([("1", "")], "MalformedXML"),
        ([("one", "a")], "MalformedXML"),
        ([("-1", "a")], "MalformedXML"),
        ([("1" * 400, "a")], "MalformedXML"),
        ([], "MalformedXML"),
    ],
)
def test_parse_complete_multipart_refuses(parts: list[tuple[str, str]], code: str) -> None:
    with s3_error(code):
        s3xml.parse_complete_multipart(complete_body(parts))


def test_parse_complete_multipart_hostile() -> None:
    with s3_error("MalformedXML"):
        s3xml.parse_complete_multipart(BOMB.replace(b"Delete", b"CompleteMultipartUpload"))
    with s3_error("MalformedXML"):
        s3xml.parse_complete_multipart(complete_body([("1", "a")]).replace(b"<ETag>", b"<ETag><ETag>", 1))
    with s3_error("MaxMessageLengthExceeded"):
        s3xml.parse_complete_multipart(b" " * (s3xml.MAX_COMPLETE_BODY + 1))


def test_parse_create_bucket(fake_s3: FakeS3) -> None:
    fake_s3.client.create_bucket(Bucket="repo", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    assert s3xml.parse_create_bucket(fake_s3.sent[-1][1]) == "eu-west-1"
    assert s3xml.parse_create_bucket(b"") is None
    assert s3xml.parse_create_bucket(b" \n") is None
    assert s3xml.parse_create_bucket(b"<CreateBucketConfiguration/>") is None
    with s3_error("InvalidLocationConstraint"):
        s3xml.parse_create_bucket(
            b"<CreateBucketConfiguration><LocationConstraint>../x</LocationConstraint></CreateBucketConfiguration>"
        )
    with s3_error("MalformedXML"):
        s3xml.parse_create_bucket(b"<Bucket><LocationConstraint>eu-west-1</LocationConstraint></Bucket>")
    with s3_error("MalformedXML"):
        s3xml.parse_create_bucket(BOMB.replace(b"Delete", b"CreateBucketConfiguration"))


# -- errors, names, addressing -------------------------------------------------------------------------------

EXPECTED_STATUSES = {
    "NoSuchBucket": 404, "NoSuchKey": 404, "NoSuchUpload": 404, "NoSuchVersion": 404, "InvalidRange": 416,
    "PreconditionFailed": 412, "NotModified": 304, "BucketAlreadyOwnedByYou": 409, "BucketAlreadyExists": 409,
    "BucketNotEmpty": 409, "InvalidBucketName": 400, "KeyTooLongError": 400, "InvalidArgument": 400,
    "InvalidPart": 400, "InvalidPartOrder": 400, "EntityTooSmall": 400, "EntityTooLarge": 400, "MalformedXML": 400,
    "InvalidDigest": 400, "BadDigest": 400, "XAmzContentSHA256Mismatch": 400, "MethodNotAllowed": 405,
    "AccessDenied": 403, "SignatureDoesNotMatch": 403, "AuthorizationHeaderMalformed": 400,
    "AuthorizationQueryParametersError": 400, "RequestTimeTooSkewed": 403, "InvalidAccessKeyId": 403,
    "MissingContentLength": 411, "NotImplemented": 501, "InternalError": 500, "ServiceUnavailable": 503,
    "SlowDown": 503, "IncompleteBody": 400, "InvalidRequest": 400, "InvalidObjectState": 403, "TooManyParts": 400,
}  # fmt: skip


def test_error_codes_and_statuses() -> None:
    for code, status in EXPECTED_STATUSES.items():
        error = S3Error(code)
        assert (error.code, error.status) == (code, status)
        assert error.message == protocol.CODES[code][1] and error.message
    assert S3Error("NoSuchKey", "gone", resource="/r/k").message == "gone"
    with pytest.raises(KeyError):
        S3Error("NoSuchThing")


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("abc", True), ("my-repo-1", True), ("a" * 63, True), ("0ab", True), ("a--b", True),
        ("ab", False), ("a" * 64, False), ("Abc", False), ("-abc", False), ("abc-", False), ("a_b", False),
        ("a.b", False), ("xn--abc", False), ("foo-s3alias", False), ("sthree-abc", False), ("abc--ol-s3", False),
        ("192.168.1.1", False), ("", False), ("abc\n", False), ("ab c", False), ("abç", False), ("ab١", False),
    ],
)  # fmt: skip
def test_valid_bucket_name(name: str, ok: bool) -> None:
    assert protocol.valid_bucket_name(name) is ok


def test_check_key_accepts() -> None:
    assert protocol.check_key("master/a/b.txt") == ("master", "a/b.txt")
    assert protocol.check_key("0123456789abcdef/x") == ("0123456789abcdef", "x")  # a commit id
    assert protocol.check_key("feature.x/é ü+&.txt") == ("feature.x", "é ü+&.txt")
    head = "master/" + "/".join(["k" * 200] * 5) + "/"
    longest = head + "k" * (1024 - len(head))
    assert len(longest.encode()) == 1024 and protocol.check_key(longest)[0] == "master"


@pytest.mark.parametrize(
    ("key", "code"),
    [
        ("master/" + "k" * 1018, "KeyTooLongError"),
        ("master/" + "é" * 509, "KeyTooLongError"),
        ("master/a\x00b", "InvalidArgument"),
        ("master/../etc/passwd", "InvalidArgument"),
        ("master/a/../b", "InvalidArgument"),
        ("master/./a", "InvalidArgument"),
        ("master/a//b", "InvalidArgument"),
        ("master//a", "InvalidArgument"),
        ("master/a\\b", "InvalidArgument"),
        ("master/a\x1bb", "InvalidArgument"),
        ("master/dir/", "InvalidArgument"),
        ("master/", "InvalidArgument"),
        ("master", "InvalidArgument"),
        ("/master/a", "InvalidArgument"),
        ("../a", "InvalidArgument"),
        ("mas ter/a", "InvalidArgument"),
        ("master..x/a", "InvalidArgument"),
    ],
)
def test_check_key_refuses(key: str, code: str) -> None:
    with s3_error(code):
        protocol.check_key(key)


def test_split_ref_key() -> None:
    assert protocol.split_ref_key("master/a/b") == ("master", "a/b")
    assert protocol.split_ref_key("master/") == ("master", "")
    assert protocol.split_ref_key("deadbeef00/x") == ("deadbeef00", "x")
    with s3_error("InvalidArgument"):
        protocol.split_ref_key("master")
    with s3_error("InvalidArgument"):
        protocol.split_ref_key("-x/a")


BASES = ["s3.localhost", "s3.example.com:9000"]


@pytest.mark.parametrize(
    ("host", "path", "expected"),
    [
        ("s3.localhost:9000", "/repo/master/a.txt", ("repo", "master/a.txt")),
        ("repo.s3.localhost:9000", "/master/a%20b.txt", ("repo", "master/a b.txt")),
        ("REPO.S3.LOCALHOST", "/master/x", ("repo", "master/x")),
        ("repo.s3.localhost.", "/master/x", ("repo", "master/x")),
        ("repo.s3.example.com", "/master/x", ("repo", "master/x")),
        ("repo.s3.localhost", "/", ("repo", None)),
        ("127.0.0.1:9000", "/repo/master/a%2Fb", ("repo", "master/a/b")),
        ("[::1]:9000", "/repo/k%2541", ("repo", "k%41")),
        ("localhost", "/repo/a+b", ("repo", "a+b")),
        ("localhost", "/", (None, None)),
        ("localhost", "/repo", ("repo", None)),
        ("localhost", "/repo/", ("repo", None)),
        ("localhost", "/repo/x?list-type=2", ("repo", "x")),
        ("evil.com", "/repo/x", ("repo", "x")),
        ("xs3.localhost", "/repo/x", ("repo", "x")),
        ("localhost", b"/repo/caf\xc3\xa9", ("repo", "café")),
        ("localhost", "/repo/caf%C3%A9", ("repo", "café")),
    ],
)
def test_bucket_and_key(host: str, path: str | bytes, expected: tuple[str | None, str | None]) -> None:
    assert protocol.bucket_and_key(host, path, BASES) == expected


@pytest.mark.parametrize("path", ["/repo/%ff", "/repo/a%zz", "/repo/a%", "repo/x", b"/repo/\xff"])
def test_bucket_and_key_refuses(path: str | bytes) -> None:
    with s3_error("InvalidURI"):
        protocol.bucket_and_key("localhost", path, BASES)


def test_parse_query() -> None:
    assert protocol.parse_query("a=1&b=&c&&d=x%3Dy") == [("a", "1"), ("b", ""), ("c", ""), ("d", "x=y")]
    assert protocol.parse_query(b"prefix=a+b%2Bc%20d") == [("prefix", "a b+c d")]
    assert protocol.parse_query("") == []
    with s3_error("InvalidURI"):
        protocol.parse_query("prefix=%ff")
    with s3_error("InvalidArgument"):
        protocol.parse_query("&".join(f"p{i}=1" for i in range(201)))


# -- ranges, conditions, digests -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None), ("bytes=0-9", (0, 9)), ("bytes=10-", (10, 99)), ("bytes=-10", (90, 99)),
        ("bytes=-200", (0, 99)), ("bytes=90-500", (90, 99)), ("bytes=99-99", (99, 99)), (" bytes=0-0 ", (0, 0)),
        ("bytes=0-" + "9" * 5000, (0, 99)),
        # ignored, as S3 does: the whole object
        ("bytes=0-1,5-6", None), ("bytes=5-1", None), ("items=0-1", None), ("bytes=abc", None), ("bytes=-", None),
        ("", None), ("bytes=0x1-2", None), ("bytes=١-٢", None), ("bytes=1-2-3", None),
    ],
)  # fmt: skip
def test_parse_range(header: str | None, expected: tuple[int, int] | None) -> None:
    assert protocol.parse_range(header, 100) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=100-200", "bytes=-0", "bytes=" + "9" * 5000 + "-"])
def test_parse_range_unsatisfiable(header: str) -> None:
    with s3_error("InvalidRange") as info:
        protocol.parse_range(header, 100)
    assert info.value.headers["Content-Range"] == "bytes */100"


def test_parse_range_empty_object() -> None:
    with s3_error("InvalidRange"):
        protocol.parse_range("bytes=0-", 0)
    assert protocol.parse_range("bytes=-5", 0) is None


ETAG, MTIME = '"abc"', 1_700_000_000.5
BEFORE, SAME, AFTER = (protocol.http_date(MTIME + d) for d in (-10, 0, 10))


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"If-Match": '"abc"'}, None),
        ({"If-Match": "abc"}, None),
        ({"If-Match": '"x", "abc"'}, None),
        ({"If-Match": "*"}, None),
        ({"If-Match": '"x"'}, "PreconditionFailed"),
        ({"If-None-Match": '"abc"'}, "NotModified"),
        ({"If-None-Match": 'W/"abc"'}, "NotModified"),
        ({"If-None-Match": "*"}, "NotModified"),
        ({"If-None-Match": '"x"'}, None),
        ({"If-Modified-Since": BEFORE}, None),
        ({"If-Modified-Since": SAME}, "NotModified"),
        ({"If-Modified-Since": AFTER}, "NotModified"),
        ({"If-Modified-Since": "garbage"}, None),
        ({"If-Unmodified-Since": BEFORE}, "PreconditionFailed"),
        ({"If-Unmodified-Since": SAME}, None),
        ({"If-Unmodified-Since": AFTER}, None),
        ({"If-Match": '"abc"', "If-Unmodified-Since": BEFORE}, None),  # If-Match wins
        ({"If-Match": '"x"', "If-Unmodified-Since": AFTER}, "PreconditionFailed"),
        ({"If-None-Match": '"x"', "If-Modified-Since": AFTER}, None),  # If-None-Match wins
        ({"If-None-Match": '"abc"', "If-Modified-Since": BEFORE}, "NotModified"),
        ({"If-Match": '"x"', "If-None-Match": '"abc"'}, "PreconditionFailed"),  # 412 before 304
        ({"if-match": '"x"'}, "PreconditionFailed"),  # header names in any case
    ],
)
def test_check_conditions(headers: dict[str, str], expected: str | None) -> None:
    if expected is None:
        protocol.check_conditions(headers, ETAG, MTIME)
    else:
        with s3_error(expected) as info:
            protocol.check_conditions(headers, ETAG, MTIME)
        if expected == "NotModified":
            assert info.value.headers["ETag"] == ETAG


def test_check_conditions_writes_and_copies() -> None:
    with s3_error("PreconditionFailed"):
        protocol.check_conditions({"If-None-Match": "*"}, ETAG, MTIME, for_write=True)
    protocol.check_conditions({"If-None-Match": "*"}, None, None, for_write=True)  # no object yet: may create
    with s3_error("NoSuchKey"):
        protocol.check_conditions({"If-Match": ETAG}, None, None, for_write=True)
    protocol.check_conditions({"If-Modified-Since": AFTER}, ETAG, MTIME, for_write=True)  # dates do not apply
    with s3_error("PreconditionFailed"):
        protocol.check_conditions({"x-amz-copy-source-if-none-match": ETAG}, ETAG, MTIME, copy_source=True)
    with s3_error("PreconditionFailed"):
        protocol.check_conditions({"x-amz-copy-source-if-modified-since": AFTER}, ETAG, MTIME, copy_source=True)
    protocol.check_conditions({"If-Match": '"x"'}, ETAG, MTIME, copy_source=True)  # not the copy's headers


def test_digests() -> None:
    body = b"hello world"
    md5_b64 = base64.b64encode(hashlib.md5(body).digest()).decode()
    protocol.check_content_md5(md5_b64, hashlib.md5(body).digest())
    protocol.check_content_md5(None, b"")
    with s3_error("BadDigest"):
        protocol.check_content_md5(md5_b64, hashlib.md5(b"other").digest())
    for bad in ("not base64!", base64.b64encode(b"short").decode(), "é", ""):
        with s3_error("InvalidDigest"):
            protocol.check_content_md5(bad, hashlib.md5(body).digest())
    sha = hashlib.sha256(body).hexdigest()
    protocol.check_sha256(sha, sha)
    protocol.check_sha256(sha.upper(), sha)
    protocol.check_sha256("UNSIGNED-PAYLOAD", sha)
    protocol.check_sha256("STREAMING-AWS4-HMAC-SHA256-PAYLOAD", sha)
    with s3_error("XAmzContentSHA256Mismatch"):
        protocol.check_sha256(hashlib.sha256(b"x").hexdigest(), sha)
    with s3_error("InvalidArgument"):
        protocol.check_sha256("abc", sha)


def test_payload_hasher_streams() -> None:
    body = bytes(range(256)) * 1000
    headers = {
        "Content-MD5": base64.b64encode(hashlib.md5(body).digest()).decode(),
        "x-amz-content-sha256": hashlib.sha256(body).hexdigest(),
        "x-amz-checksum-sha256": base64.b64encode(hashlib.sha256(body).digest()).decode(),
    }
    hasher = protocol.PayloadHasher(headers)
    for i in range(0, len(body), 4096):
        hasher.update(memoryview(body)[i : i + 4096])
    hasher.check()
    assert (hasher.size, hasher.md5, hasher.etag) == (
        len(body),
        hashlib.md5(body).digest(),
        f'"{hashlib.md5(body).hexdigest()}"',
    )
    for name in ("Content-MD5", "x-amz-content-sha256", "x-amz-checksum-sha256"):
        short = protocol.PayloadHasher(headers)
        short.update(body[:-1])
        with pytest.raises(S3Error) as info:
            short.check()
        assert info.value.code in ("BadDigest", "XAmzContentSHA256Mismatch")
        headers_one = {name: headers[name]}
        one = protocol.PayloadHasher(headers_one)
        one.update(body[1:])
        with pytest.raises(S3Error):
            one.check()
    with s3_error("InvalidDigest"):  # malformed claims fail before the body is read
        protocol.PayloadHasher({"Content-MD5": "zz"})
    with s3_error("InvalidRequest"):
        protocol.PayloadHasher({"x-amz-checksum-crc32": "not-base64"})
    with s3_error("InvalidRequest"):
        protocol.PayloadHasher(
            {"x-amz-checksum-crc32": "AAAAAA==", "x-amz-checksum-sha1": "AAAAAAAAAAAAAAAAAAAAAAAAAAA="}
        )


def test_multipart_etag_and_parts() -> None:
    digests = [hashlib.md5(b"part one").digest(), hashlib.md5(b"part two").digest()]
    assert protocol.multipart_etag(digests) == f'"{hashlib.md5(digests[0] + digests[1]).hexdigest()}-2"'
    assert protocol.multipart_etag(digests[:1]).endswith('-1"')
    for bad in ([], [b"short"], [digests[0]] * 10_001):
        with pytest.raises(ValueError):
            protocol.multipart_etag(bad)
    assert (protocol.parse_part_number("1"), protocol.parse_part_number("10000")) == (1, 10000)
    for value in ("0", "10001", "-1", "1.0", "", " 1", "99999999999999999999", None, "١"):
        with s3_error("InvalidArgument"):
            protocol.parse_part_number(value)
    protocol.check_part_sizes([protocol.MIN_PART_SIZE, protocol.MIN_PART_SIZE, 1])
    protocol.check_part_sizes([1])
    with s3_error("EntityTooSmall") as info:
        protocol.check_part_sizes([protocol.MIN_PART_SIZE, protocol.MIN_PART_SIZE - 1, 1])
    assert info.value.extra["PartNumber"] == "2"
    with s3_error("TooManyParts"):
        protocol.check_part_sizes([protocol.MIN_PART_SIZE] * 10_001)
    assert (protocol.MAX_PARTS, protocol.MIN_PART_SIZE) == (10_000, 5 * 1024 * 1024)


# -- listing -------------------------------------------------------------------------------------------------


def test_max_keys_and_tokens() -> None:
    assert [protocol.parse_max_keys(v) for v in (None, "0", "5", "1000", "5000", "9" * 50)] == [
        1000,
        0,
        5,
        1000,
        1000,
        1000,
    ]
    for bad in ("-1", "abc", "1.5", "", " 5", "١"):
        with s3_error("InvalidArgument"):
            protocol.parse_max_keys(bad)
    for key in ("master/a", "master/é ü/+&=?", "k" * 1024):
        token = protocol.encode_token(key)
        assert protocol.decode_token(token) == key and "=" not in token
    too_long = base64.urlsafe_b64encode(b"k" * 1025).decode().rstrip("=")
    for bad in ("", "!!!", "a", "a b", base64.urlsafe_b64encode(b"\xff\xfe").decode(), "A" * 5000, too_long):
        with s3_error("InvalidArgument"):
            protocol.decode_token(bad)


def reference(keys: list[str], prefix: str, delimiter: str | None, start_after: str | None = None) -> list[str]:
    """Every result of a listing, brute force: keys and common prefixes ("P:" marked) in order."""
    out: list[str] = []
    for key in sorted(keys):
        if not key.startswith(prefix):
            continue
        cut = key.find(delimiter, len(prefix)) if delimiter else -1
        name = key[: cut + len(delimiter)] if delimiter and cut >= 0 else key
        if start_after is not None and name <= start_after:
            continue
        entry = ("P:" if cut >= 0 else "") + name
        if not out or out[-1] != entry:
            out.append(entry)
    return out


def iterators(items: list[tuple[str, None]]) -> dict[str, Callable[[str | None], Iterator[tuple[str, None]]]]:
    keys = [k for k, _ in items]
    return {
        "plain": lambda marker: iter(items),
        "seeking": lambda marker: iter(items[bisect.bisect_right(keys, marker) if marker else 0 :]),
        "skipping": lambda marker: protocol.SortedItems(items, start_after=marker),
    }


@pytest.mark.parametrize("seed", [1, 2])
def test_list_page_paginates_like_the_reference(seed: int) -> None:
    rng = random.Random(seed)
    keys = sorted({"".join(rng.choice("ab/.") for _ in range(rng.randint(1, 6))) for _ in range(90)})
    items = [(k, None) for k in keys]
    for kind, make in iterators(items).items():
        for prefix in ("", "a", "a/", "b/a"):
            for delimiter in (None, "/", "a/"):
                want = reference(keys, prefix, delimiter)
                for max_keys in (1, 3, 1000):
                    got: list[str] = []
                    marker = None
                    for _ in range(len(keys) + 2):
                        page = protocol.list_page(make(marker), prefix, delimiter, max_keys, marker)
                        assert page.key_count <= max_keys
                        names = [k for k, _ in page.contents] + ["P:" + p for p in page.common_prefixes]
                        got += sorted(names, key=lambda n: n.removeprefix("P:"))
                        if not page.is_truncated:
                            assert page.next_marker is None
                            break
                        assert page.key_count == max_keys and page.next_marker is not None
                        marker = page.next_marker
                    assert got == want, (kind, prefix, delimiter, max_keys)


def test_list_page_reads_at_most_one_more_than_it_returns() -> None:
    consumed = 0

    def counting(keys: list[str]) -> Iterator[tuple[str, int]]:
        nonlocal consumed
        for i, key in enumerate(keys):
            consumed += 1
            yield key, i

    keys = [f"master/k{i:05d}" for i in range(10_000)]
    page = protocol.list_page(counting(keys), "master/", None, 5, None)
    assert [k for k, _ in page.contents] == keys[:5] and page.is_truncated and page.next_marker == keys[4]
    assert consumed == 6
    consumed = 0
    page = protocol.list_page(counting(keys), "master/", "/", 5, None)
    assert consumed == 6 and page.key_count == 5
    consumed = 0
    assert protocol.list_page(counting(keys), "", None, 0, None).key_count == 0
    assert consumed == 0
    consumed = 0
    page = protocol.list_page(counting(["a", "b", "c/1", "d", *keys]), "c/", None, 100, None)
    assert [k for k, _ in page.contents] == ["c/1"] and not page.is_truncated
    assert consumed == 4  # stopped at the first key past the prefix


class CountingItems(protocol.SortedItems[None]):
    def __init__(self, items: list[tuple[str, None]], start_after: str | None = None) -> None:
        super().__init__(items, start_after)
        self.consumed = 0
        self.skips: list[str] = []

    def __next__(self) -> tuple[str, None]:
        self.consumed += 1
        return super().__next__()

    def skip_prefix(self, prefix: str) -> None:
        self.skips.append(prefix)
        super().skip_prefix(prefix)


def test_list_page_skips_rolled_up_prefixes() -> None:
    big = [(f"master/big/{i:06d}", None) for i in range(100_000)]
    items = [("master/a", None), *big, ("master/big0", None), ("master/c/d/e", None), ("master/z", None)]
    started = time.monotonic()
    source = CountingItems(items)
    page = protocol.list_page(source, "master/", "/", 1000, None)
    assert [k for k, _ in page.contents] == ["master/a", "master/big0", "master/z"]
    assert page.common_prefixes == ["master/big/", "master/c/"] and not page.is_truncated
    assert source.skips == ["master/big/", "master/c/"]
    assert source.consumed <= 7  # one key per result, not 100,000 for master/big/
    assert time.monotonic() - started < 1.0
    # a plain iterator gives the same page, reading every key to do so
    assert protocol.list_page(iter(items), "master/", "/", 1000, None) == page
    # a marker that is a common prefix skips all of it, with one skip
    source = CountingItems(items)
    page = protocol.list_page(source, "master/", "/", 1000, "master/big/")
    assert [k for k, _ in page.contents] == ["master/big0", "master/z"] and page.common_prefixes == ["master/c/"]
    assert source.consumed <= 6


def test_list_page_delimiter_and_marker_edges() -> None:
    items = [(k, None) for k in ["a/", "a/b", "a0", "b//c", "b/c"]]
    page = protocol.list_page(iter(items), "", "/", 10, None)
    assert page.common_prefixes == ["a/", "b/"] and [k for k, _ in page.contents] == ["a0"]
    page = protocol.list_page(iter(items), "b/", "/", 10, None)
    assert page.common_prefixes == ["b//"] and [k for k, _ in page.contents] == ["b/c"]
    page = protocol.list_page(iter(items), "", "/", 10, "a/b")  # a marker inside a prefix: that prefix is done
    assert page.common_prefixes == ["b/"] and [k for k, _ in page.contents] == ["a0"]
    page = protocol.list_page(iter(items), "", "", 10, None)  # an empty delimiter is no delimiter
    assert [k for k, _ in page.contents] == [k for k, _ in items]


# -- hostile input, at random --------------------------------------------------------------------------------

PIECES = [
    "a", "/", "%", "=", ",", ";", " ", "\x00", "\r", "\n", "é", "\ud800", "\uffff", "AWS4-HMAC-SHA256", "Credential",
    "SignedHeaders", "Signature", "host", "aws4_request", "s3", "20260102", "T030405Z", "0", "f", "-", "bytes=", "*",
    '"', "W/", "..", ".", "\\", "%ff", "%2F", "<", "&", "X-Amz-", "9" * 30,
]  # fmt: skip
BODY_PIECES = [
    b"<Delete>", b"<Object>", b"<Key>", b"</Key>", b"</Object>", b"</Delete>", b"<Quiet>", b"true", b"<!DOCTYPE",
    b"<!ENTITY", b"&", b";", b"\xff", b"\x00", b"<?xml version='1.0' encoding='utf-16'?>", b"<Part>", b"</Part>",
    b"<CompleteMultipartUpload>", b"<PartNumber>", b"</PartNumber>", b"1", b"<ETag>", b"</ETag>", b"\r\n", b"0",
    b";chunk-signature=", b"a" * 64, b"x-amz-checksum-crc32:", b"AAAAAA==", b"\n", b"ffff", b"xmlns='x'",
    b"<CreateBucketConfiguration>", b"<LocationConstraint>",
]  # fmt: skip


def test_hostile_input_only_ever_raises_s3_errors() -> None:
    """Random garbage and near-misses into every parser: an S3Error or a result, never another exception."""
    rng = random.Random(20260102)

    def text(n: int = 12) -> str:
        return "".join(rng.choice(PIECES) for _ in range(rng.randint(0, n)))

    def body(n: int = 40) -> bytes:
        return b"".join(rng.choice(BODY_PIECES) for _ in range(rng.randint(0, n)))

    def near(good: str) -> str:
        chars = list(good)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(chars))
            chars[i : i + rng.randint(0, 2)] = [rng.choice(PIECES)] if rng.random() < 0.7 else []
        return "".join(chars)

    def chunked(**options: Any) -> None:
        decoder = sigv4.AwsChunkedDecoder(**options)
        for _ in range(5):
            decoder.feed(body(3))
        decoder.finish()

    presign_names = [name for name, _ in _presigned_query()]
    calls: list[Callable[[], object]] = [
        lambda: sigv4.parse_authorization(near(GOOD_AUTH)),
        lambda: sigv4.authenticate(
            {"authorization": near(GOOD_AUTH), "x-amz-date": near("20260102T030405Z"), "date": text(4)}, [], now=NOW_TS
        ),
        lambda: sigv4.parse_presigned([(rng.choice(presign_names), text(8)) for _ in range(7)], now=NOW_TS),
        lambda: sigv4.authenticate({}, protocol.parse_query(text(20)), now=NOW_TS),
        lambda: protocol.bucket_and_key(text(6), "/" + text(10), ["s3.localhost"]),
        lambda: protocol.bucket_and_key("localhost", body(5), ["s3.localhost"]),
        lambda: protocol.parse_range(text(10), rng.randint(0, 1000)),
        lambda: protocol.check_conditions(
            {rng.choice(["if-match", "if-none-match", "if-modified-since", "if-unmodified-since"]): text(8)},
            rng.choice([None, ETAG]),
            rng.choice([None, MTIME]),
            for_write=rng.random() < 0.5,
        ),
        lambda: protocol.check_key(text(15)),
        lambda: protocol.decode_token(text(10)),
        lambda: protocol.parse_max_keys(text(4)),
        lambda: protocol.parse_part_number(text(4)),
        lambda: protocol.PayloadHasher(
            {rng.choice(["content-md5", "x-amz-checksum-crc32", "x-amz-checksum-x"]): text(6)}
        ),
        lambda: s3xml.parse_delete(body()),
        lambda: s3xml.parse_complete_multipart(body()),
        lambda: s3xml.parse_create_bucket(body()),
        lambda: chunked(trailer=rng.choice([None, "x-amz-checksum-crc32"]), decoded_length=rng.choice([None, 0, 5])),
        lambda: chunked(
            signing_key=b"k" * 32, seed_signature="a" * 64, amz_date=AWS_DATE, scope=AWS_SCOPE, signed_trailer=True
        ),
        lambda: s3xml.list_objects_v2_xml(
            "repo",
            protocol.Page(contents=[(text(6), s3xml.ObjectInfo(1, "e", T0))]),
            prefix=text(4),
            url=rng.random() < 0.5,
        ),
        lambda: ET.fromstring(s3xml.error_xml(text(5), text(10), text(5), text(3), {"Extra": text(3)})),
        lambda: protocol.list_page(
            iter(sorted((text(5), None) for _ in range(20))),
            text(2),
            rng.choice([None, "/", text(2)]),
            rng.randint(0, 5),
            None,
        ),
    ]
    for _ in range(4000):
        with contextlib.suppress(S3Error):
            rng.choice(calls)()
