"""The one table of what every route and every S3 operation needs (DESIGN.md section 6).

The route table (`api.routes`) takes each route's permissions from here and refuses to
start if a route or method is missing, so a new route cannot be added without a line
here; docs/access.md shows the same table, and a test checks the two agree. Repository
routes are the same with or without the `/repo/<name>` prefix (without it they address the
default repository); their permission is on that repository.
"""

from __future__ import annotations

from ..access.identity import Permission

PUBLIC, USER, READ, WRITE, ADMIN, SERVER = (
    Permission.PUBLIC,
    Permission.USER,
    Permission.READ,
    Permission.WRITE,
    Permission.ADMIN,
    Permission.SERVER,
)

# route -> {method: permission}. USER routes about a user or key: the user itself, or a server admin.
SERVER_ROUTES: dict[str, dict[str, Permission]] = {
    "/ping": {"GET": PUBLIC},
    "/ready": {"GET": PUBLIC},
    "/whoami": {"GET": PUBLIC},
    "/metrics": {"GET": USER},  # counts by route and status, no names: any signed-in user (a scraper's key)
    "/repo": {"GET": USER},  # lists the repositories the caller may read
    "/repo/{name}": {"GET": READ, "POST": SERVER, "PUT": SERVER, "DELETE": SERVER},
    "/user": {"GET": SERVER},
    "/user/{name}": {"GET": USER, "POST": SERVER, "PUT": SERVER, "DELETE": SERVER},
    "/user/{name}/key": {"GET": USER, "POST": USER},
    "/key/{id}": {"GET": USER, "DELETE": USER},
    "/key/{id}/disable": {"POST": USER},
    "/key/{id}/enable": {"POST": USER},
    "/key/{id}/rotate": {"POST": USER},
    "/audit": {"GET": SERVER},
    "/image": {"GET": USER},  # what the cluster registry holds: job authors pick from it
    # The web console: its pages need what the API's reads of the same data need; its
    # actions (a confirm page, then its POST) what the API's writes need.
    "/ui": {"GET": USER},  # lists the repositories the caller may read, like /repo
    "/ui/_static/{name}": {"GET": PUBLIC},  # the stylesheet, the upload page's script
    "/ui/_login": {"GET": PUBLIC, "POST": PUBLIC},  # checks a key pair as Basic does (throttled, audited)
    "/ui/_logout": {"POST": PUBLIC},  # drops the session cookie
    "/ui/{repo}": {"GET": READ},
    "/ui/{repo}/log/{ref}": {"GET": READ},
    "/ui/{repo}/tree/{ref}": {"GET": READ},
    "/ui/{repo}/tree/{ref}/{path:anypath}": {"GET": READ},
    "/ui/{repo}/blob/{ref}/{path:anypath}": {"GET": READ},
    "/ui/{repo}/raw/{ref}/{path:anypath}": {"GET": READ},
    "/ui/{repo}/branch": {"GET": WRITE, "POST": WRITE},
    "/ui/{repo}/upload/{branch}": {"GET": WRITE, "POST": WRITE},
    "/ui/{repo}/commit/{branch}": {"GET": WRITE, "POST": WRITE},
    "/ui/{repo}/merge": {"GET": WRITE, "POST": WRITE},
    "/ui/{repo}/revert/{branch}": {"GET": WRITE, "POST": WRITE},
    "/ui/{repo}/jobs": {"GET": READ},
    "/ui/{repo}/jobs/{name}": {"GET": READ},
    "/ui/{repo}/jobs/{name}/runs/{id}": {"GET": READ},
    "/ui/{repo}/runs/{id}": {"GET": READ},
    "/ui/{repo}/compare": {"GET": READ},
    "/ui/{repo}/compare/{path:anypath}": {"GET": READ},
    "/ui/{repo}/history/{ref}/{path:anypath}": {"GET": READ},
}

