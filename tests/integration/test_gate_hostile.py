"""``PrometheusGates`` against Prometheus peers that misbehave: real loopback sockets.

What an operator notices: a slow, silent, huge or malformed answer is an ``error``
reading with a clear text, within the gate timeout, at bounded memory; never ``ok``,
never a hang. Credentials are sent as configured and never shown.
"""

from __future__ import annotations

import json
import threading
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from controller.gates.prometheus import PrometheusAuth, PrometheusGates
from controller.http.app import prometheus_gates
from controller.settings import Settings, explain_settings_error
from stages.plan import Gate
from stages.state import Outcome
from tests.hostile import (
    Connection,
    HostilePeer,
    hang,
    http_response,
    huge,
    prometheus_answer,
    prometheus_json,
    respond,
    slam,
    trickle,
)
from tests.integration.test_deadline_http import free_port

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
VARIABLES = {"rollout": "r", "flag": "f", "stage": "canary", "step": "1", "percent": "5"}
MIB = 1 << 20


def gate(**fields: Any) -> Gate:
    return Gate(name="errors", query='sum(x{rollout="${rollout}"})', rollback_above=0.01, **fields)


def read(url: str, timeout: float = 5.0, **kw: Any) -> Any:
    with PrometheusGates(url, timeout_seconds=timeout, **kw) as gates:
        return gates.read(gate(), VARIABLES, NOW)


def answer(payload: object, status: str = "200 OK") -> bytes:
    return http_response(json.dumps(payload).encode(), status=status)


def vector(*values: object) -> bytes:
    return answer(
        {
            "status": "success",
            "data": {
                "resultType": "vector",
                "result": [{"metric": {}, "value": v} for v in values],
            },
        }
    )


# --- slow, silent, huge ------------------------------------------------------------------


def test_a_trickling_prometheus_is_a_timeout_error_at_the_gate_timeout() -> None:
    with HostilePeer(trickle(prometheus_answer(0.5), every=2.0)) as peer:
        started = time.monotonic()
        reading = read(peer.url, timeout=3.0)
        elapsed = time.monotonic() - started
    assert reading.outcome is Outcome.ERROR
    assert reading.error == "timeout after 3s"
    assert 2.9 <= elapsed < 8, elapsed  # one byte every 2 s would take minutes


def test_a_prometheus_that_never_answers_is_a_timeout_error() -> None:
    with HostilePeer(hang()) as peer:
        reading = read(peer.url, timeout=1.0)
    assert (reading.outcome, reading.error) == (Outcome.ERROR, "timeout after 1s")
    assert reading.duration_ms < 5000


def test_a_50_mb_answer_is_an_error_and_memory_stays_bounded() -> None:
    with HostilePeer(huge(50 * MIB)) as peer:
        tracemalloc.start()
        try:
            reading = read(peer.url, max_answer_bytes=4 * MIB)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert reading.outcome is Outcome.ERROR
    assert (
        reading.error == f"answer larger than 4 MiB from {peer.url} (ROLLOUT_GATE_MAX_ANSWER_BYTES)"
    )
    assert peak < 10 * MIB, peak


def test_the_query_goes_as_a_form_with_prometheus_own_timeout() -> None:
    with HostilePeer(respond(prometheus_answer(0.002))) as peer:
        reading = read(peer.url, timeout=2.5)
    assert reading.outcome is Outcome.OK, reading
    request = peer.requests[0]
    assert (request.method, request.path) == ("POST", "/api/v1/query")
    assert request.params == {"query": 'sum(x{rollout="r"})', "timeout": "2.500"}


# --- the check deadline ------------------------------------------------------------------


def test_a_read_never_runs_past_its_deadline() -> None:
    # Gate timeout 10 s, but the caller's check has 1 s left: the read ends at 1 s.
    slow = Gate(name="g", query="q", baseline="b", samples="s", rollback_above=1)
    with HostilePeer(hang()) as peer, PrometheusGates(peer.url, timeout_seconds=10) as gates:
        started = time.monotonic()
        reading = gates.read(slow, VARIABLES, NOW, deadline=time.monotonic() + 1.0)
        elapsed = time.monotonic() - started
    assert (reading.outcome, reading.error) == (Outcome.ERROR, "check deadline exceeded")
    assert elapsed < 5, elapsed


