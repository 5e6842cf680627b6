"""Console sign-in and CSRF: who a browser is without HTTP Basic, and proof that a form
was posted by a page of the console.

A session is a cookie holding `<key id>.<expiry>.<nonce>.<mac>`: no secret, only an HMAC
(SHA-256) under the console key, which is derived from the server key (the one every node
of a cluster already shares, so each accepts the others' sessions, and nothing new is
stored). Each request checks the mac and the expiry, then asks `Identity.key_secret`
whether the key still exists and is enabled: disabling, rotating or deleting a key ends
its sessions (on other nodes within the identity cache's 2 s).

A CSRF token is an HMAC of a nonce and the user: the session's nonce when signed in with
the cookie, else the nonce of a `pfs_csrf` cookie (signed in by Basic, access control off,
or the login form itself). A cross-site page can neither read the token nor set the
cookies (SameSite=Strict, HttpOnly), and a POST whose `Origin` or `Sec-Fetch-Site` says it
came from another site is refused before the token is looked at.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
import urllib.parse
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from ...access.identity import Principal
from ...errors import Forbidden, Unauthorized
from ..auth import PRINCIPAL_SCOPE, ask
from ..web import one_line

if TYPE_CHECKING:
    from ..api import Server

SESSION_COOKIE = "pfs_session"
CSRF_COOKIE = "pfs_csrf"
NOTICE_COOKIE = "pfs_notice"
SESSION_TTL = 12 * 3600  # seconds a sign-in lasts
NONCE_SCOPE = "pfs.console.nonce"  # the CSRF nonce of this request
NEW_NONCE_SCOPE = "pfs.console.new_nonce"  # a CSRF cookie to set on the answer
ENDED_SCOPE = "pfs.console.ended"  # a session cookie came and was refused
SESSION_SCOPE = "pfs.console.session"  # signed in by a session cookie (it can sign out)
_NONCE = re.compile(r"[A-Za-z0-9_-]{22}")
_TOKEN = re.compile(r"([A-Z0-9]{16,32})\.(\d{10,12})\.([A-Za-z0-9_-]{22})\.([A-Za-z0-9_-]{43})")
MAX_NOTICE = 300


def _mac(key: bytes, *parts: str) -> str:
    raw = hmac.new(key, "\0".join(parts).encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a console path only (`/ui` or below, no scheme, no
    host, no `//` or backslash a browser could read as another host), else `/ui`."""
    if not target or len(target) > 2000 or not (target == "/ui" or target.startswith("/ui/")):
        return "/ui"
    if "\\" in target or "//" in target or any(not c.isprintable() for c in target):
        return "/ui"
    return target