REPO_ROUTES: dict[str, dict[str, Permission]] = {
    "/file/{path:anypath}": {"GET": READ, "POST": WRITE, "PUT": WRITE, "DELETE": WRITE},
    "/file": {"GET": READ},
    "/tar/{path:anypath}": {"POST": WRITE},
    "/tar": {"POST": WRITE},
    "/commit": {"GET": READ, "POST": WRITE},
    "/commit/{id}": {"GET": READ},
    "/branch": {"GET": READ, "POST": WRITE},
    "/branch/{name:anypath}": {"GET": READ, "DELETE": WRITE},
    "/log": {"GET": READ},
    "/diff": {"GET": READ},
    "/merge": {"POST": WRITE},
    "/revert": {"POST": WRITE},
    "/discard": {"POST": WRITE},
    "/fsck": {"GET": ADMIN},  # reads every object: costly
    "/gc": {"GET": ADMIN, "POST": ADMIN},  # deletes data; its report names the repository's size
    "/retention": {"GET": READ},
    "/retention/{name:anypath}": {"PUT": ADMIN, "DELETE": ADMIN},  # what garbage collection may delete
    "/du": {"GET": ADMIN},  # walks every tree and lists every object: costly
    "/job": {"GET": READ},
    "/job/{name}": {"GET": READ, "POST": ADMIN, "PUT": ADMIN, "DELETE": ADMIN},  # a spec chooses what runs
    "/job/{name}/file/{path:anypath}": {"GET": READ},
    "/job/{name}/file": {"GET": READ},
    "/job/{name}/log": {"GET": READ},
    "/job/{name}/runs": {"GET": READ},
    "/run": {"GET": READ, "DELETE": ADMIN},  # DELETE ?older_than=: run retention
    "/run/{id}": {"GET": READ},
    "/sync/ancestors": {"POST": READ},  # POST carries the question; nothing is written
    "/sync/walk": {"POST": READ},
    "/sync/missing": {"POST": READ},
    "/sync/fetch": {"POST": READ},
    "/sync/objects": {"POST": WRITE},
    "/sync/ref": {"POST": WRITE},
    "/access": {"GET": ADMIN},
    "/access/{user}": {"PUT": ADMIN, "DELETE": ADMIN},
    "/protected": {"GET": READ},
    "/protected/{pattern:anypath}": {"PUT": ADMIN, "DELETE": ADMIN},
}

# S3 operation (the gateway handler's name) -> permission on the bucket's repository.
S3_OPERATIONS: dict[str, Permission] = {
    "ListBuckets": USER,  # lists the buckets the caller may read
    "HeadBucket": READ,
    "CreateBucket": SERVER,
    "DeleteBucket": SERVER,
    "GetBucketLocation": READ,
    "GetBucketVersioning": READ,
    "GetBucketAcl": READ,
    "ListObjects": READ,
    "ListObjectVersions": READ,
    "ListMultipartUploads": READ,
    "GetObject": READ,
    "HeadObject": READ,
    "GetObjectAcl": READ,
    "PutObject": WRITE,
    "CopyObject": WRITE,  # and READ on the source bucket
    "DeleteObject": WRITE,
    "DeleteObjects": WRITE,
    "CreateMultipartUpload": WRITE,
    "UploadPart": WRITE,
    "CompleteMultipartUpload": WRITE,
    "AbortMultipartUpload": WRITE,
    "ListParts": READ,
}


def is_mutation(method: str, need: Permission) -> bool:
    """What the audit log records: every request that may change something (a POST that
    only asks a question, as the sync reads do, is a read)."""
    return method not in ("GET", "HEAD") and need != READ


def markdown() -> str:
    """The table as docs/access.md shows it."""
    lines = ["| route | method | permission |", "|---|---|---|"]
    for prefix, table in (("", SERVER_ROUTES), ("[/repo/<name>]", REPO_ROUTES)):
        for route, methods in table.items():
            for method, need in methods.items():
                lines.append(f"| `{prefix}{route.replace(':anypath', '')}` | {method} | {need.label} |")
    lines += ["", "| S3 operation | permission |", "|---|---|"]
    lines += [f"| {op} | {need.label} |" for op, need in S3_OPERATIONS.items()]
    return "\n".join(lines) + "\n"
