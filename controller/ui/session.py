"""Signing in to the web UI, and keeping its forms from being posted by other sites.

The session cookie holds the API token itself (HttpOnly, SameSite=Strict), and every
UI request authenticates it again, so revoking a token signs its sessions out at once
and there is no server-side session table to keep in step between replicas.

CSRF: each form carries ``HMAC-SHA256(key=session token, msg=purpose)``. Another site
can neither read the HttpOnly cookie nor compute the MAC, and because the MAC needs
no server-side secret it is the same on every replica and after a restart. The
sign-in form, which has no session yet, uses a double-submit cookie instead.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request, Response

from controller.auth import Permission, Principal
from controller.errors import Unauthorized
from controller.runtime import RuntimeDep

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


def csrf_token(session_token: str) -> str:
    return hmac.new(session_token.encode(), _CSRF_PURPOSE, hashlib.sha256).hexdigest()


def new_signin_nonce() -> str:
    return secrets.token_urlsafe(24)


def _cookie_options(request: Request) -> dict[str, object]:
    # Secure only over https: `rollout serve` on a laptop speaks plain http to 127.0.0.1,
    # where a Secure cookie would never come back.
    return {
        "httponly": True,
        "samesite": "strict",
        "path": "/",
        "secure": request.url.scheme == "https",
    }


def set_session(response: Response, request: Request, token: str) -> None:
    response.set_cookie(SESSION_COOKIE, token, **_cookie_options(request))  # type: ignore[arg-type]
    response.delete_cookie(SIGNIN_COOKIE, path="/")


def clear_session(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/")


def set_signin_nonce(response: Response, request: Request, nonce: str) -> None:
    options = _cookie_options(request)
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
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise SignInRequired
    try:
        principal = runtime.tokens.authenticate(f"Bearer {token}")
    except Unauthorized:
        raise SignInRequired from None
    if not principal.can(Permission.READ):
        raise UiForbidden(
            f"The token for {principal.name} has role {principal.role}, which may evaluate "
            "flags but not read rollouts. Sign in with a viewer, operator or admin token."
        )
    request.state.ui_csrf = csrf_token(token)
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
