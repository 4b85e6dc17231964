"""Who may call what: every operation in the live ``/openapi.json``, and every route
outside it, called on a real server with no token, a bad token and each role's token.

The two tables below are the reviewed matrix (docs/security.md "Role matrix" prints
them). A route that appears in the app but not in a table fails the test, so a new
route cannot ship unclassified; a table entry for a route that is gone fails too.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from pydantic import SecretStr
from starlette.routing import BaseRoute, Mount

from controller.http.app import create_app
from controller.settings import Settings
from controller.storage.store import Store
from controller.ui.session import SESSION_COOKIE, SIGNIN_COOKIE, csrf_token
from tests.serving import Server, plan_yaml, running_server
from tests.state_fingerprint import fingerprint
from tests.ui_sessions import ui_session

PUBLIC = "public"
# Each role may do everything the one before it may.
ROLES = ("sdk", "viewer", "operator", "admin")

# The minimum role of every operation in /openapi.json.
API_MATRIX: dict[tuple[str, str], str] = {
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/metrics"): "viewer",  # public only with ROLLOUT_METRICS_PUBLIC=true
    ("GET", "/api/v1/evaluate/{key}"): "sdk",
    ("POST", "/api/v1/evaluate/{key}"): "sdk",
    ("GET", "/api/v1/snapshot"): "sdk",
    ("POST", "/ofrep/v1/evaluate/flags/{key}"): "sdk",
    ("POST", "/ofrep/v1/evaluate/flags"): "sdk",
    ("POST", "/api/v1/evaluations/report"): "sdk",
    ("GET", "/api/v1/flags"): "viewer",
    ("GET", "/api/v1/flags/{key}"): "viewer",
    ("GET", "/api/v1/flags/{key}/impressions"): "viewer",
    ("PUT", "/api/v1/flags/{key}"): "operator",
    ("POST", "/api/v1/flags/{key}/enable"): "operator",
    ("POST", "/api/v1/flags/{key}/disable"): "operator",
    ("DELETE", "/api/v1/flags/{key}"): "admin",
    ("POST", "/api/v1/plans"): "operator",
    # Plan history and diff read and store nothing.
    ("POST", "/api/v1/plans/diff"): "viewer",
    ("GET", "/api/v1/rollouts/{name}/plans"): "viewer",
    ("GET", "/api/v1/rollouts/{name}/plans/{revision}"): "viewer",
    ("GET", "/api/v1/rollouts"): "viewer",
    ("GET", "/api/v1/rollouts/{name}"): "viewer",
    ("POST", "/api/v1/rollouts/{name}/actions/{action}"): "operator",
    ("DELETE", "/api/v1/rollouts/{name}"): "admin",
    ("GET", "/api/v1/rollouts/{name}/gates"): "viewer",
    # Reads Prometheus now and stores nothing: a read.
    ("POST", "/api/v1/rollouts/{name}/gates/test"): "viewer",
    ("POST", "/api/v1/gates/test"): "viewer",
    ("GET", "/api/v1/audit"): "viewer",
    ("GET", "/api/v1/audit/verify"): "viewer",
    ("GET", "/api/v1/webhooks/deliveries"): "viewer",
    ("POST", "/api/v1/webhooks/deliveries/{delivery}/retry"): "admin",
    ("GET", "/api/v1/tokens"): "admin",
    ("POST", "/api/v1/tokens"): "admin",
    ("DELETE", "/api/v1/tokens/{token_id}"): "admin",
}

# Routes outside /openapi.json. The web UI authenticates a session cookie (the token),
# not the Authorization header; signing in is where the token is checked.
OTHER_MATRIX: dict[tuple[str, str], str] = {
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    ("GET", "/docs/oauth2-redirect"): PUBLIC,
    ("GET", "/redoc"): PUBLIC,
    ("GET", "/docs/static"): PUBLIC,
    ("GET", "/ui/static"): PUBLIC,
    ("GET", "/ui/signin"): PUBLIC,
    ("POST", "/ui/signin"): "viewer",
    ("POST", "/ui/signout"): "viewer",
    ("GET", "/"): "viewer",
    ("GET", "/ui/live/overview"): "viewer",
    ("GET", "/ui/rollouts/{name}"): "viewer",
    ("GET", "/ui/live/rollouts/{name}"): "viewer",
    ("GET", "/ui/flags"): "viewer",
    ("GET", "/ui/live/flags"): "viewer",
    ("POST", "/ui/rollouts/{name}/actions/{action}"): "operator",
    ("POST", "/ui/flags/kill-switch"): "operator",
}

FLAG_BODY = {"type": "boolean", "variants": {"off": False, "on": True}, "default_variant": "off"}
_unique = itertools.count()


@dataclass
class Call:
    """One request, and what a caller allowed to make it gets back."""

    method: str
    path: str
    json: Any = None
    params: dict[str, str] | None = None
    form: dict[str, str] | None = None
    ok: tuple[int, ...] = (200,)
    headers: dict[str, str] = field(default_factory=dict)
    # The allowed call changes stored state: shows that the fingerprint would have
    # seen a refused call that changed something.
    changes: bool = False


@dataclass
class World:
    """Real objects for the calls to act on, made with the bootstrap admin."""

    server: Server
    admin: httpx.Client
    store: Store
    flag: str
    rollout: str

    def name(self, prefix: str) -> str:
        return f"matrix-{prefix}-{next(_unique)}"

    def new_flag(self) -> str:
        key = self.name("flag")
        r = self.admin.put(f"/api/v1/flags/{key}", json=FLAG_BODY)
        assert r.status_code == 201, r.text
        return key

    def new_rollout(self) -> str:
        name = self.name("rollout")
        r = self.admin.post("/api/v1/plans", json={"yaml": plan_yaml(name)})
        assert r.status_code == 201, r.text
        return name

    def new_token(self) -> str:
        r = self.admin.post("/api/v1/tokens", json={"name": self.name("token"), "role": "sdk"})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def rollout_version(self, name: str) -> str:
        return str(self.admin.get(f"/api/v1/rollouts/{name}").json()["version"])


CONTEXT = {"context": {"targetingKey": "user-1", "region": "us-west-1"}}
REASON = {"reason": "role matrix"}
GATE = {"name": "up", "query": "up", "hold_above": 1}

# How to call each operation so that it acts on real objects: a fresh one where the
# call would consume it, so the allowed callers each succeed and a refused caller
# aims at something a missing check would really change.
PROBES: dict[tuple[str, str], Callable[[World], Call]] = {
    ("GET", "/healthz"): lambda w: Call("GET", "/healthz"),
    # No Prometheus in this test: not ready, but answered.
    ("GET", "/readyz"): lambda w: Call("GET", "/readyz", ok=(200, 503)),
    ("GET", "/metrics"): lambda w: Call("GET", "/metrics"),
    ("GET", "/api/v1/evaluate/{key}"): lambda w: Call(
        "GET", f"/api/v1/evaluate/{w.flag}", params={"targetingKey": "user-1"}
    ),
    ("POST", "/api/v1/evaluate/{key}"): lambda w: Call(
        "POST", f"/api/v1/evaluate/{w.flag}", json=CONTEXT
    ),
    ("GET", "/api/v1/snapshot"): lambda w: Call("GET", "/api/v1/snapshot"),
    ("POST", "/ofrep/v1/evaluate/flags/{key}"): lambda w: Call(
        "POST", f"/ofrep/v1/evaluate/flags/{w.flag}", json=CONTEXT
    ),
    ("POST", "/ofrep/v1/evaluate/flags"): lambda w: Call(
        "POST", "/ofrep/v1/evaluate/flags", json=CONTEXT
    ),
    ("POST", "/api/v1/evaluations/report"): lambda w: Call(
        "POST",
        "/api/v1/evaluations/report",
        json={"counts": [{"flag": w.flag, "variant": "on", "count": 3}]},
        ok=(202,),
    ),
    ("GET", "/api/v1/flags"): lambda w: Call("GET", "/api/v1/flags"),
    ("GET", "/api/v1/flags/{key}"): lambda w: Call("GET", f"/api/v1/flags/{w.flag}"),
    ("GET", "/api/v1/flags/{key}/impressions"): lambda w: Call(
        "GET", f"/api/v1/flags/{w.flag}/impressions"
    ),
    ("PUT", "/api/v1/flags/{key}"): lambda w: Call(
        "PUT", f"/api/v1/flags/{w.name('put')}", json=FLAG_BODY, ok=(201,), changes=True
    ),
    ("POST", "/api/v1/flags/{key}/enable"): lambda w: Call(
        "POST", f"/api/v1/flags/{w.new_flag()}/enable", json=REASON, changes=True
    ),
    ("POST", "/api/v1/flags/{key}/disable"): lambda w: Call(
        "POST", f"/api/v1/flags/{w.new_flag()}/disable", json=REASON, changes=True
    ),
    ("DELETE", "/api/v1/flags/{key}"): lambda w: Call(
        "DELETE", f"/api/v1/flags/{w.new_flag()}", ok=(204,), changes=True
    ),
    ("POST", "/api/v1/plans"): lambda w: Call(
        "POST", "/api/v1/plans", json={"yaml": plan_yaml(w.name("plan"))}, ok=(201,), changes=True
    ),
    ("POST", "/api/v1/plans/diff"): lambda w: Call(
        "POST", "/api/v1/plans/diff", json={"yaml": plan_yaml(w.rollout)}
    ),
    ("GET", "/api/v1/rollouts/{name}/plans"): lambda w: Call(
        "GET", f"/api/v1/rollouts/{w.rollout}/plans"
    ),
    ("GET", "/api/v1/rollouts/{name}/plans/{revision}"): lambda w: Call(
        "GET", f"/api/v1/rollouts/{w.rollout}/plans/1"
    ),
    ("GET", "/api/v1/rollouts"): lambda w: Call("GET", "/api/v1/rollouts"),
    ("GET", "/api/v1/rollouts/{name}"): lambda w: Call("GET", f"/api/v1/rollouts/{w.rollout}"),
    ("POST", "/api/v1/rollouts/{name}/actions/{action}"): lambda w: Call(
        "POST", f"/api/v1/rollouts/{w.new_rollout()}/actions/start", json=REASON, changes=True
    ),
    ("DELETE", "/api/v1/rollouts/{name}"): lambda w: Call(
        "DELETE", f"/api/v1/rollouts/{w.new_rollout()}", ok=(204,), changes=True
    ),
    ("GET", "/api/v1/rollouts/{name}/gates"): lambda w: Call(
        "GET", f"/api/v1/rollouts/{w.rollout}/gates"
    ),
    ("POST", "/api/v1/rollouts/{name}/gates/test"): lambda w: Call(
        "POST", f"/api/v1/rollouts/{w.rollout}/gates/test", json={}
    ),
    ("POST", "/api/v1/gates/test"): lambda w: Call(
        "POST", "/api/v1/gates/test", json={"gate": GATE}
    ),
    ("GET", "/api/v1/audit"): lambda w: Call("GET", "/api/v1/audit"),
    ("GET", "/api/v1/audit/verify"): lambda w: Call("GET", "/api/v1/audit/verify"),
    ("GET", "/api/v1/webhooks/deliveries"): lambda w: Call("GET", "/api/v1/webhooks/deliveries"),
    # No webhook is configured, so there is no delivery: the handler's 404 shows that
    # the caller got past authentication and authorization.
    ("POST", "/api/v1/webhooks/deliveries/{delivery}/retry"): lambda w: Call(
        "POST", "/api/v1/webhooks/deliveries/424242/retry", ok=(404,)
    ),
    ("GET", "/api/v1/tokens"): lambda w: Call("GET", "/api/v1/tokens"),
    ("POST", "/api/v1/tokens"): lambda w: Call(
        "POST",
        "/api/v1/tokens",
        json={"name": w.name("new"), "role": "viewer"},
        ok=(201,),
        changes=True,
    ),
    ("DELETE", "/api/v1/tokens/{token_id}"): lambda w: Call(
        "DELETE", f"/api/v1/tokens/{w.new_token()}", changes=True
    ),
}


def _ui_action(w: World) -> Call:
    name = w.new_rollout()
    form = {"reason": "role matrix", "version": w.rollout_version(name)}
    return Call("POST", f"/ui/rollouts/{name}/actions/start", form=form, ok=(303,), changes=True)


OTHER_PROBES: dict[tuple[str, str], Callable[[World], Call]] = {
    ("GET", "/openapi.json"): lambda w: Call("GET", "/openapi.json"),
    ("GET", "/docs"): lambda w: Call("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"): lambda w: Call("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"): lambda w: Call("GET", "/redoc"),
    ("GET", "/docs/static"): lambda w: Call("GET", "/docs/static/swagger-ui-bundle.js"),
    ("GET", "/ui/static"): lambda w: Call("GET", "/ui/static/ui.css"),
    ("GET", "/ui/signin"): lambda w: Call("GET", "/ui/signin"),
    # The form's own nonce is a double-submit cookie; the token is the form field.
    ("POST", "/ui/signin"): lambda w: Call(
        "POST",
        "/ui/signin",
        form={"nonce": "n0nce", "next": "/"},
        headers={"Cookie": f"{SIGNIN_COOKIE}=n0nce"},
        ok=(303,),
    ),
    ("POST", "/ui/signout"): lambda w: Call("POST", "/ui/signout", form={}, ok=(303,)),
    ("GET", "/"): lambda w: Call("GET", "/"),
    ("GET", "/ui/live/overview"): lambda w: Call("GET", "/ui/live/overview"),
    ("GET", "/ui/rollouts/{name}"): lambda w: Call("GET", f"/ui/rollouts/{w.rollout}"),
    ("GET", "/ui/live/rollouts/{name}"): lambda w: Call("GET", f"/ui/live/rollouts/{w.rollout}"),
    ("GET", "/ui/flags"): lambda w: Call(
        "GET", "/ui/flags", params={"flag": w.flag, "key": "user-1"}
    ),
    ("GET", "/ui/live/flags"): lambda w: Call("GET", "/ui/live/flags"),
    ("POST", "/ui/rollouts/{name}/actions/{action}"): _ui_action,
    ("POST", "/ui/flags/kill-switch"): lambda w: Call(
        "POST",
        "/ui/flags/kill-switch",
        form={"flag": w.new_flag(), "enabled": "0", "reason": "role matrix"},
        ok=(303,),
        changes=True,
    ),
}

CALLERS = ("no token", "bad token", *ROLES)
BAD_TOKEN = "rt_" + "x" * 43


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("matrix")) as s:
        yield s


@pytest.fixture(scope="module")
def secrets(server: Server) -> dict[str, str | None]:
    made: dict[str, str | None] = {role: server.token(role, f"matrix-{role}") for role in ROLES}
    return {"no token": None, "bad token": BAD_TOKEN, **made}


@pytest.fixture(scope="module")
def world(server: Server) -> Iterator[World]:
    store = Store(server.database_url)
    with server.client() as admin:
        w = World(server, admin, store, flag="", rollout="")
        w.flag = w.new_flag()
        w.rollout = w.new_rollout()
        r = admin.post(f"/api/v1/rollouts/{w.rollout}/actions/start", json=REASON)
        assert r.status_code == 200, r.text
        yield w
    store.dispose()


def rank(role: str) -> int:
    return ROLES.index(role)


def openapi_operations(server: Server) -> set[tuple[str, str]]:
    with server.client(None) as anonymous:
        spec = anonymous.get("/openapi.json").json()
    return {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}


def _flatten(routes: Sequence[BaseRoute]) -> Iterator[BaseRoute]:
    # FastAPI >= 0.16x keeps an included router as one entry that wraps it (the app
    # includes its routers without a prefix, so the inner paths are the full paths).
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _flatten(inner.routes)
        else:
            yield route


def routes_outside_openapi(tmp_path: Path) -> set[tuple[str, str]]:
    """Read from the app itself: the routes FastAPI leaves out of the schema."""
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'routes.db'}",
        admin_token=SecretStr("unused"),
        scheduler=False,
    )
    found: set[tuple[str, str]] = set()
    for route in _flatten(create_app(settings).routes):
        if isinstance(route, Mount):
            found.add(("GET", route.path))
        elif isinstance(route, APIRoute) and route.include_in_schema:
            continue
        else:
            methods = getattr(route, "methods", None) or {"GET"}
            path = str(getattr(route, "path", ""))
            found |= {(m, path) for m in methods if m != "HEAD"}
    return found


def send(server: Server, call: Call, secret: str | None, *, ui: bool) -> httpx.Response:
    headers = dict(call.headers)
    data = dict(call.form) if call.form is not None else None
    if ui:
        if call.path == "/ui/signin" and call.method == "POST":
            assert data is not None
            data["token"] = secret or ""
        elif secret is not None:
            cookies = [c for c in (headers.pop("Cookie", ""),) if c]
            session_id = ui_session(server.database_url, secret)
            headers["Cookie"] = "; ".join([*cookies, f"{SESSION_COOKIE}={session_id}"])
            if data is not None:
                data["csrf"] = csrf_token(session_id)
    elif secret is not None:
        headers["Authorization"] = f"Bearer {secret}"
    with httpx.Client(base_url=server.url, timeout=15) as client:
        return client.request(
            call.method, call.path, params=call.params, json=call.json, data=data, headers=headers
        )


def is_signin_redirect(r: httpx.Response) -> bool:
    return r.status_code == 303 and r.headers["location"].startswith("/ui/signin?next=")


# -- the tables cover exactly what the server has ------------------------------------


def test_every_openapi_operation_is_classified(server: Server) -> None:
    live = openapi_operations(server)
    assert sorted(live - API_MATRIX.keys()) == [], "classify these in API_MATRIX"
    assert sorted(API_MATRIX.keys() - live) == [], "these are gone: remove them"
    assert API_MATRIX.keys() == PROBES.keys()


def test_the_document_declares_the_bearer_token_where_the_matrix_needs_one(
    server: Server,
) -> None:
    with server.client(None) as anonymous:
        spec = anonymous.get("/openapi.json").json()
    scheme = spec["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    assert spec["security"] == [{"bearer": []}]
    declared_public = {
        (method.upper(), path)
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
        if op.get("security") == []
    }
    # The server runs without ROLLOUT_METRICS_PUBLIC, so exactly the probes are public.
    assert declared_public == {op for op, role in API_MATRIX.items() if role == PUBLIC}


def test_every_route_outside_openapi_is_classified(tmp_path: Path) -> None:
    live = routes_outside_openapi(tmp_path)
    assert sorted(live - OTHER_MATRIX.keys()) == [], "classify these in OTHER_MATRIX"
    assert sorted(OTHER_MATRIX.keys() - live) == [], "these are gone: remove them"
    assert OTHER_MATRIX.keys() == OTHER_PROBES.keys()


# -- each caller gets what its role allows, and a refusal changes nothing -------------


def check(
    world: World,
    secrets: dict[str, str | None],
    probe: Callable[[World], Call],
    minimum: str,
    *,
    ui: bool,
) -> None:
    for caller in CALLERS:
        call = probe(world)  # fresh objects, made before the state is read
        before = fingerprint(world.store)
        r = send(world.server, call, secrets[caller], ui=ui)
        what = f"{call.method} {call.path} as {caller}: {r.status_code} {r.text[:300]}"
        allowed = minimum == PUBLIC or (caller in ROLES and rank(caller) >= rank(minimum))
        if allowed:
            assert r.status_code in call.ok, what
            assert not is_signin_redirect(r), what
            if call.changes:
                assert fingerprint(world.store) != before, f"no change seen: {what}"
            continue
        if caller not in ROLES:
            if ui:
                assert r.status_code == 401 or is_signin_redirect(r), what
            else:
                assert r.status_code == 401, what
                assert r.headers["content-type"].startswith("application/json"), what
                assert r.json()["error"] == "unauthorized", what
        elif ui and call.path == "/ui/signin":
            # Signing in is authentication itself: a token of a role without the UI is
            # refused like an unknown one, and no session cookie is set.
            assert r.status_code == 401, what
            assert SESSION_COOKIE not in r.headers.get("set-cookie", ""), what
        else:
            assert r.status_code == 403, what
            if not ui:
                assert r.headers["content-type"].startswith("application/json"), what
                assert r.json()["error"] == "forbidden", what
        assert fingerprint(world.store) == before, f"a refused call changed state: {what}"


@pytest.mark.parametrize(("method", "path"), sorted(API_MATRIX), ids=lambda part: str(part))
def test_api_operation_roles(
    world: World, secrets: dict[str, str | None], method: str, path: str
) -> None:
    check(world, secrets, PROBES[(method, path)], API_MATRIX[(method, path)], ui=False)


WITH_BODY = sorted(
    op for op, minimum in API_MATRIX.items() if op[0] in {"POST", "PUT"} and minimum != PUBLIC
)


@pytest.mark.parametrize(("method", "path"), WITH_BODY, ids=lambda part: str(part))
def test_authentication_comes_before_the_body(
    world: World, secrets: dict[str, str | None], method: str, path: str
) -> None:
    """A caller without a valid token learns nothing from a broken body (FastAPI reads
    it before any dependency runs): a 401, not a 400 or 422 about the body."""
    call = PROBES[(method, path)](world)
    for caller, body in itertools.product(("no token", "bad token"), (b'{"broken', b"\xff{")):
        secret = secrets[caller]
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            headers["Authorization"] = f"Bearer {secret}"
        before = fingerprint(world.store)
        with httpx.Client(base_url=world.server.url, timeout=15) as client:
            r = client.request(method, call.path, content=body, headers=headers)
        assert r.status_code == 401, f"{method} {call.path} as {caller}, {body!r}: {r.text}"
        assert r.json()["error"] == "unauthorized"
        assert fingerprint(world.store) == before


@pytest.mark.parametrize(("method", "path"), WITH_BODY, ids=lambda part: str(part))
def test_the_role_comes_before_the_body(
    world: World, secrets: dict[str, str | None], method: str, path: str
) -> None:
    """Every role below the route's minimum gets the 403 it would get with a good body,
    not a 422 describing the body; the others get past the role check (to the body's
    own error, or, for a route that reads no body, to its answer)."""
    call = PROBES[(method, path)](world)
    minimum = rank(API_MATRIX[(method, path)])
    for caller in ROLES:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {secrets[caller]}"}
        before = fingerprint(world.store)
        with httpx.Client(base_url=world.server.url, timeout=15) as client:
            r = client.request(method, call.path, content=b'{"broken', headers=headers)
        refused = rank(caller) < minimum
        assert (r.status_code == 403) is refused, f"{method} {call.path} as {caller}: {r.text}"
        assert r.status_code < 500 and r.status_code != 401, r.text
        assert fingerprint(world.store) == before


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/api/v1/no-such-thing"), ("PATCH", "/api/v1/flags/x")]
)
def test_no_token_learns_no_routes(server: Server, method: str, path: str) -> None:
    with server.client(None) as anonymous:
        assert anonymous.request(method, path).status_code == 401
    with server.client() as admin:
        assert admin.request(method, path).status_code in (404, 405)


@pytest.mark.parametrize(("method", "path"), sorted(OTHER_MATRIX), ids=lambda part: str(part))
def test_route_outside_openapi_roles(
    world: World, secrets: dict[str, str | None], method: str, path: str
) -> None:
    check(world, secrets, OTHER_PROBES[(method, path)], OTHER_MATRIX[(method, path)], ui=True)
