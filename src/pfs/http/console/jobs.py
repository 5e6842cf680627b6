"""Jobs: a repository's job DAG as a picture, its runs, their progress, failures and logs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from .pages import Console


def routes(c: Console) -> list[tuple[str, dict[str, Callable[[Request], Awaitable[Response]]]]]:
    """(route, {method: handler}): each route also needs its line in permissions.py."""
    return []
