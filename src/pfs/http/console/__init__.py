"""The web console: HTML pages under `/ui`, served by the same app and listener as the API
(docs/design.md section 2), and its actions (actions.py: sign in, branch, upload, commit,
merge, revert).

Server-rendered (Jinja2, autoescaped), no build step; one small script, on the upload
page only. Its routes are built like the API's: one handler per method (`endpoint`, so
HEAD never writes and other methods are 405), each route's permission from
permissions.py, checked by the API's guard.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import BaseRoute, Route

from ..permissions import SERVER_ROUTES
from ..web import endpoint
from . import actions, compare, jobs
from .pages import Console, error_response, owns, routing_error

__all__ = ["Console", "error_response", "owns", "routing_error", "routes"]

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from starlette.requests import Request
    from starlette.responses import Response

    from ..api import Server

    Handler = Callable[[Request], Awaitable[Response]]


def routes(s: Server) -> list[BaseRoute]:
    """`/ui` (the repositories) and everything below it, each route under its full path as
    permissions.py names it. The pages of a repository need READ on it; the stylesheet is
    public (error pages show it too)."""
    c = Console(s)

    def page(path: str, get: Handler | None = None, **methods: Handler) -> Route:
        if get is not None:
            methods["get"] = get
        return Route(path, endpoint(**methods).guarded(path, SERVER_ROUTES[path], c.guard))

    own: list[BaseRoute] = [
        page("/ui", c.repos_page),
        page("/ui/_static/{name}", c.static),
        page("/ui/{repo}", c.repo_page),
        page("/ui/{repo}/log/{ref}", c.log_page),
        page("/ui/{repo}/tree/{ref}", c.tree_page),
        page("/ui/{repo}/tree/{ref}/{path:anypath}", c.tree_page),
        page("/ui/{repo}/blob/{ref}/{path:anypath}", c.blob_page),
        page("/ui/{repo}/raw/{ref}/{path:anypath}", c.raw),
    ]
    parts = [page(path, **methods) for part in (compare, jobs, actions) for path, methods in part.routes(c)]
    # `/ui/_login` and the like before `/ui/{repo}`, which would take them for a repository
    # (no repository's name starts with "_").
    fixed = [r for r in parts if isinstance(r, Route) and r.path.startswith("/ui/_")]
    return own[:2] + fixed + own[2:] + [r for r in parts if r not in fixed]
