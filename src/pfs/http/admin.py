"""Routes of identity and access: who am I, users and their access keys, roles on a
repository, protected branches, and the audit log. Thin, as the data routes are: each
parses, calls `pfs.access` or the repository's rules in a worker thread, and renders.

A new key's secret is in the answer to the request that made it and nowhere else: never
in a listing, a log line or an audit entry.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from ..access.identity import Identity, KeyInfo, NewKey, Principal
from ..errors import BadRequest, NotFound
from ..paths import check_branch_pattern, check_user_name
from ..storage.identity import AuditRow, UserRow
from .auth import PRINCIPAL_SCOPE
from .web import Params, accepts, drain, iso, one_line, respond, run

if TYPE_CHECKING:
    from .api import Server

MAX_AUDIT_PAGE = 1000


def _principal(request: Request) -> Principal:
    principal: Principal = request.scope[PRINCIPAL_SCOPE]
    return principal


def key_json(k: KeyInfo) -> dict[str, Any]:
    return {"id": k.id, "user": k.user, "created": iso(k.created), "disabled": k.disabled}


def key_line(k: KeyInfo) -> str:
    return f"{k.id}    {k.user}    {iso(k.created)}    {'disabled' if k.disabled else 'active'}\n"


def new_key_answer(request: Request, k: NewKey, what: str) -> Response:
    text = (
        f"{what}\naccess key id:     {k.id}\nsecret access key: {k.secret}\n"
        "The secret is shown only now: keep it safe.\n"
    )
    return respond(request, text, {"user": k.user, "id": k.id, "secret": k.secret}, status=201)


def user_json(u: UserRow) -> dict[str, Any]:
    return {"name": u.name, "admin": u.admin, "created": iso(u.created)}


def audit_json(a: AuditRow) -> dict[str, Any]:
    return {
        "id": a.id,
        "time": iso(a.at),
        "user": a.user,
        "key": a.key,
        "addr": a.addr,
        "listener": a.listener,
        "method": a.method,
        "action": a.action,
        "repo": a.repo,
        "target": a.target,
        "status": a.status,
        "request_id": a.request_id,
    }


def audit_line(a: AuditRow) -> str:
    when = dt.datetime.fromtimestamp(a.at, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    who = a.user or "anonymous"
    return f"{a.id}    {when}    {who}    {a.addr}    {a.method} {one_line(a.target)}    {a.status}\n"


class Admin:
    """The handlers; `s` is the data API's server (its node, gate and repository lookup)."""

    def __init__(self, s: Server) -> None:
        self.s = s

    @property
    def identity(self) -> Identity:
        return self.s.node.access.identity

    # ---- who am I ----------------------------------------------------------------------
    @accepts()
    async def whoami(self, request: Request, q: Params) -> Response:
        access = self.s.node.access
        p = await self.s.gate.principal(request, access.identity)
        data = {"user": p.user, "admin": p.admin or p.open, "key": p.key, "access_control": not p.open}
        if p.open:
            text = "anonymous (access control is off: this server has no users)\n"
        else:
            text = f"{p.shown}{' (server admin)' if p.admin else ''}{f', key {p.key}' if p.key else ''}\n"
        return respond(request, text, data)

    # ---- users -------------------------------------------------------------------------
    @accepts()
    async def user_list(self, request: Request, q: Params) -> Response:
        users = await run(self.identity.users)
        text = "".join(f"{u.name}{'    admin' if u.admin else ''}\n" for u in users)
        return respond(request, text, [user_json(u) for u in users])

    @accepts()
    async def user_get(self, request: Request, q: Params) -> Response:
        name = check_user_name(request.path_params["name"])
        self.identity.require_self(_principal(request), name)

        def gather() -> dict[str, Any]:
            user = self.identity.user(name)
            keys = self.identity.keys(name)
            names = {r.id: r.name for r in self.s.node.repos.db.list_repos()}
            grants = self.identity.store.grants_of_user(name)
            roles = {names[i]: role for i, role in grants.items() if i in names}
            return {**user_json(user), "keys": [key_json(k) for k in keys], "roles": roles}

        data = await run(gather)
        text = f"{data['name']}{' (server admin)' if data['admin'] else ''}\n"
        text += "".join(f"  key  {k['id']}    {'disabled' if k['disabled'] else 'active'}\n" for k in data["keys"])
        text += "".join(f"  role {repo}: {role}\n" for repo, role in sorted(data["roles"].items()))
        return respond(request, text, data)

    @accepts(flags=("admin",))
    async def user_create(self, request: Request, q: Params) -> Response:
        """A user and its first access key."""
        await drain(request)
        name = check_user_name(request.path_params["name"])

        key = await run(self.identity.create_user_with_key, name, q.flag("admin"))
        return new_key_answer(request, key, f"Created user {name}{' (server admin)' if q.flag('admin') else ''}.")

    @accepts(flags=("admin",))
    async def user_update(self, request: Request, q: Params) -> Response:
        await drain(request)
        name = check_user_name(request.path_params["name"])
        if "admin" not in q.values:
            raise BadRequest("give ?admin=1 or ?admin=0")
        await run(self.identity.set_admin, name, q.flag("admin"))
        user = await run(self.identity.user, name)
        return respond(request, f"{name}: {'server admin' if user.admin else 'not a server admin'}\n", user_json(user))

    @accepts()
    async def user_delete(self, request: Request, q: Params) -> Response:
        name = check_user_name(request.path_params["name"])
        await run(self.identity.delete_user, name)
        return respond(request, f"Deleted user {name} and its keys.\n", {"name": name, "deleted": True})

    # ---- keys --------------------------------------------------------------------------
    @accepts()
    async def user_keys(self, request: Request, q: Params) -> Response:
        name = check_user_name(request.path_params["name"])
        self.identity.require_self(_principal(request), name)
        await run(self.identity.user, name)
        keys = await run(self.identity.keys, name)
        return respond(request, "".join(key_line(k) for k in keys), [key_json(k) for k in keys])

    @accepts()
    async def key_create(self, request: Request, q: Params) -> Response:
        await drain(request)
        name = check_user_name(request.path_params["name"])
        self.identity.require_self(_principal(request), name)
        key = await run(self.identity.create_key, name)
        return new_key_answer(request, key, f"Created an access key for {name}.")

    async def _own_key(self, request: Request) -> KeyInfo:
        """The key the route names, if the caller owns it or is a server admin (else, as
        for a key that is not there, 404: key ids of others are not confirmed)."""
        key: KeyInfo = await run(self.identity.key, request.path_params["id"])
        p = _principal(request)
        if not (p.open or p.admin or p.user == key.user):
            raise NotFound(f"access key {key.id!r} not found")
        return key

    @accepts()
    async def key_get(self, request: Request, q: Params) -> Response:
        key = await self._own_key(request)
        return respond(request, key_line(key), key_json(key))

    @accepts()
    async def key_delete(self, request: Request, q: Params) -> Response:
        key = await self._own_key(request)
        await run(self.identity.delete_key, key.id)
        return respond(request, f"Deleted access key {key.id}.\n", {"id": key.id, "deleted": True})

    @accepts()
    async def key_disable(self, request: Request, q: Params) -> Response:
        return await self._set_disabled(request, True)

    @accepts()
    async def key_enable(self, request: Request, q: Params) -> Response:
        return await self._set_disabled(request, False)

    async def _set_disabled(self, request: Request, disabled: bool) -> Response:
        await drain(request)
        key = await self._own_key(request)
        await run(self.identity.set_key_disabled, key.id, disabled)
        state = "disabled" if disabled else "enabled"
        return respond(request, f"Access key {key.id} {state}.\n", {"id": key.id, "disabled": disabled})

    @accepts()
    async def key_rotate(self, request: Request, q: Params) -> Response:
        await drain(request)
        key = await self._own_key(request)
        new = await run(self.identity.rotate_key, key.id)
        return new_key_answer(request, new, f"Created access key {new.id} for {new.user}; {key.id} is disabled.")

    # ---- audit -------------------------------------------------------------------------
    @accepts("limit", "before", "user", "repo")
    async def audit(self, request: Request, q: Params) -> Response:
        limit = _int(q.get("limit", "100"), "limit", 1, MAX_AUDIT_PAGE)
        before = _int(q.get("before"), "before", 1, 2**62) if q.get("before") else None
        user = check_user_name(q.get("user") or "") if q.get("user") else None
        rows = await run(self.s.node.access.audit.entries, limit, before, user, q.get("repo"))
        return respond(request, "".join(audit_line(a) for a in rows), [audit_json(a) for a in rows])

    # ---- roles on a repository ---------------------------------------------------------
    @accepts()
    async def access_list(self, request: Request, q: Params) -> Response:
        repo = self.s.repo(request)
        grants = await run(self.identity.grants, repo.id)
        text = "".join(f"{user}    {role}\n" for user, role in grants)
        return respond(request, text, [{"user": u, "role": r} for u, r in grants])

    @accepts("role")
    async def access_put(self, request: Request, q: Params) -> Response:
        await drain(request)
        repo = self.s.repo(request)
        user = check_user_name(request.path_params["user"])
        role = q.get("role")
        if role is None:
            raise BadRequest("give ?role=read, write or admin")
        await run(self.identity.grant, user, repo.id, role)
        return respond(request, f"{user} has {role} on {repo.name}.\n", {"user": user, "repo": repo.name, "role": role})

    @accepts()
    async def access_delete(self, request: Request, q: Params) -> Response:
        repo = self.s.repo(request)
        user = check_user_name(request.path_params["user"])
        if not await run(self.identity.revoke, user, repo.id):
            raise NotFound(f"{user} has no role on {repo.name}")
        return respond(request, f"{user} has no role on {repo.name} now.\n", {"user": user, "repo": repo.name})

    # ---- protected branches ------------------------------------------------------------
    @accepts()
    async def protected_list(self, request: Request, q: Params) -> Response:
        rules = self.s.repo(request).rules
        patterns = await run(rules.patterns) if rules is not None else []
        return respond(request, "".join(f"{p}\n" for p in patterns), list(patterns))

    @accepts()
    async def protected_put(self, request: Request, q: Params) -> Response:
        await drain(request)
        pattern = check_branch_pattern(request.path_params["pattern"])
        repo = self.s.repo(request)
        assert repo.rules is not None
        added = await run(repo.rules.add, pattern)
        text = f"Branches matching {pattern} are protected{'' if added else ' (they were already)'}.\n"
        return respond(request, text, {"pattern": pattern, "added": added}, status=201 if added else 200)

    @accepts()
    async def protected_delete(self, request: Request, q: Params) -> Response:
        pattern = check_branch_pattern(request.path_params["pattern"])
        repo = self.s.repo(request)
        assert repo.rules is not None
        if not await run(repo.rules.remove, pattern):
            raise NotFound(f"no protection rule {pattern!r} on {repo.name}")
        return respond(request, f"Branches matching {pattern} are no longer protected.\n", {"pattern": pattern})


