"""Bad input at the edge, through a real server: non-finite numbers in flags (on SQLite
and PostgreSQL), one unreadable stored flag, deeply nested and oversized bodies, and
flag keys that are not addressable in a URL."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy

from tests.databases import fresh_database
from tests.serving import ADMIN_TOKEN, Server, running_server

JSON_HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
BOOLEAN = '"type":"boolean","variants":{"on":true,"off":false},"default_variant":"off"'


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def backend_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp(f"hygiene-{request.param}")
    with (
        fresh_database(request.param, workdir) as url,
        running_server(workdir, database_url=url) as server,
    ):
        yield server


def _put_raw(server: Server, key: str, body: str) -> httpx.Response:
    # Python's json module writes NaN and Infinity as bare words, as a careless client does.
    return httpx.put(f"{server.url}/api/v1/flags/{key}", content=body, headers=JSON_HEADERS)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('"type":"number","variants":{"a":NaN},"default_variant":"a"', "variants.a"),
        ('"type":"number","variants":{"a":-Infinity},"default_variant":"a"', "variants.a"),
        (
            '"type":"object","variants":{"a":{"deep":[1,{"x":Infinity}]}},"default_variant":"a"',
            "variants.a.deep[1].x",
        ),
        (
            BOOLEAN + ',"rules":[{"when":[{"attribute":"n","op":"gt","values":[NaN]}],'
            '"variant":"on"}]',
            "rules[0].when[0].values[0]",
        ),
        (
            BOOLEAN + ',"rules":[{"when":[{"attribute":"n","op":"in","values":[1,{"v":NaN}]}],'
            '"variant":"on"}]',
            "rules[0].when[0].values[1].v",
        ),
    ],
)
def test_non_finite_numbers_in_a_flag_are_refused_naming_the_field(
    backend_server: Server, body: str, field: str
) -> None:
    r = _put_raw(backend_server, "non-finite", "{" + body + "}")
    assert r.status_code == 422, r.text
    assert field in {p["field"] for p in r.json()["problems"]}
    with backend_server.client() as c:
        assert c.get("/api/v1/flags/non-finite").status_code == 404


def _store_unreadable_flag(server: Server, key: str, definition: str) -> None:
    engine = sqlalchemy.create_engine(server.database_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                sqlalchemy.text(
                    "INSERT INTO flags (key, definition, version, created_at, updated_at)"
                    " VALUES (:key, :definition, 1, :at, :at)"
                ),
                {"key": key, "definition": definition, "at": "2025-01-01 00:00:00"},
            )
    finally:
        engine.dispose()


def test_one_unreadable_stored_flag_leaves_the_others_served(backend_server: Server) -> None:
    # PostgreSQL's JSON refuses NaN, so there the bad row is one of the wrong shape.
    nan = "sqlite" in backend_server.database_url
    bad = '{"type":"object","variants":{"a":{"x":NaN}},"default_variant":"a"}'
    _store_unreadable_flag(backend_server, "broken", bad if nan else '{"type":"nope"}')
    with backend_server.client() as c:
        # A change through the API reloads the snapshot, which now reads the bad row.
        assert _put_raw(backend_server, "healthy", "{" + BOOLEAN + "}").status_code == 201
        sdk = backend_server.token("sdk")
    with backend_server.client(token=sdk) as c:
        snapshot = c.get("/api/v1/snapshot")
        assert snapshot.status_code == 200
        assert "healthy" in snapshot.json()["flags"]
        assert "broken" not in snapshot.json()["flags"]
        bulk = c.post("/ofrep/v1/evaluate/flags", json={"context": {"targetingKey": "u"}})
        assert bulk.status_code == 200
        assert [f["key"] for f in bulk.json()["flags"]] == ["healthy"]
        single = c.post("/ofrep/v1/evaluate/flags/broken", json={"context": {}})
        assert single.status_code == 400
        assert single.json()["errorCode"] == "PARSE_ERROR"
        native = c.get("/api/v1/evaluate/broken", params={"targetingKey": "u"})
        assert native.status_code == 200
        assert (native.json()["reason"], native.json()["value"]) == ("ERROR", None)
    assert "flag 'broken' left out of the snapshot" in backend_server.log.read_text()
    with backend_server.client() as c:
        # The people-facing list shows the bad row, marked, instead of failing whole.
        listed = c.get("/api/v1/flags")
        assert listed.status_code == 200
        broken = next(f for f in listed.json()["flags"] if f["key"] == "broken")
        if nan:
            assert broken["variants"] == {"a": {"x": "nan"}}
            assert broken["unreadable"].startswith("stored value not finite at variants.a.x")
        assert c.get("/api/v1/flags/broken").status_code == 200


@pytest.mark.parametrize(
    "path", ["/api/v1/evaluate/f", "/ofrep/v1/evaluate/flags/f", "/ofrep/v1/evaluate/flags"]
)
def test_deeply_nested_evaluation_body_is_a_400(server: Server, path: str) -> None:
    deep = '{"context":{"targetingKey":"u","a":' + "[" * 100_000 + "]" * 100_000 + "}}"
    sdk = server.token("sdk")
    r = httpx.post(
        server.url + path,
        content=deep,
        headers={"Authorization": f"Bearer {sdk}", "Content-Type": "application/json"},
    )
    assert r.status_code == 400, r.text
    assert "nested" in r.text


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/api/v1/evaluate/f"), ("PUT", "/api/v1/flags/f"), ("POST", "/api/v1/plans")],
)
def test_oversized_chunked_body_is_a_413(server: Server, method: str, path: str) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: httpx sends it chunked
        for _ in range(1_200):
            yield b" " * 1024

    r = httpx.request(method, server.url + path, content=chunks(), headers=JSON_HEADERS)
    assert r.status_code == 413, r.text
    assert r.json()["problems"][0]["field"] == "body"


def _raw_put(server: Server, target: str, body: bytes) -> tuple[int, bytes]:
    """A request with its path exactly as written: HTTP clients resolve dot segments."""
    port = int(server.url.rsplit(":", 1)[1])
    head = (
        f"PUT {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(head.encode() + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize("key", [".", ".."])
def test_dot_flag_keys_are_refused(server: Server, key: str) -> None:
    with server.client() as c:
        r = c.put(
            "/api/v1/flags/dots",
            json={"key": key, "type": "boolean", "variants": {"on": True}, "default_variant": "on"},
        )
        assert r.status_code == 422
        assert "key" in {p["field"] for p in r.json()["problems"]}
    encoded = key.replace(".", "%2E")
    status, body = _raw_put(server, f"/api/v1/flags/{encoded}", b"{" + BOOLEAN.encode() + b"}")
    assert status == 422, body
    assert b'"field":"key"' in body