def cross_site(request: Request) -> bool:
    """Whether the browser says the request came from another site: `Sec-Fetch-Site`
    other than same-origin (or none: typed by the user), or an `Origin` of another host."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return True
    origin = request.headers.get("origin")
    if origin is None:
        return False
    parts = urllib.parse.urlsplit(origin)
    if origin == "null" or parts.netloc != request.headers.get("host", ""):
        return True
    return request.url.scheme == "https" and parts.scheme != "https"


class Sessions:
    """Session cookies and CSRF tokens of one node's console."""

    def __init__(self, server: Server) -> None:
        self.s = server
        self._key: bytes | None = None

    def key(self) -> bytes:
        """The console key: derived from the server key, so every node of a cluster (which
        must share that key already) makes the same, and nothing is stored or written for
        it. A node without a server key can check no access key either (no session); its
        CSRF tokens then use a key of this process only."""
        if self._key is None:
            derived = self.s.node.access.identity.server_key.derive(b"console session v1")
            self._key = derived if derived is not None else secrets.token_bytes(32)
        return self._key

    # ---- sessions ----------------------------------------------------------------------
    def issue(self, principal: Principal) -> tuple[str, str]:
        """A new session of `principal`'s key: the cookie's value and its CSRF nonce."""
        assert principal.key is not None
        key = self.key()
        expires = str(int(time.time()) + SESSION_TTL)
        nonce = secrets.token_urlsafe(16)
        return f"{principal.key}.{expires}.{nonce}.{_mac(key, 'session', principal.key, expires, nonce)}", nonce

    async def attach(self, request: Request) -> None:
        """The principal of a session cookie, for a request that carries no credentials of
        its own (Basic and SigV4 are the gate's). A bad, expired or ended session leaves the
        request anonymous and marked, so its cookie is cleared."""
        scope = request.scope
        token = request.cookies.get(SESSION_COOKIE)
        if token is None or PRINCIPAL_SCOPE in scope or "authorization" in request.headers:
            return
        identity = self.s.node.access.identity
        if not await ask(identity, identity.enabled):
            return  # access control is off: everyone is the open principal
        m = _TOKEN.fullmatch(token)
        key = self.key()
        if (
            m is None
            or not hmac.compare_digest(m[4], _mac(key, "session", m[1], m[2], m[3]))
            or int(m[2]) < time.time()
        ):
            scope[ENDED_SCOPE] = True
            return
        try:
            principal, _ = await ask(identity, identity.key_secret, m[1], key=m[1])
        except Unauthorized:  # the key was disabled, rotated or deleted
            scope[ENDED_SCOPE] = True
            return
        scope[PRINCIPAL_SCOPE] = principal
        scope[NONCE_SCOPE] = m[3]
        scope[SESSION_SCOPE] = True

    @staticmethod
    def set_session(response: Response, request: Request, value: str) -> None:
        response.set_cookie(
            SESSION_COOKIE,
            value,
            max_age=SESSION_TTL,
            path="/ui",
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )

    @staticmethod
    def clear_session(response: Response, request: Request) -> None:
        response.delete_cookie(
            SESSION_COOKIE, path="/ui", secure=request.url.scheme == "https", httponly=True, samesite="strict"
        )

    # ---- CSRF --------------------------------------------------------------------------
    def nonce(self, request: Request) -> str:
        """This request's CSRF nonce: its session's, its `pfs_csrf` cookie's, or a new one
        (sent as that cookie with the answer)."""
        scope = request.scope
        if NONCE_SCOPE not in scope:
            given = request.cookies.get(CSRF_COOKIE, "")
            if _NONCE.fullmatch(given):
                scope[NONCE_SCOPE] = given
            else:
                scope[NONCE_SCOPE] = scope[NEW_NONCE_SCOPE] = secrets.token_urlsafe(16)
        return str(scope[NONCE_SCOPE])

    def token(self, request: Request) -> str:
        """The CSRF token a form of this page carries."""
        principal: Principal | None = request.scope.get(PRINCIPAL_SCOPE)
        user = principal.user if principal is not None else None
        return _mac(self.key(), "csrf", self.nonce(request), user or "")

    def check(self, request: Request, given: str | None) -> None:
        """Forbidden unless the POST is same-site and carries this browser's token; nothing
        has been read or changed yet when it is refused."""
        if cross_site(request):
            raise Forbidden("refused: this form was posted from another site")
        self.nonce(request)
        if NEW_NONCE_SCOPE in request.scope or not given:
            raise Forbidden("refused: the form has no valid CSRF token (reload the page and try again)")
        if not hmac.compare_digest(given.encode("utf-8", "replace"), self.token(request).encode()):
            raise Forbidden("refused: the form has no valid CSRF token (reload the page and try again)")

    @staticmethod
    def finish(request: Request, response: Response) -> None:
        """Cookies of a page's answer: a new CSRF nonce, a shown notice gone, an ended
        session cleared."""
        scope = request.scope
        new = scope.get(NEW_NONCE_SCOPE)
        secure = request.url.scheme == "https"
        if new is not None:
            response.set_cookie(CSRF_COOKIE, new, path="/ui", secure=secure, httponly=True, samesite="strict")
        if NOTICE_COOKIE in request.cookies:
            response.delete_cookie(NOTICE_COOKIE, path="/ui", secure=secure, httponly=True, samesite="strict")
        if scope.get(ENDED_SCOPE):
            Sessions.clear_session(response, request)

    # ---- notices -----------------------------------------------------------------------
    @staticmethod
    def notice(request: Request) -> str:
        """The short notice an action left for the next page (shown once, as text)."""
        raw = request.cookies.get(NOTICE_COOKIE, "")
        return one_line(urllib.parse.unquote(raw[: MAX_NOTICE * 3]))[:MAX_NOTICE]

    @staticmethod
    def leave_notice(request: Request, response: Response, text: str) -> None:
        response.set_cookie(
            NOTICE_COOKIE,
            urllib.parse.quote(text[:MAX_NOTICE], safe=""),
            max_age=60,
            path="/ui",
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