def _int(text: str | None, name: str, low: int, high: int) -> int:
    try:
        value = int(text or "")
    except ValueError:
        raise BadRequest(f"{name} must be a whole number") from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}")
    return value


Route = Callable[..., BaseRoute]


def server_routes(s: Server, route: Route) -> list[BaseRoute]:
    a = Admin(s)
    return [
        route("/whoami", get=a.whoami),
        route("/user", get=a.user_list),
        route("/user/{name}", get=a.user_get, post=a.user_create, put=a.user_update, delete=a.user_delete),
        route("/user/{name}/key", get=a.user_keys, post=a.key_create),
        route("/key/{id}", get=a.key_get, delete=a.key_delete),
        route("/key/{id}/disable", post=a.key_disable),
        route("/key/{id}/enable", post=a.key_enable),
        route("/key/{id}/rotate", post=a.key_rotate),
        route("/audit", get=a.audit),
    ]


def repo_routes(s: Server, route: Route) -> list[BaseRoute]:
    a = Admin(s)
    return [
        route("/access", get=a.access_list),
        route("/access/{user}", put=a.access_put, delete=a.access_delete),
        route("/protected", get=a.protected_list),
        route("/protected/{pattern:anypath}", put=a.protected_put, delete=a.protected_delete),
    ]