def test_queries_after_the_first_share_the_deadline() -> None:
    # Each query answers after 0.6 s: the main one fits in the deadline, the baseline not.
    def slow_answer(conn: Connection) -> None:
        if conn.wait(0.6):
            conn.send(prometheus_answer(0.5))

    relative = Gate(name="g", query="q", baseline="b", rollback_above=1)
    with HostilePeer(slow_answer) as peer, PrometheusGates(peer.url, timeout_seconds=5) as gates:
        reading = gates.read(relative, VARIABLES, NOW, deadline=time.monotonic() + 1.0)
    assert reading.outcome is Outcome.ERROR
    assert reading.error == "baseline: check deadline exceeded"
    assert reading.value == 0.5


def test_a_read_started_past_its_deadline_asks_nothing() -> None:
    with HostilePeer(respond(prometheus_answer(0.5))) as peer:
        with PrometheusGates(peer.url) as gates:
            reading = gates.read(gate(), VARIABLES, NOW, deadline=time.monotonic() - 1)
        assert peer.requests == []
    assert (reading.outcome, reading.error) == (Outcome.ERROR, "check deadline exceeded")


def test_a_hanging_read_does_not_hold_up_another_on_the_same_client() -> None:
    # "Test a gate now" and the scheduler share one PrometheusGates: no lock between them.
    def by_query(conn: Connection) -> None:
        if conn.request.params.get("query") == "slow":
            conn.stopping.wait()
        else:
            conn.send(prometheus_answer(0.0))

    with HostilePeer(by_query) as peer, PrometheusGates(peer.url, timeout_seconds=8) as gates:
        stuck = threading.Thread(
            target=gates.read,
            args=(Gate(name="s", query="slow", rollback_above=1), VARIABLES, NOW),
            daemon=True,
        )
        stuck.start()
        deadline = time.monotonic() + 5
        while not peer.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.monotonic()
        fast = gates.read(Gate(name="f", query="fast", rollback_above=1), VARIABLES, NOW)
        assert fast.outcome is Outcome.OK, fast
        assert time.monotonic() - started < 4
        assert stuck.is_alive()
    stuck.join(timeout=10)


# --- answers of the wrong shape ------------------------------------------------------------

SHAPES = [
    (
        "matrix",
        answer({"status": "success", "data": {"resultType": "matrix", "result": [{"values": []}]}}),
        "query returned a range vector; a gate needs an instant value",
    ),
    (
        "scalar",
        answer({"status": "success", "data": {"resultType": "scalar", "result": [1, "0"]}}),
        "query returned a scalar; a gate needs an instant vector (wrap it in vector())",
    ),
    (
        "string",
        answer({"status": "success", "data": {"resultType": "string", "result": [1, "ok"]}}),
        "query returned a string; a gate needs a number",
    ),
    ("no data", answer({"status": "success"}), "answer without data.resultType and data.result"),
    (
        "no result",
        answer({"status": "success", "data": {"resultType": "vector"}}),
        "answer without data.resultType and data.result",
    ),
    (
        "no resultType",
        answer({"status": "success", "data": {"result": []}}),
        "answer without data.resultType and data.result",
    ),
    ("no status", http_response(prometheus_json([]).replace(b'"success"', b'"fine"')), "status"),
    (
        "status error with 200",
        answer({"status": "error", "errorType": "bad_data", "error": "parse error"}),
        "bad query: parse error",
    ),
    (
        "status error, unknown type",
        answer({"status": "error", "errorType": "internal", "error": "boom"}, "503 Unavailable"),
        "prometheus answered HTTP 503: boom",
    ),
    ("value not a list", vector("0"), 'a sample value that is not [time, "number"]'),
    ("value too short", vector(["0"]), 'a sample value that is not [time, "number"]'),
    ("value a bare number", vector([1, 0]), "sample value 0 is not a number"),
    ("value text", vector([1, "lots"]), "sample value 'lots' is not a number"),
    ("value with spaces", vector([1, " 0.1"]), "is not a number"),
    ("time a string", vector(["now", "0"]), 'a sample value that is not [time, "number"]'),
    (
        "result not a list",
        answer({"status": "success", "data": {"resultType": "vector", "result": {}}}),
        "not a list",
    ),
    (
        "sample not an object",
        answer({"status": "success", "data": {"resultType": "vector", "result": [1]}}),
        "not an object",
    ),
    (
        "native histogram",
        answer(
            {
                "status": "success",
                "data": {"resultType": "vector", "result": [{"metric": {}, "histogram": [1, {}]}]},
            }
        ),
        "native histogram",
    ),
    ("two series", vector([1, "0"], [1, "0"]), "query returned 2 series; aggregate it"),
    (
        "not JSON",
        http_response(b"ok", content_type="text/plain"),
        "answer is not a JSON object (text/plain)",
    ),
    (
        "HTML",
        http_response(b"<html><body>login</body></html>", content_type="text/html"),
        "answer is not a JSON object (text/html); is it Prometheus?",
    ),
    ("JSON list", answer([1, 2]), "answer is not a JSON object"),
    (
        "HTML error page",
        http_response(b"<h1>Bad Gateway</h1>", "502 Bad Gateway", "text/html"),
        "prometheus answered HTTP 502: <h1>Bad Gateway</h1>",
    ),
    ("not HTTP", b"SSH-2.0-OpenSSH\r\n\r\n", "unexpected answer from"),
]


