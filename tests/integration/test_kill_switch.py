"""The kill switch and the rollout agree, through a real ``rollout serve`` with its
scheduler (SQLite and PostgreSQL): disabling a flag that a running rollout drives
pauses it in the same transaction, audited and sent to webhooks; every view (rollout
JSON, ``rollout status``, the UI, ``/metrics``, evaluation) says it serves 0 % because
of the kill switch; the scheduler does not move it however long it waits; nothing but
pausing, rolling back or aborting is allowed while the flag is disabled; and enabling
the flag leaves it paused, with the step's dwell starting again."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from controller.errors import Refused
from controller.flagstore import Flags
from controller.rollouts import Rollouts, parse_plan_input
from controller.storage.store import Store
from controller.ui.session import SESSION_COOKIE
from flags.bucketing import bucket
from stages.actions import Action
from tests.databases import fresh_database
from tests.integration.test_ui_security import page, session_of, sign_in
from tests.serving import ADMIN_TOKEN, Server, running_server

ADMIN = "bootstrap-admin (admin)"
_names = itertools.count()
T = TypeVar("T")


def ramp(name: str, canary_hold: str = "2s") -> str:
    return (
        f"rollout: {name}\nflag: {name}\ninterval: 1s\nsteps:\n"
        "  - {stage: shadow, hold: 1s}\n"
        f"  - {{stage: canary, percent: 5, hold: {canary_hold}}}\n"
        "  - {stage: graduated, percent: 50, hold: 1h}\n"
    )


def eventually(check: Callable[[], T | None], within: float = 30, what: str = "") -> T:
    deadline = time.monotonic() + within
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"not within {within}s: {what}")
        time.sleep(0.1)


class Receiver:
    """A webhook receiver that answers 200 and keeps every JSON body."""

    def __init__(self) -> None:
        bodies: list[dict[str, Any]] = []
        self.bodies = bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}/hook"
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join()

    def events(self, rollout: str) -> list[dict[str, Any]]:
        return [b for b in list(self.bodies) if b.get("rollout") == rollout]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, receiver: Receiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp(f"kill-switch-{request.param}")
    env = {
        "ROLLOUT_SCHEDULER": "true",
        "ROLLOUT_SCHEDULER_TICK": "0.2",
        "ROLLOUT_WEBHOOKS": json.dumps([{"name": "ops", "url": receiver.url, "format": "json"}]),
        "ROLLOUT_WEBHOOK_POLL": "0.2",
    }
    with (
        fresh_database(request.param, workdir) as url,
        running_server(workdir, database_url=url, extra_env=env) as s,
    ):
        yield s


def get(c: httpx.Client, name: str) -> dict[str, Any]:
    r = c.get(f"/api/v1/rollouts/{name}")
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def audit(c: httpx.Client, name: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = c.get("/api/v1/audit", params={"rollout": name}).json()["events"]
    return events


def samples(c: httpx.Client, metric: str) -> dict[str, float]:
    """``metric`` by its ``rollout`` label (or "" for unlabelled ones)."""
    text = c.get("/metrics").text
    return {
        s.labels.get("rollout", ""): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == metric
    }


def user_in_canary(flag: str) -> str:
    """A user who gets the new side at 5 %."""
    return next(k for i in itertools.count() if bucket(flag, k := f"user-{i}") < 500)


def evaluate(c: httpx.Client, flag: str, key: str) -> dict[str, Any]:
    r = c.get(f"/api/v1/evaluate/{flag}", params={"targetingKey": key})
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


def started_at_step(c: httpx.Client, name: str, step: int) -> dict[str, Any]:
    assert c.post("/api/v1/plans", json={"yaml": ramp(name)}).status_code == 201
    assert c.post(f"/api/v1/rollouts/{name}/actions/start", json={}).status_code == 200
    return eventually(
        lambda: (r := get(c, name))["step"] == step and r, what=f"{name} at step {step + 1}"
    )


def status_cli(server: Server, name: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "controller", "status", name],
        env=server.cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_disabling_the_flag_pauses_the_rollout_and_every_view_says_zero(
    server: Server, receiver: Receiver
) -> None:
    name, control = f"ks-{next(_names)}", f"ks-control-{next(_names)}"
    user = user_in_canary(name)
    with server.client() as c:
        started_at_step(c, name, 1)
        started_at_step(c, control, 1)
        assert evaluate(c, name, user)["variant"] == "on"

        r = c.post(f"/api/v1/flags/{name}/disable", json={"reason": "INC-42"})
        assert r.status_code == 200, r.text
        assert r.json()["enabled"] is False

        # The rollout, in the same transaction: paused, with the reason.
        killed = get(c, name)
        reason = f"kill switch: flag {name} disabled by {ADMIN}"
        assert killed["status"] == "paused"
        assert killed["reason"].startswith(reason)
        assert "Enabling the flag does not resume" in killed["reason"]
        assert killed["kill_switch"] is True
        assert killed["serving"]["percent"] == 0 and killed["serving"]["kill_switch"] is True
        assert killed["step"] == 1  # where it is in the plan stays visible
        listed = next(r for r in c.get("/api/v1/rollouts").json()["rollouts"] if r["name"] == name)
        assert (listed["kill_switch"], listed["serving"]["percent"]) == (True, 0)

        # Audited: the flag's event, then the rollout's pause by the same person.
        events = audit(c, name)
        pause, disable = events[0], events[1]
        assert (disable["action"], disable["reason"]) == ("flag.disable", "INC-42")
        assert pause["action"] == "pause" and pause["actor"] == ADMIN
        assert (pause["from_status"], pause["to_status"]) == ("running", "paused")
        assert pause["reason"].startswith(reason)
        assert pause["details"]["kill_switch"] is True
        assert pause["details"]["serving_before"]["percent"] == 5
        assert pause["details"]["serving_after"]["percent"] == 0
        assert c.get("/api/v1/audit/verify").json()["ok"] is True

        # What services get, and what /metrics and the CLI say.
        answer = evaluate(c, name, user)
        assert (answer["variant"], answer["value"], answer["reason"]) == ("off", False, "DISABLED")
        assert samples(c, "rollout_percent")[name] == 0
        assert samples(c, "rollout_percent")[control] > 0  # its flag is on
        assert "0% (kill switch" in status_cli(server, name)

        # Fail closed: nothing moves it on while the flag is disabled.
        version = killed["version"]
        for action in ("resume", "advance"):
            refused = c.post(f"/api/v1/rollouts/{name}/actions/{action}", json={})
            assert refused.status_code == 409, refused.text
            message = refused.json()["message"]
            assert f"flag {name} is disabled (kill switch)" in message
            assert f"rollout flag enable {name}" in message
        assert get(c, name)["version"] == version

        # The scheduler: the canary's 2 s hold runs out, passes go by, the control
        # rollout advances, and the killed one stays where it is.
        hold_over = datetime.fromisoformat(killed["step_started_at"]) + timedelta(seconds=2)
        eventually(lambda: get(c, control)["step"] == 2, what="the control rollout's advance")
        eventually(
            lambda: (
                samples(c, "rollout_scheduler_last_pass_timestamp_seconds")[""]
                > hold_over.timestamp() + 1
            ),
            what="a scheduler pass a second after the hold ran out",
        )
        passes = samples(c, "rollout_scheduler_passes_total")[""]
        eventually(
            lambda: samples(c, "rollout_scheduler_passes_total")[""] >= passes + 5,
            what="five more scheduler passes",
        )
        still = get(c, name)
        assert (still["status"], still["step"], still["version"]) == ("paused", 1, version)

        # The webhook, through the outbox.
        sent = eventually(
            lambda: [e for e in receiver.events(name) if e["event"] == "pause"],
            what="the pause webhook",
        )
        assert sent[0]["reason"].startswith(reason)
        assert (sent[0]["from"]["status"], sent[0]["to"]["status"]) == ("running", "paused")

        # Enabling serves the step again but does not resume; its dwell starts again.
        r = c.post(f"/api/v1/flags/{name}/enable", json={"reason": "fixed"})
        assert r.status_code == 200, r.text
        back = get(c, name)
        assert back["status"] == "paused"
        assert back["reason"].startswith(f"kill switch off: flag {name} enabled by {ADMIN}")
        assert "resume to continue" in back["reason"]
        assert back["kill_switch"] is False and back["serving"]["percent"] == 5
        assert back["step_started_at"] > killed["step_started_at"]
        assert evaluate(c, name, user)["variant"] == "on"
        assert samples(c, "rollout_percent")[name] == 5
        event = audit(c, name)[0]
        assert (event["action"], event["details"]["serving_after"]["percent"]) == ("pause", 5)

        resumed = c.post(f"/api/v1/rollouts/{name}/actions/resume", json={})
        assert resumed.status_code == 200, resumed.text
        assert resumed.json()["status"] == "running"


def test_a_flag_replaced_with_enabled_false_pauses_too(server: Server) -> None:
    name = f"ks-put-{next(_names)}"
    with server.client() as c:
        started_at_step(c, name, 1)
        flag = c.get(f"/api/v1/flags/{name}").json()
        body = {k: flag[k] for k in ("type", "variants", "default_variant", "rules", "salt")}
        r = c.put(
            f"/api/v1/flags/{name}", json={**body, "enabled": False, "version": flag["version"]}
        )
        assert r.status_code == 200, r.text
        rollout = get(c, name)
        assert rollout["status"] == "paused" and rollout["kill_switch"] is True
        assert rollout["reason"].startswith(f"kill switch: flag {name} disabled")

        # Disabling again changes nothing more: one pause event.
        assert c.post(f"/api/v1/flags/{name}/disable", json={}).status_code == 200
        pauses = [e for e in audit(c, name) if e["action"] == "pause"]
        assert len(pauses) == 1


def test_rollouts_that_are_not_active_are_not_paused_but_serve_zero(server: Server) -> None:
    pending, done = f"ks-pending-{next(_names)}", f"ks-done-{next(_names)}"
    with server.client() as c:
        assert c.post("/api/v1/plans", json={"yaml": ramp(pending)}).status_code == 201
        assert c.post("/api/v1/plans", json={"yaml": ramp(done)}).status_code == 201
        assert c.post(f"/api/v1/rollouts/{done}/actions/start", json={}).status_code == 200
        for _ in range(3):
            r = c.post(f"/api/v1/rollouts/{done}/actions/advance", json={})
            assert r.status_code == 200, r.text
        assert get(c, done)["status"] == "completed"
        for name in (pending, done):
            assert c.post(f"/api/v1/flags/{name}/disable", json={}).status_code == 200
        events = len(audit(c, done))

        completed = get(c, done)
        assert completed["status"] == "completed"  # no transition: nothing to pause
        assert (completed["kill_switch"], completed["serving"]["percent"]) == (True, 0)
        assert samples(c, "rollout_percent")[done] == 0
        start = c.post(f"/api/v1/rollouts/{pending}/actions/start", json={})
        assert start.status_code == 409
        assert "kill switch" in start.json()["message"]
        assert get(c, pending)["status"] == "pending"

        # Enabling a completed rollout's flag serves its last step again, untouched.
        assert c.post(f"/api/v1/flags/{done}/enable", json={}).status_code == 200
        after = get(c, done)
        assert (after["status"], after["serving"]["percent"]) == ("completed", 50)
        assert len(audit(c, done)) == events + 1  # the flag.enable event alone


def test_the_ui_says_kill_switch_and_offers_no_resume(server: Server) -> None:
    name = f"ks-ui-{next(_names)}"
    with server.client() as c:
        started_at_step(c, name, 1)
        session = session_of(sign_in(server.url, ADMIN_TOKEN))
        before = page(server.url, session, f"/ui/rollouts/{name}")
        assert before.status_code == 200
        assert f'formaction="/ui/rollouts/{name}/actions/advance"' in before.text
        assert "(kill switch)" not in before.text

    # Switched off through the UI's own form, as a person does.
    flags = page(server.url, session, "/ui/flags")
    csrf = re.search(r'name="csrf" value="([^"]+)"', flags.text)
    assert csrf is not None
    switched = httpx.post(
        f"{server.url}/ui/flags/kill-switch",
        data={"csrf": csrf.group(1), "flag": name, "enabled": "0", "reason": "INC-7"},
        cookies={SESSION_COOKIE: session},
        timeout=15,
    )
    assert switched.status_code == 303, switched.text
    with server.client() as c:
        assert get(c, name)["status"] == "paused"
        assert audit(c, name)[0]["actor"] == ADMIN

    overview = page(server.url, session, "/")
    assert overview.status_code == 200
    row = overview.text[overview.text.index(f">{name}<") :][:3000]
    assert "0% (kill switch)" in row
    rollout_page = page(server.url, session, f"/ui/rollouts/{name}")
    assert rollout_page.status_code == 200
    text = rollout_page.text
    assert "0% (kill switch)" in text
    assert f"kill switch: flag {name} is disabled" in text
    assert f"kill switch: flag {name} disabled by" in text  # the paused reason
    for refused in ("resume", "advance"):
        assert f'formaction="/ui/rollouts/{name}/actions/{refused}"' not in text
    assert f'formaction="/ui/rollouts/{name}/actions/abort"' in text  # narrowing stays


def race_start_and_kill(rollouts: Rollouts, flags: Flags, name: str, now: datetime) -> None:
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def start() -> None:
        barrier.wait()
        try:
            rollouts.act(name, Action.START, actor="alice", now=now)
        except Refused:
            pass  # the flag was disabled first
        except BaseException as exc:
            errors.append(exc)

    def kill() -> None:
        barrier.wait()
        try:
            flags.set_enabled(
                name, False, actor="bob", now=now, reason="race", expected_version=None
            )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start), threading.Thread(target=kill)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors


def test_a_start_racing_the_kill_switch_never_leaves_a_running_rollout(store: Store) -> None:
    """Either the start sees the disabled flag and is refused, or the kill switch sees
    the started rollout and pauses it; never a rollout running on a disabled flag."""
    rollouts = Rollouts(store, lambda: None)
    flags = Flags(store, lambda: None, rollouts)
    now = datetime.now(UTC)
    for i in range(20):
        name = f"race-{i}"
        plan, source = parse_plan_input(ramp(name), None)
        rollouts.apply(plan, source, "test", now)
        race_start_and_kill(rollouts, flags, name, now)
        rollout = rollouts.get(name, now)
        assert flags.get(name)["enabled"] is False
        assert rollout["status"] in ("pending", "paused"), rollout
        assert rollout["kill_switch"] is True
