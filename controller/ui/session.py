"""Signing in to the web UI, and keeping its forms from being posted by other sites.

Signing in with an API token opens a session: the cookie (HttpOnly, SameSite=Strict,
Secure over https) holds a random session id, never the token. The database keeps
only the SHA-256 of that id, with the hash of the token and an expiry
(``ROLLOUT_UI_SESSION_TTL``; ``controller.ui_sessions``), so every replica shares the
session, a stolen cookie stops working at expiry or sign-out, and a copy of the
database opens no session. Every UI request looks the session up and checks its token
again in the database, so revoking the token (on any replica) signs its sessions out
at the next page.

CSRF: each form carries ``HMAC-SHA256(key=session id, msg=purpose)``. Another site
can neither read the HttpOnly cookie nor compute the MAC, and because the MAC needs
no server-side secret it is the same on every replica and after a restart. The
sign-in form, which has no session yet, uses a double-submit cookie instead.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request, Response

from controller.auth import Permission, Principal, hash_token
from controller.runtime import Runtime, RuntimeDep
from controller.settings import Settings
from stages.durations import parse_duration

SESSION_COOKIE = "rollout_session"
SIGNIN_COOKIE = "rollout_signin"
CSRF_FIELD = "csrf"
_CSRF_PURPOSE = b"rollout-ui-csrf-v1"


class SignInRequired(Exception):
    """No session, or its token is unknown or revoked: go to the sign-in page."""


class UiForbidden(Exception):
    """Shown to the person as a 403 page with ``message``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def csrf_token(session_id: str) -> str:
    return hmac.new(session_id.encode(), _CSRF_PURPOSE, hashlib.sha256).hexdigest()


def new_signin_nonce() -> str:
    return secrets.token_urlsafe(24)


def is_https(request: Request, settings: Settings) -> bool:
    """Served over TLS, here or (when proxies are trusted) at the proxy in front."""
    if request.url.scheme == "https":
        return True
    if not settings.trust_proxy_headers:
        return False
    forwarded = request.headers.get("x-forwarded-proto", "")
    return forwarded.split(",")[0].strip().lower() == "https"


def _cookie_options(request: Request, settings: Settings) -> dict[str, object]:
    # Secure only over https: `rollout serve` on a laptop speaks plain http to 127.0.0.1,
    # where a Secure cookie would never come back.
    return {
        "httponly": True,
        "samesite": "strict",
        "path": "/",
        "secure": is_https(request, settings),
    }


def open_session(runtime: Runtime, token: str) -> str:
    """A new session for ``token`` (already authenticated); returns the cookie value."""
    ttl = parse_duration(runtime.settings.ui_session_ttl)
    return runtime.ui_sessions.open(hash_token(token), runtime.clock(), ttl)


def end_session(runtime: Runtime, session_id: str) -> None:
    runtime.ui_sessions.end(session_id)


def session_token_id(runtime: Runtime, session_id: str) -> str | None:
    """The token id behind a live UI session (for the rate limiter), or None."""
    owner = _session_owner(runtime, session_id, runtime.clock())
    return None if owner is None else owner.token_id


def _session_owner(runtime: Runtime, session_id: str, now: datetime) -> Principal | None:
    """Who holds this unexpired session, if its token is still live."""
    admin = runtime.settings.admin_token
    admin_hash = hash_token(admin.get_secret_value()) if admin is not None else None
    return runtime.ui_sessions.owner(session_id, now, admin_hash=admin_hash)


def set_session(response: Response, request: Request, settings: Settings, session_id: str) -> None:
    max_age = int(parse_duration(settings.ui_session_ttl).total_seconds())
    options = _cookie_options(request, settings)
    response.set_cookie(SESSION_COOKIE, session_id, max_age=max_age, **options)  # type: ignore[arg-type]
    response.delete_cookie(SIGNIN_COOKIE, path="/")


def clear_session(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/")


def set_signin_nonce(response: Response, request: Request, settings: Settings, nonce: str) -> None:
    options = _cookie_options(request, settings)
    response.set_cookie(SIGNIN_COOKIE, nonce, max_age=3600, **options)  # type: ignore[arg-type]


def check_signin_nonce(request: Request, submitted: str) -> None:
    expected = request.cookies.get(SIGNIN_COOKIE, "")
    if not expected or not hmac.compare_digest(expected, submitted):
        raise UiForbidden(
            "The sign-in form expired or came from another site. Reload the page and try again."
        )


def safe_next(target: str | None) -> str:
    """Only a path on this server: never an open redirect to another site."""
    if not target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


def session_principal(request: Request, runtime: RuntimeDep) -> Principal:
    session_id = request.cookies.get(SESSION_COOKIE)
    if not session_id:
        raise SignInRequired
    principal = _session_owner(runtime, session_id, runtime.clock())
    if principal is None:
        raise SignInRequired
    if not principal.can(Permission.READ):
        raise UiForbidden(
            f"The token for {principal.name} has role {principal.role}, which may evaluate "
            "flags but not read rollouts. Sign in with a viewer, operator or admin token."
        )
    request.state.ui_csrf = csrf_token(session_id)
    request.state.ui_session = session_id
    return principal


SessionUser = Annotated[Principal, Depends(session_principal)]


async def check_csrf(request: Request, user: SessionUser) -> Principal:
    """Every UI POST: the form's token must be the MAC of this session's token."""
    form = await request.form()
    submitted = form.get(CSRF_FIELD)
    expected: str = request.state.ui_csrf
    if not isinstance(submitted, str) or not hmac.compare_digest(submitted, expected):
        raise UiForbidden(
            "This form's security token is missing or does not match your session "
            "(it may be from before you signed in again). Reload the page and try again."
        )
    return user


FormUser = Annotated[Principal, Depends(check_csrf)]