@pytest.mark.parametrize(("raw", "message"), [s[1:] for s in SHAPES], ids=[s[0] for s in SHAPES])
def test_an_answer_of_the_wrong_shape_is_an_error(raw: bytes, message: str) -> None:
    with HostilePeer(respond(raw)) as peer:
        reading = read(peer.url)
    assert reading.outcome is Outcome.ERROR, reading
    assert reading.error is not None and message in reading.error, reading.error


@pytest.mark.parametrize(
    ("raw", "outcome", "value"),
    [
        (vector(), Outcome.NO_DATA, None),
        (
            answer({"status": "success", "data": {"resultType": "vector", "result": []}}),
            Outcome.NO_DATA,
            None,
        ),
        (prometheus_answer("NaN"), Outcome.NO_DATA, "nan"),
        (prometheus_answer("+Inf"), Outcome.ROLLBACK, "inf"),
        (prometheus_answer("-Inf"), Outcome.NO_DATA, "-inf"),
        (prometheus_answer("1e-3"), Outcome.OK, "0.001"),
    ],
    ids=["empty", "empty again", "NaN", "+Inf", "-Inf", "exponent"],
)
def test_only_an_instant_vector_of_at_most_one_series_is_read(
    raw: bytes, outcome: Outcome, value: str | None
) -> None:
    with HostilePeer(respond(raw)) as peer:
        reading = read(peer.url)
    assert reading.outcome is outcome, reading
    assert (None if reading.value is None else str(reading.value)) == value


def test_a_peer_that_slams_the_door_is_unreachable() -> None:
    with HostilePeer(slam()) as peer:
        reading = read(peer.url)
    assert (
        reading.error == f"prometheus unreachable at {peer.url}: connection closed before an answer"
    )


# --- credentials ---------------------------------------------------------------------------


def recording() -> HostilePeer:
    return HostilePeer(respond(prometheus_answer(0.0)))


def authorization(peer: HostilePeer) -> list[str]:
    return [r.headers.get("authorization", "") for r in peer.requests]


def test_userinfo_in_the_url_is_sent_as_basic_auth_and_never_shown(tmp_path: Path) -> None:
    with recording() as peer:
        url = peer.url.replace("http://", "http://prom:S3cret%2F@")
        with PrometheusGates(url) as gates:
            assert gates.read(gate(), VARIABLES, NOW).outcome is Outcome.OK
            assert gates.ping() is True
            assert "S3cret" not in repr(gates) and "S3cret" not in gates.url
    # base64("prom:S3cret/")
    assert authorization(peer) == ["Basic cHJvbTpTM2NyZXQv"] * 2


