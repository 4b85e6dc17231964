"""The web UI's defences, through a real server: security headers, a session cookie
that is not the API token (shared by replicas, ended by sign-out, expiry and token
revocation), Secure cookies behind a trusted TLS proxy, and the API's reason limit."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request

from controller.settings import Settings
from controller.ui.session import SESSION_COOKIE, SIGNIN_COOKIE, is_https
from tests.serving import ADMIN_TOKEN, Server, running_server

TTL = 3  # seconds: the session lifetime in the expiry test


def sign_in(url: str, token: str, **headers: str) -> httpx.Response:
    """Sign in through the form as a browser does; the answer carries the cookies."""
    form = httpx.get(url + "/ui/signin", headers=headers, timeout=15)
    nonce = re.search(r'name="nonce" value="([^"]+)"', form.text)
    assert nonce is not None
    # By hand: a client's cookie jar keeps a Secure cookie from going back over the
    # plain http between this test and the server (a browser would be on https).
    cookie = f"{SIGNIN_COOKIE}={nonce.group(1)}"
    return httpx.post(
        url + "/ui/signin",
        data={"token": token, "nonce": nonce.group(1), "next": "/"},
        headers={**headers, "Cookie": cookie},
        timeout=15,
    )


def session_of(answer: httpx.Response) -> str:
    assert answer.status_code == 303, answer.text
    value = answer.cookies.get(SESSION_COOKIE)
    assert value
    return value


def page(url: str, session: str, path: str = "/ui/flags") -> httpx.Response:
    return httpx.get(url + path, cookies={SESSION_COOKIE: session}, timeout=15)


def signed_out(answer: httpx.Response) -> bool:
    return answer.status_code == 303 and answer.headers["location"].startswith("/ui/signin")


def eventually(check: Callable[[], bool], within: float) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {within}s")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"ROLLOUT_TRUST_PROXY_HEADERS": "true", "ROLLOUT_UI_SESSION_TTL": f"{TTL}s"}
    with running_server(tmp_path_factory.mktemp("ui-proxied"), extra_env=env) as s:
        yield s


def test_ui_pages_carry_a_content_security_policy_and_refuse_framing(server: Server) -> None:
    for path in ("/ui/signin", "/"):
        headers = httpx.get(server.url + path, timeout=15).headers
        csp = headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
    with server.client() as c:
        assert c.get("/api/v1/flags").headers["x-content-type-options"] == "nosniff"


def test_the_session_cookie_is_not_the_token_and_works_on_another_replica(
    server: Server, tmp_path: Path
) -> None:
    answer = sign_in(server.url, ADMIN_TOKEN)
    session = session_of(answer)
    set_cookie = " ".join(answer.headers.get_list("set-cookie"))
    assert ADMIN_TOKEN not in set_cookie and session != ADMIN_TOKEN
    assert "httponly" in set_cookie.lower() and "secure" not in set_cookie.lower()
    assert page(server.url, session).status_code == 200
    # The raw token as a cookie, as before, opens nothing.
    assert signed_out(page(server.url, ADMIN_TOKEN))
    with running_server(tmp_path, database_url=server.database_url) as replica:
        assert page(replica.url, session).status_code == 200


def test_sign_out_and_token_revocation_end_sessions(server: Server) -> None:
    with server.client() as c:
        made = c.post("/api/v1/tokens", json={"name": "ui-person", "role": "operator"}).json()
    first = session_of(sign_in(server.url, made["token"]))
    second = session_of(sign_in(server.url, made["token"]))
    flags = page(server.url, first)
    csrf = re.search(r'name="csrf" value="([^"]+)"', flags.text)
    assert csrf is not None
    out = httpx.post(
        server.url + "/ui/signout",
        data={"csrf": csrf.group(1)},
        cookies={SESSION_COOKIE: first},
        timeout=15,
    )
    assert out.status_code == 303
    assert signed_out(page(server.url, first))
    assert page(server.url, second).status_code == 200
    with server.client() as c:
        assert c.delete(f"/api/v1/tokens/{made['id']}").status_code in (200, 204)
    assert signed_out(page(server.url, second))


def test_a_session_expires(proxied: Server) -> None:
    session = session_of(sign_in(proxied.url, ADMIN_TOKEN))
    assert page(proxied.url, session).status_code == 200
    eventually(lambda: signed_out(page(proxied.url, session)), within=TTL + 15)


def test_cookies_are_secure_behind_a_trusted_tls_proxy(proxied: Server) -> None:
    behind = sign_in(proxied.url, ADMIN_TOKEN, **{"X-Forwarded-Proto": "https"})
    cookie = next(c for c in behind.headers.get_list("set-cookie") if SESSION_COOKIE in c)
    assert "secure" in cookie.lower()
    plain = sign_in(proxied.url, ADMIN_TOKEN)
    cookie = next(c for c in plain.headers.get_list("set-cookie") if SESSION_COOKIE in c)
    assert "secure" not in cookie.lower()


def _request(headers: dict[str, str], scheme: str = "http") -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    scope = {"type": "http", "scheme": scheme, "path": "/", "headers": raw, "server": ("h", 80)}
    return Request(scope)


def test_x_forwarded_proto_counts_only_when_proxies_are_trusted() -> None:
    forwarded = _request({"X-Forwarded-Proto": "https, http"})
    assert not is_https(forwarded, Settings(trust_proxy_headers=False))
    assert is_https(forwarded, Settings(trust_proxy_headers=True))
    assert is_https(_request({}, scheme="https"), Settings())
    assert not is_https(_request({"X-Forwarded-Proto": "http"}), Settings(trust_proxy_headers=True))


def test_a_ui_reason_longer_than_the_api_allows_is_refused(server: Server) -> None:
    with server.client() as c:
        body = {"type": "boolean", "variants": {"on": True, "off": False}, "default_variant": "off"}
        assert c.put("/api/v1/flags/ui-reason", json=body).status_code == 201
    session = session_of(sign_in(server.url, ADMIN_TOKEN))
    csrf = re.search(r'name="csrf" value="([^"]+)"', page(server.url, session).text)
    assert csrf is not None
    r = httpx.post(
        server.url + "/ui/flags/kill-switch",
        data={"flag": "ui-reason", "enabled": "0", "reason": "x" * 2001, "csrf": csrf.group(1)},
        cookies={SESSION_COOKIE: session},
        timeout=15,
    )
    assert r.status_code == 422
    assert "at most 2000" in r.text
    with server.client() as c:
        assert c.get("/api/v1/flags/ui-reason").json()["enabled"] is True
