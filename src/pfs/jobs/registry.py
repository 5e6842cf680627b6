"""The cluster's image registry: a Docker Distribution server (`registry` 2.x) that holds job
images, so an image pushed once runs on every node, as exactly the same bytes.

pfs asks the registry's HTTP API (https://distribution.github.io/distribution/spec/api/)
two things: what digest a tag names now (`resolve`, once per run: every worker of the run
then runs that digest, and incremental reuse keys on it), and what images it holds
(`images`, for `pfs image ls`). The Docker Engines pull; pfs hands them the digest and the
registry's credentials. Images of any other registry are never pulled.

Configured by the operator (`RegistryConfig.from_env`): the registry's URL, and a user and
password (htpasswd) the registry knows. Its answers are bounded like any peer's: sizes,
counts and time.
"""

from __future__ import annotations

import os
import re
import ssl
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import orjson

from ..errors import BadRequest, ImageNotFound, NotFound, Unavailable
from .spec import IMAGE_RE, check_image

MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
    )
)
MAX_ANSWER = 1 << 20  # bytes of one JSON answer (a catalog page, a tag list)
MAX_LISTED = 1000  # tags listed by `images`, over all repositories (each one is a request)
LIST_AT_ONCE = 8  # digests asked at once while listing
TIMEOUT = httpx.Timeout(10.0, connect=5.0)
_REGISTRY_NAME = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?")


