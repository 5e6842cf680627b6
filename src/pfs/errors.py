"""One exception tree for the whole of pfs.

Every error a user can cause is a PfsError subclass with an HTTP status and a stable
`code`; the server maps them to responses in one place and the client maps the `code`
back to the same class, so library users and HTTP users see the same failures.
"""

from __future__ import annotations

from typing import Any


class PfsError(Exception):
    status = 500
    code = "internal"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_json(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, **self.details}


class BadRequest(PfsError):
    status = 400
    code = "bad_request"


class InvalidPath(BadRequest):
    code = "invalid_path"


class InvalidName(BadRequest):
    code = "invalid_name"


class ImageNotFound(BadRequest):
    """A job's image is not in the cluster registry (it answered): a 400 of the spec."""

    code = "image_not_found"


class NotFound(PfsError):
    status = 404
    code = "not_found"


class FileNotFound(NotFound):
    code = "file_not_found"


class CommitNotFound(NotFound):
    code = "commit_not_found"


class BranchNotFound(NotFound):
    code = "branch_not_found"


class UploadNotFound(NotFound):
    code = "upload_not_found"


class RepositoryNotFound(NotFound):
    code = "repository_not_found"


class Conflict(PfsError):
    status = 409
    code = "conflict"


class BranchMoved(Conflict):
    """The compare-and-swap on a branch head lost a race."""

    code = "branch_moved"


class AlreadyExists(Conflict):
    code = "already_exists"


class PathConflict(Conflict):
    """A file is in the way of a directory, or the other way round."""

    code = "path_conflict"


class RepositoryNotEmpty(Conflict):
    code = "repository_not_empty"


class MergeConflict(Conflict):
    code = "merge_conflict"


class DirtyBranch(Conflict):
    code = "dirty_branch"


class NotFastForward(Conflict):
    """A pull or push would move a branch to a commit that does not contain its head."""

    code = "not_fast_forward"


class BadObject(BadRequest):
    """An object sent to this server (pull, push) does not match its name, or names
    objects that are not here: the sender is broken, nothing of it is referenced."""

    code = "bad_object"


class Unauthorized(PfsError):
    """No credentials where a request needs them, or credentials that do not check out
    (unknown or disabled key, wrong secret, bad signature): who is asking is not known."""

    status = 401
    code = "unauthorized"


class Forbidden(PfsError):
    """Who is asking is known, and may not do this."""

    status = 403
    code = "forbidden"


class BranchProtected(Forbidden):
    """A protected branch changes only by merge from another branch."""

    code = "branch_protected"


class TooManyRequests(PfsError):
    """Too many failed sign-ins from one address: wait (Retry-After) before trying again."""

    status = 429
    code = "too_many_requests"
    retry_after = 60  # seconds


class JobNotFound(NotFound):
    code = "job_not_found"


class RunNotFound(NotFound):
    code = "run_not_found"


class JobNotReady(Conflict):
    """A job's output was asked for while its run is still going, or after it failed."""

    code = "job_not_ready"


class JobError(PfsError):
    """A job's worker failed: crashed, answered non-2xx, timed out or never started.

    Not a user error of the HTTP caller; it is recorded on the run, with the worker's log.
    """

    status = 502
    code = "job_error"


class MethodNotAllowed(PfsError):
    """The route exists but not for this method; `allow` lists the methods it has."""

    status = 405
    code = "method_not_allowed"


class RangeNotSatisfiable(PfsError):
    """A byte range that starts past the end of the file (`size` in the details)."""

    status = 416
    code = "range_not_satisfiable"


class PayloadTooLarge(PfsError):
    status = 413
    code = "payload_too_large"


class InsufficientStorage(PfsError):
    status = 507
    code = "insufficient_storage"


class Unavailable(PfsError):
    """The server cannot be reached, sheds load, or a store it needs does not answer:
    the same request may succeed later (the response says when: Retry-After)."""

    status = 503
    code = "unavailable"
    retry_after = 1  # seconds


class CorruptObject(PfsError):
    """An object's bytes no longer match its name: storage damage, never a user error."""

    status = 500
    code = "corrupt_object"


class MissingObject(PfsError):
    status = 500
    code = "missing_object"


class DataExpired(PfsError):
    """A file of an old commit whose data a retention rule let garbage collection remove:
    the commit, its history and its file list stay; its bytes are gone for good."""

    status = 410
    code = "data_expired"


def _all_subclasses(cls: type[PfsError]) -> list[type[PfsError]]:
    out: list[type[PfsError]] = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out


_CLASSES: list[type[PfsError]] = [PfsError, *_all_subclasses(PfsError)]
BY_CODE: dict[str, type[PfsError]] = {c.code: c for c in _CLASSES}


def from_json(status: int, body: dict[str, Any]) -> PfsError:
    """Rebuild the server's exception on the client side."""
    cls = BY_CODE.get(str(body.get("error", "")))
    if cls is None:
        cls = {
            400: BadRequest,
            401: Unauthorized,
            403: Forbidden,
            404: NotFound,
            405: MethodNotAllowed,
            409: Conflict,
            410: DataExpired,
            413: PayloadTooLarge,
            429: TooManyRequests,
            503: Unavailable,
            507: InsufficientStorage,
        }.get(status, PfsError)
    details = {k: v for k, v in body.items() if k not in ("error", "message")}
    err = cls(str(body.get("message", f"HTTP {status}")), **details)
    return err