def test_a_bearer_token_file_is_sent_and_read_again_when_rotated(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first-token\n")
    with recording() as peer:
        settings = Settings(prometheus_url=peer.url, prometheus_bearer_token_file=token)
        gates = prometheus_gates(settings)
        gates.read(gate(), VARIABLES, NOW)
        token.write_text("second-token-rotated\n")
        gates.read(gate(), VARIABLES, NOW)
    assert authorization(peer) == ["Bearer first-token", "Bearer second-token-rotated"]


def test_a_missing_token_file_is_an_error_reading_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "gone"
    with recording() as peer:
        reading = read(peer.url, auth=PrometheusAuth(bearer_token_file=missing))
        assert peer.requests == []
    assert reading.error == f"cannot read {missing}: no such file or directory"


def test_basic_auth_settings_are_sent(tmp_path: Path) -> None:
    password_file = tmp_path / "password"
    password_file.write_text("from-a-file\n")
    with recording() as peer:
        for settings in (
            Settings(prometheus_url=peer.url, prometheus_username="u", prometheus_password="pw"),
            Settings(
                prometheus_url=peer.url,
                prometheus_username="u",
                prometheus_password_file=password_file,
            ),
        ):
            prometheus_gates(settings).read(gate(), VARIABLES, NOW)
        assert "pw" not in repr(settings)
    # base64("u:pw"), base64("u:from-a-file")
    assert authorization(peer) == ["Basic dTpwdw==", "Basic dTpmcm9tLWEtZmlsZQ=="]


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        (
            {
                "prometheus_bearer_token_file": "/t",
                "prometheus_username": "u",
                "prometheus_password": "p",
            },
            "ROLLOUT_PROMETHEUS_BEARER_TOKEN_FILE: Value error, set a bearer token file or basic",
        ),
        (
            {"prometheus_bearer_token_file": "/t", "prometheus_url": "http://u:p@h:9090"},
            "ROLLOUT_PROMETHEUS_BEARER_TOKEN_FILE: Value error, set a bearer token file or basic",
        ),
        (
            {
                "prometheus_username": "u",
                "prometheus_password": "p",
                "prometheus_password_file": "/x",
            },
            "ROLLOUT_PROMETHEUS_PASSWORD_FILE: Value error, set ROLLOUT_PROMETHEUS_PASSWORD or",
        ),
        ({"prometheus_password": "p"}, "needs ROLLOUT_PROMETHEUS_USERNAME"),
        (
            {
                "prometheus_username": "u",
                "prometheus_password": "p",
                "prometheus_url": "http://a:b@h",
            },
            "ROLLOUT_PROMETHEUS_URL holds credentials already",
        ),
    ],
    ids=[
        "bearer and basic",
        "bearer and userinfo",
        "two passwords",
        "no username",
        "url and basic",
    ],
)
def test_conflicting_credentials_are_a_clear_settings_error(
    fields: dict[str, str], named: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(**fields)  # type: ignore[arg-type]
    text = explain_settings_error(caught.value)
    assert named in text
    assert ":p@" not in text and "'p'" not in text


def test_a_password_in_the_url_is_in_no_error_text() -> None:
    port = free_port()
    url = f"http://admin:hunter2@127.0.0.1:{port}"
    reading = read(url)
    shown = f"http://***@127.0.0.1:{port}"
    assert reading.error == f"prometheus unreachable at {shown}: connection refused"
    with HostilePeer(respond(b"garbage\r\n\r\n")) as peer:
        garbled = read(peer.url.replace("http://", "http://admin:hunter2@"))
    assert garbled.error is not None and "hunter2" not in garbled.error
    assert "http://***@127.0.0.1" in garbled.error
    assert "hunter2" not in repr(Settings(prometheus_url=url))


# --- a real `rollout serve`: the password shows nowhere ---------------------------------

PASSWORD = "pw-Zq81XvLk"
LEAK_PLAN = """\
rollout: leak
flag: leak
interval: 1s
max_gate_errors: 2
steps:
  - {stage: canary, percent: 5, hold: 1h}
gates:
  - {name: bad, query: 'sum(bad{rollout="${rollout}"})', rollback_above: 1}
  - {name: door, query: 'sum(door{rollout="${rollout}"})', rollback_above: 1}
"""


def troubled_prometheus(conn: Connection) -> None:
    """Ready, but every query fails: a bad query answers 400, another slams the door."""
    query = conn.request.params.get("query", "")
    if conn.request.path == "/-/ready":
        conn.send(http_response(b"Prometheus Server is Ready.", content_type="text/plain"))
    elif conn.request.path == "/api/v1/format_query":
        # Both parse at apply (controller.plan_checks); they fail only when run.
        conn.send(answer({"status": "success", "data": query}, "200 OK"))
    elif query.startswith("sum(bad"):
        error = {"status": "error", "errorType": "bad_data", "error": "parse error: nope"}
        conn.send(answer(error, "400 Bad Request"))
    else:
        conn.sock.close()


def wait_for(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout}s: {what}")


def ui_page(server: Any, path: str) -> str:
    import re

    import httpx

    from tests.serving import ADMIN_TOKEN

    with httpx.Client(base_url=server.url, timeout=15) as browser:
        form = browser.get("/ui/signin").text
        nonce = re.search(r'name="nonce" value="([^"]+)"', form)
        assert nonce, "sign-in form without a nonce"
        browser.post("/ui/signin", data={"token": ADMIN_TOKEN, "nonce": nonce[1], "next": "/"})
        page = browser.get(path)
        assert page.status_code == 200, page.status_code
        return page.text


def test_a_password_in_the_prometheus_url_reaches_no_reading_api_audit_webhook_or_log(
    tmp_path: Path,
) -> None:
    from tests.serving import running_server

    receiver = HostilePeer(respond(http_response(b"{}")))
    with HostilePeer(troubled_prometheus) as prometheus, receiver:
        url = prometheus.url.replace("http://", f"http://leaky:{PASSWORD}@")
        hook = [{"name": "rec", "url": receiver.url + "/hook", "format": "json"}]
        env = {
            "ROLLOUT_PROMETHEUS_URL": url,
            "ROLLOUT_SCHEDULER": "true",
            "ROLLOUT_SCHEDULER_TICK": "0.2",
            "ROLLOUT_LOG_LEVEL": "debug",
            "ROLLOUT_WEBHOOKS": json.dumps(hook),
            "ROLLOUT_WEBHOOK_POLL": "0.2",
        }
        with running_server(tmp_path, extra_env=env) as server, server.client() as c:
            assert c.post("/api/v1/plans", json={"yaml": LEAK_PLAN}).status_code == 201
            started = c.post("/api/v1/rollouts/leak/actions/start", json={"reason": "go"})
            assert started.status_code == 200, started.text
            # Gate errors past max_gate_errors pause the rollout; the reason names them.
            wait_for(
                lambda: c.get("/api/v1/rollouts/leak").json()["status"] == "paused",
                60,
                "the rollout paused on gate errors",
            )
            wait_for(
                lambda: any(b'"event":"pause"' in r.body for r in receiver.requests),
                30,
                "a webhook for the pause",
            )
            shown: dict[str, str] = {
                "rollout": c.get("/api/v1/rollouts/leak").text,
                "rollouts": c.get("/api/v1/rollouts").text,
                "gate history": c.get("/api/v1/rollouts/leak/gates").text,
                "test rollout gates": c.post("/api/v1/rollouts/leak/gates/test", json={}).text,
                "test a gate": c.post(
                    "/api/v1/gates/test",
                    json={"gate": {"name": "t", "query": "sum(door)", "hold_above": 1}},
                ).text,
                "audit": c.get("/api/v1/audit").text,
                "readyz": c.get("/readyz").text,
                "metrics": c.get("/metrics").text,
                "ui overview": ui_page(server, "/"),
                "ui rollout": ui_page(server, "/ui/rollouts/leak"),
                "webhooks": "\n".join(r.body.decode() for r in receiver.requests),
            }
        shown["server log"] = server.log.read_text(encoding="utf-8", errors="replace")

    # The errors are there, and shown with the URL redacted: the test is not vacuous.
    redacted = prometheus.url.replace("http://", "http://***@")
    assert "bad query: parse error: nope" in shown["gate history"]
    assert f"prometheus unreachable at {redacted}" in shown["gate history"]
    assert f"prometheus unreachable at {redacted}" in shown["test a gate"]
    assert f"prometheus unreachable at {redacted}" in shown["audit"]
    assert "gate source unavailable" in shown["webhooks"]
    for where, text in shown.items():
        assert PASSWORD not in text, f"the password shows in {where}"
        assert "leaky:" not in text, f"the user name shows in {where}"
    # ...and it was sent, as basic auth, on every query.
    assert {r.headers.get("authorization") for r in prometheus.requests} == {
        "Basic bGVha3k6cHctWnE4MVh2TGs="  # base64("leaky:pw-Zq81XvLk")
    }