@dataclass(frozen=True)
class RegistryConfig:
    url: str  # http://host:port (loopback or a private network) or https://host:port
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None  # a CA bundle for an https registry with a private CA
    # The registry's name in image names, where the Docker Engines pull from, when pfs
    # reaches it by another (in a stack: http://registry:5000 for pfs, 127.0.0.1:5000 for
    # the engines on the hosts); None: the URL's host:port.
    name: str | None = None

    @property
    def address(self) -> str:
        """host:port, as image names start with it."""
        return self.name or urlsplit(self.url).netloc

    @classmethod
    def from_env(cls) -> RegistryConfig | None:
        """PFS_REGISTRY_URL (none: no registry, images are local only), its credentials
        (`credentials_from_env`), PFS_REGISTRY_CA and PFS_REGISTRY_NAME."""
        url = os.environ.get("PFS_REGISTRY_URL") or None
        if url is None:
            return None
        user, password = credentials_from_env()
        env = os.environ.get
        return cls.parse(url, user, password, env("PFS_REGISTRY_CA"), env("PFS_REGISTRY_NAME"))

    @classmethod
    def parse(
        cls, url: str, user: str | None, password: str | None, ca_file: str | None = None, name: str | None = None
    ) -> RegistryConfig:
        parts = urlsplit(url)
        if (
            parts.username is None
            and parts.password is None
            and (parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/") or parts.query)
        ):
            raise BadRequest(f"the registry URL must be http(s)://host[:port], not {url[:200]!r}")
        if parts.username is not None or parts.password is not None:  # never echoed: it may hold a password
            raise BadRequest("the registry URL must not hold credentials: give PFS_REGISTRY_USER and a password file")
        if (user is None) != (password is None):
            raise BadRequest("the registry credentials are incomplete: set both its user and its password")
        if name and not _REGISTRY_NAME.fullmatch(name):
            raise BadRequest(f"the registry name must be host[:port], as image names start with it, not {name[:200]!r}")
        return cls(f"{parts.scheme}://{parts.netloc}", user, password, ca_file or None, name or None)


@dataclass(frozen=True)
class ImageRef:
    """An image name split as the registry sees it."""

    repository: str  # the path in the registry, e.g. "chess/map"
    reference: str  # a tag or a digest


class Registry:
    """A client of the cluster registry; thread-safe (httpx's client is)."""

    def __init__(self, config: RegistryConfig) -> None:
        self.config = config
        self.address = config.address
        auth = (config.user, config.password) if config.user is not None and config.password is not None else None
        self.http = httpx.Client(
            base_url=config.url,
            auth=auth,
            verify=ssl.create_default_context(cafile=config.ca_file) if config.ca_file else True,
            timeout=TIMEOUT,
            trust_env=False,  # never through a proxy the environment names
            follow_redirects=False,
        )

    def close(self) -> None:
        self.http.close()

    # ---- names ---------------------------------------------------------------------
    def owns(self, image: str | None) -> bool:
        """Whether an image name points into this registry (only those are ever pulled)."""
        return bool(image) and str(image).startswith(self.address + "/")

    def split(self, image: str) -> ImageRef:
        m = IMAGE_RE.fullmatch(check_image(image))
        if m is None or not self.owns(image):  # check_image has raised for a malformed one
            raise BadRequest(f"image {image[:300]!r} is not in the cluster registry {self.address}")
        name, tag, digest = m.group(1), m.group(2), m.group(3)
        return ImageRef(name[len(self.address) + 1 :], digest or tag or "latest")

    def pinned(self, image: str, digest: str) -> str:
        """What a worker runs: the image's repository at exactly `digest`."""
        return f"{self.address}/{self.split(image).repository}@{digest}"

    def auth_config(self) -> dict[str, str] | None:
        """The credentials a Docker Engine pulls with (never logged: see the engines' errors)."""
        return self.auth_of(self.config)

    @staticmethod
    def auth_of(config: RegistryConfig) -> dict[str, str] | None:
        if config.user is None or config.password is None:
            return None
        return {"username": config.user, "password": config.password, "serveraddress": config.address}

    # ---- questions -----------------------------------------------------------------
    def resolve(self, image: str) -> str:
        """The digest ("sha256:…") `image`'s tag names now; ImageNotFound if the registry
        has no such tag or digest, Unavailable if it does not answer."""
        ref = self.split(image)
        path = f"/v2/{quote(ref.repository)}/manifests/{quote(ref.reference)}"
        resp = self._ask("HEAD", path, f"resolving {image}", headers={"accept": MANIFEST_TYPES})
        if resp.status_code == 404:
            raise ImageNotFound(f"image {image!r}: the registry {self.address} has no such tag or digest")
        self._check(resp, f"resolving {image}")
        digest = str(resp.headers.get("docker-content-digest", ""))
        if not digest.startswith("sha256:") or len(digest) != 71:
            raise Unavailable(f"resolving {image}: the registry {self.address} sent no usable digest")
        if ref.reference.startswith("sha256:") and ref.reference != digest:
            raise Unavailable(f"resolving {image}: the registry {self.address} answered another digest")
        return digest

    def images(self) -> tuple[list[dict[str, Any]], bool]:
        """What the registry holds: each repository with its tags and their digests, and
        whether the list stops short (at MAX_LISTED tags: each digest is one request, made
        LIST_AT_ONCE at a time)."""
        listing = self._json(f"/v2/_catalog?n={MAX_LISTED}", "listing repositories")
        repos = listing.get("repositories") if isinstance(listing, dict) else None
        truncated = bool(isinstance(listing, dict) and len(repos or []) >= MAX_LISTED)
        found: list[tuple[str, list[str]]] = []
        left = MAX_LISTED
        for repo in sorted(r for r in (repos or []) if isinstance(r, str)):
            if left <= 0:
                truncated = True
                break
            try:
                tags = self._json(f"/v2/{quote(repo)}/tags/list?n={left}", f"listing tags of {repo}")
            except NotFound:
                continue  # deleted meanwhile
            names = tags.get("tags") if isinstance(tags, dict) else None
            found.append((repo, sorted(t for t in (names or []) if isinstance(t, str))[:left]))
            left -= len(found[-1][1])

        def digest(ref: str) -> str | None:
            try:
                return self.resolve(ref)
            except BadRequest:  # a name the registry holds but Docker would not parse; or gone
                return None

        refs = [f"{self.address}/{repo}:{tag}" for repo, tags in found for tag in tags]
        with ThreadPoolExecutor(LIST_AT_ONCE, thread_name_prefix="pfs-registry-list") as pool:
            digests = iter(list(pool.map(digest, refs)))
        out = [
            {"repository": f"{self.address}/{repo}", "tags": [{"tag": t, "digest": next(digests)} for t in tags]}
            for repo, tags in found
        ]
        return out, truncated

    def unreachable(self) -> str | None:
        """Why the registry does not answer now (None: it does), for a failure's reason."""
        try:
            self.http.get("/v2/", timeout=httpx.Timeout(3.0))
        except httpx.HTTPError as exc:
            return f"the registry {self.address} does not answer ({type(exc).__name__})"
        return None

    # ---- HTTP ----------------------------------------------------------------------
    def _ask(self, method: str, path: str, what: str, **kw: Any) -> httpx.Response:
        try:
            return self.http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise Unavailable(f"{what}: the registry {self.address} did not answer: {type(exc).__name__}") from None

    def _check(self, resp: httpx.Response, what: str) -> None:
        if resp.status_code in (401, 403):
            raise Unavailable(f"{what}: the registry {self.address} refused pfs's credentials ({resp.status_code})")
        if resp.status_code == 404:
            raise NotFound(f"{what}: the registry {self.address} has no such thing")
        if resp.status_code >= 300:
            raise Unavailable(f"{what}: the registry {self.address} answered {resp.status_code}")

    def _json(self, path: str, what: str) -> Any:
        body = bytearray()
        try:
            with self.http.stream("GET", path) as resp:
                self._check(resp, what)
                for piece in resp.iter_bytes():
                    body += piece
                    if len(body) > MAX_ANSWER:
                        raise Unavailable(f"{what}: the registry {self.address} sent more than {MAX_ANSWER} bytes")
        except httpx.HTTPError as exc:
            raise Unavailable(f"{what}: the registry {self.address} did not answer: {type(exc).__name__}") from None
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            raise Unavailable(f"{what}: the registry {self.address} sent malformed JSON") from None


# ---- a developer's side: getting an image in --------------------------------------------
@dataclass(frozen=True)
class Pushed:
    image: str  # registry/name:tag, as a job spec names it
    digest: str  # sha256:…, what a run pins it to


def push_image(
    image: str, address: str, auth: dict[str, str] | None = None, progress: Any = None, docker_client: Any = None
) -> Pushed:
    """Tag a local image into the registry at `address` (host:port) and push it with the
    local Docker Engine; the digest is the registry's. `progress(done, total)` hears the
    bytes of the layers being sent (None while they are still being counted)."""
    import docker
    import docker.errors

    m = IMAGE_RE.fullmatch(check_image(image))
    assert m is not None  # check_image raised otherwise
    name, tag, digest = m.group(1), m.group(2), m.group(3)
    if digest is not None:
        raise BadRequest(f"push a tag, not a digest: {image!r}")
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):  # it names a registry: replace it
        name = rest
    target, tag = f"{address}/{name}", tag or "latest"
    api = (docker_client or docker.from_env(timeout=120)).api
    layers: dict[str, tuple[int, int]] = {}
    try:
        api.tag(image, target, tag)
        found = None
        for event in api.push(target, tag=tag, stream=True, decode=True, auth_config=auth):
            if not isinstance(event, dict):
                continue
            if event.get("error"):
                raise Unavailable(f"pushing {target}:{tag}: {str(event['error'])[:500]}")
            detail = event.get("progressDetail") or {}
            if event.get("id") and detail.get("total"):
                layers[str(event["id"])] = (int(detail.get("current") or 0), int(detail["total"]))
                if progress is not None:
                    progress(sum(c for c, _ in layers.values()), sum(t for _, t in layers.values()))
            aux = event.get("aux") or {}
            if isinstance(aux, dict) and str(aux.get("Digest", "")).startswith("sha256:"):
                found = str(aux["Digest"])
    except docker.errors.ImageNotFound:
        raise BadRequest(f"image {image!r} is not in the local Docker Engine") from None
    except docker.errors.APIError as exc:
        raise Unavailable(f"pushing {target}:{tag}: {exc.explanation or exc}") from None
    except docker.errors.DockerException as exc:
        raise Unavailable(f"pushing {target}:{tag}: the Docker Engine did not answer: {exc}") from None
    if found is None:
        raise Unavailable(f"pushing {target}:{tag}: the engine did not report the registry's digest")
    return Pushed(f"{target}:{tag}", found)


def credentials_from_env() -> tuple[str | None, str | None]:
    """PFS_REGISTRY_USER, and the password in the file PFS_REGISTRY_PASSWORD_FILE (or in
    PFS_REGISTRY_PASSWORD): the server's credentials, and a developer's for `pfs image push`."""
    password = os.environ.get("PFS_REGISTRY_PASSWORD") or None
    path = os.environ.get("PFS_REGISTRY_PASSWORD_FILE") or None
    if path:
        try:
            with open(path) as f:
                password = f.read(4096).strip()
        except OSError as exc:
            raise BadRequest(f"cannot read the registry password file {path}: {exc.strerror}") from None
    return os.environ.get("PFS_REGISTRY_USER") or None, password


def auth_from_env(address: str) -> dict[str, str] | None:
    """A Docker Engine's credentials for the registry at `address`, from the environment."""
    user, password = credentials_from_env()
    if (user is None) != (password is None):
        raise BadRequest("the registry credentials are incomplete: set PFS_REGISTRY_USER and its password")
    if user is None or password is None:
        return None
    return {"username": user, "password": password, "serveraddress": address}
