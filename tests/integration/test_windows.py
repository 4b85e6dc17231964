"""Change windows through the shell.

First the real scheduler on a real database (SQLite and PostgreSQL), a fake gate source
and a clock the test moves over a weekend and a DST change: an advance held on Friday
evening happens on Monday at 09:00 Berlin time, and a breach rolls back at any hour.
Then a real ``rollout serve`` with ROLLOUT_CHANGE_WINDOWS set to a window that is not
open now: the rollout's JSON and ``rollout status`` say when it opens, an approval is
refused with 409, rollbacks, aborts and the kill switch still act, and the plan's own
windows (open now) replace the global ones and let it advance.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from controller.errors import Refused
from controller.jobs.scheduler import Scheduler
from controller.rollouts import Rollouts, parse_plan_input
from controller.settings import Settings
from controller.storage.leases import Leases
from controller.storage.store import Store
from stages.actions import Action
from stages.state import Outcome
from stages.windowfile import parse_windows_text
from tests.integration.test_scheduler import Clock, FakeGates, tick, transitions
from tests.integration.test_ui_security import page, session_of, sign_in
from tests.serving import ADMIN_TOKEN, Server, running_server
from tests.waiting import wait_until

OFFICE = """\
windows:
  - {days: mon-fri, hours: "09:00-17:00", tz: Europe/Berlin}
"""

PLAN = """\
rollout: windowed
flag: windowed
interval: 5s
min_evaluations: 1
rollback_observe: 1h
steps:
  - {stage: canary, percent: 1, hold: 10s}
  - {stage: canary, percent: 5, hold: 1h}
  - {stage: graduated, percent: 50, approval: true}
gates:
  - {name: errors, query: 'sum(rate(x[1m]))', rollback_above: 0.01}
"""

FRIDAY_EVENING = datetime(2026, 3, 27, 18, 0, tzinfo=UTC)  # 19:00 CET
# Berlin springs forward on Sunday 29 Mar: Monday 09:00 CEST is 07:00 UTC, not 08:00.
MONDAY_OPENS = datetime(2026, 3, 30, 7, 0, tzinfo=UTC)


def started(
    store: Store, text: str, clock: Clock, gates: FakeGates, default: str | None = None
) -> tuple[Rollouts, Scheduler]:
    rollouts = Rollouts(store, lambda: None)
    if default is not None:
        rollouts.default_windows = parse_windows_text(default, "windows")
    plan, source = parse_plan_input(text, None)
    rollouts.apply(plan, source, "test", clock())
    rollouts.act(plan.rollout, Action.START, actor="test", now=clock())
    return rollouts, Scheduler(store, rollouts, gates, Leases(store, "r1"), clock)


def run_until(scheduler: Scheduler, clock: Clock, end: datetime, step: float = 5) -> None:
    while clock.now < end:
        clock.advance(step)
        tick(scheduler)


def test_an_advance_held_over_the_weekend_happens_when_the_window_opens(store: Store) -> None:
    clock, gates = Clock(), FakeGates(Outcome.OK)
    clock.now = FRIDAY_EVENING
    rollouts, scheduler = started(store, PLAN + OFFICE, clock, gates)

    run_until(scheduler, clock, FRIDAY_EVENING + timedelta(minutes=2))
    held = rollouts.get("windowed", clock())
    assert (held["status"], held["step"]) == ("running", 0)
    assert held["reason"] == (
        "ready to advance, but outside change window, next opens Mon 09:00 Europe/Berlin"
    )
    assert held["window"] == {
        "open": False,
        "next_open": "2026-03-30T07:00:00+00:00",
        "next_close": "2026-03-30T15:00:00+00:00",
        "source": "plan",
        "message": "outside change window, next opens Mon 09:00 Europe/Berlin",
    }

    # Over the weekend and the DST change to a minute before Monday 09:00: still held.
    clock.now = MONDAY_OPENS - timedelta(minutes=1)
    tick(scheduler)
    assert rollouts.get("windowed", clock())["step"] == 0

    run_until(scheduler, clock, MONDAY_OPENS + timedelta(seconds=10))
    opened = rollouts.get("windowed", clock())
    assert opened["step"] == 1
    assert opened["window"]["open"] is True
    assert opened["window"]["next_close"] == "2026-03-30T15:00:00+00:00"
    assert transitions(store, "windowed") == [("advance", 1, "running")]
    assert datetime.fromisoformat(opened["step_started_at"]) >= MONDAY_OPENS


def test_a_breach_rolls_back_outside_the_window(store: Store) -> None:
    clock, gates = Clock(), FakeGates(Outcome.OK)
    clock.now = MONDAY_OPENS
    rollouts, scheduler = started(store, PLAN + OFFICE, clock, gates)
    run_until(scheduler, clock, MONDAY_OPENS + timedelta(seconds=15))
    assert rollouts.get("windowed", clock())["step"] == 1

    clock.now = datetime(2026, 3, 30, 20, 0, tzinfo=UTC)  # Monday 22:00 CEST: closed
    gates.outcome = Outcome.ROLLBACK
    run_until(scheduler, clock, clock.now + timedelta(seconds=10))

    view = rollouts.get("windowed", clock())
    assert (view["status"], view["step"]) == ("rolling_back", 0)
    assert view["window"]["open"] is False
    assert [t[0] for t in transitions(store, "windowed")] == ["advance", "step_back"]


def test_the_global_windows_hold_a_plan_without_its_own_and_refuse_approval(
    store: Store,
) -> None:
    clock, gates = Clock(), FakeGates(Outcome.OK)
    clock.now = FRIDAY_EVENING
    rollouts, scheduler = started(store, PLAN, clock, gates, default=OFFICE.split("\n", 1)[1])
    run_until(scheduler, clock, FRIDAY_EVENING + timedelta(minutes=1))
    view = rollouts.get("windowed", clock())
    assert view["step"] == 0 and view["window"]["source"] == "setting"

    # A person forces the advance into the approval step; approving it waits for Monday.
    rollouts.act("windowed", Action.ADVANCE, actor="test", now=clock(), force=True)
    rollouts.act("windowed", Action.ADVANCE, actor="test", now=clock(), force=True)
    assert rollouts.get("windowed", clock())["status"] == "awaiting_approval"
    with pytest.raises(Refused, match="outside change window, next opens Mon 09:00"):
        rollouts.act("windowed", Action.APPROVE, actor="test", now=clock())
    assert rollouts.get("windowed", clock())["status"] == "awaiting_approval"  # unchanged

    after = rollouts.act("windowed", Action.APPROVE, actor="test", now=MONDAY_OPENS)
    assert (after["status"], after["step"]) == ("running", 2)


# --- a real server -------------------------------------------------------------------

_names = itertools.count()


def closed_now() -> str:
    """A window on the day after tomorrow (UTC): closed for at least a day from now."""
    day = (datetime.now(UTC) + timedelta(days=2)).strftime("%a").lower()
    return f'[{{days: [{day}], hours: "00:00-24:00", tz: UTC}}]'


@pytest.fixture(scope="module")
def windowed_server(tmp_path_factory: pytest.TempPathFactory) -> object:
    env = {"ROLLOUT_SCHEDULER": "true", "ROLLOUT_CHANGE_WINDOWS": closed_now()}
    with running_server(tmp_path_factory.mktemp("windows"), extra_env=env) as server:
        yield server


def ramp(name: str, windows: str = "") -> str:
    return (
        f"rollout: {name}\nflag: {name}\ninterval: 1s\n{windows}steps:\n"
        "  - {stage: canary, percent: 1, hold: 1s}\n"
        "  - {stage: canary, percent: 5, hold: 1s}\n"
        "  - {stage: graduated, percent: 50, approval: true}\n"
    )


def rollout(c: httpx.Client, name: str) -> dict[str, object]:
    r = c.get(f"/api/v1/rollouts/{name}")
    assert r.status_code == 200, r.text
    body: dict[str, object] = r.json()
    return body


def act(c: httpx.Client, name: str, action: str, **body: object) -> httpx.Response:
    return c.post(f"/api/v1/rollouts/{name}/actions/{action}", json=body)


def start(c: httpx.Client, text: str, name: str) -> None:
    assert c.post("/api/v1/plans", json={"yaml": text}).status_code == 201
    assert act(c, name, "start").status_code == 200


def held_by_window(c: httpx.Client, name: str) -> bool:
    """The dwell is done and the closed window is what holds it."""
    return str(rollout(c, name)["reason"]).startswith("ready to advance, but outside change window")


def test_the_server_holds_outside_the_global_window_and_says_so(
    windowed_server: Server,
) -> None:
    name = f"held-{next(_names)}"
    with windowed_server.client() as c:
        start(c, ramp(name), name)
        wait_until(lambda: held_by_window(c, name), 30, "held by the change window")
        view = rollout(c, name)
        window = view["window"]
        assert isinstance(window, dict)
        assert (view["step"], window["open"], window["source"]) == (0, False, "setting")
        opens = datetime.fromisoformat(window["next_open"])
        assert opens > datetime.now(UTC) + timedelta(hours=23)
        assert window["message"] == f"outside change window, next opens {opens:%a} 00:00 UTC"

        status = subprocess.run(
            [sys.executable, "-m", "controller", "status", name],
            env=windowed_server.cli_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0, status.stderr
        assert f"window:   outside change window, next opens {opens:%a} 00:00 UTC" in status.stdout

        # Forced past the window into the approval step, the approval is refused.
        assert act(c, name, "advance").status_code == 409
        assert act(c, name, "advance", force=True).status_code == 200
        assert act(c, name, "advance", force=True).status_code == 200
        refused = act(c, name, "approve")
        assert refused.status_code == 409
        assert "outside change window, next opens" in refused.json()["message"]
        assert rollout(c, name)["status"] == "awaiting_approval"


def test_the_plans_own_open_window_lets_it_advance(windowed_server: Server) -> None:
    name = f"own-{next(_names)}"
    with windowed_server.client() as c:
        start(c, ramp(name), name)
        wait_until(lambda: held_by_window(c, name), 30, "held by the global window")
        always = 'windows:\n  - {days: mon-sun, hours: "00:00-24:00", tz: UTC}\n'
        assert c.post("/api/v1/plans", json={"yaml": ramp(name, always)}).status_code == 200
        wait_until(lambda: rollout(c, name)["step"] == 1, 30, "advanced inside its window")
        window = rollout(c, name)["window"]
        assert isinstance(window, dict)
        assert (window["open"], window["source"], window["next_close"]) == (True, "plan", None)


@pytest.mark.parametrize(
    ("action", "body", "status"),
    [
        ("rollback", {"immediate": True}, "rolled_back"),
        ("abort", {}, "aborted"),
        ("pause", {}, "paused"),
    ],
)
def test_rollback_abort_and_pause_act_outside_the_window(
    windowed_server: Server, action: str, body: dict[str, object], status: str
) -> None:
    name = f"{action}-{next(_names)}"
    with windowed_server.client() as c:
        start(c, ramp(name), name)
        wait_until(lambda: held_by_window(c, name), 30, "held by the change window")
        r = act(c, name, action, **body)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == status


def test_the_kill_switch_acts_outside_the_window(windowed_server: Server) -> None:
    name = f"kill-{next(_names)}"
    with windowed_server.client() as c:
        start(c, ramp(name), name)
        wait_until(lambda: held_by_window(c, name), 30, "held by the change window")
        assert c.post(f"/api/v1/flags/{name}/disable", json={"reason": "INC-7"}).status_code == 200
        view = rollout(c, name)
        assert (view["status"], view["kill_switch"]) == ("paused", True)
        served = c.get(f"/api/v1/evaluate/{name}", params={"targetingKey": "u-1"}).json()
        assert served["reason"] == "DISABLED"


def test_the_rollout_page_says_the_window_is_closed_and_when_it_opens(
    windowed_server: Server,
) -> None:
    name = f"page-{next(_names)}"
    with windowed_server.client() as c:
        start(c, ramp(name), name)
        wait_until(lambda: held_by_window(c, name), 30, "held by the change window")
        message = rollout(c, name)["window"]["message"]  # type: ignore[index]
    session = session_of(sign_in(windowed_server.url, ADMIN_TOKEN))

    html = page(windowed_server.url, session, f"/ui/rollouts/{name}").text

    assert 'data-window="closed"' in html
    assert '<dt>Change window</dt><dd><span class="big">closed</span> ' in html
    assert str(message) in html
    # The headline says the controller holds, not that it "will advance" now.
    assert "ready to advance, but outside change window" in html


def test_a_bad_global_setting_stops_the_server_with_one_line_naming_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROLLOUT_")}
    env["ROLLOUT_DATABASE_URL"] = f"sqlite:///{tmp_path / 'rollout.db'}"
    env["ROLLOUT_CHANGE_WINDOWS"] = '[{days: mon, hours: "09:00-17:00", tz: Europe/Berln}]'

    serve = subprocess.run(
        [sys.executable, "-m", "controller", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )

    assert serve.returncode == 2
    assert "Traceback" not in serve.stderr
    assert (
        "ROLLOUT_CHANGE_WINDOWS: Value error, windows[0].tz (line 1): unknown time zone "
        "'Europe/Berln' (did you mean 'Europe/Berlin'?)"
    ) in serve.stderr


@pytest.mark.parametrize("blank", [None, "", "  "])
def test_no_global_setting_means_no_global_windows(blank: str | None) -> None:
    assert Settings(change_windows=blank).default_windows() == ()


def test_the_global_setting_reads_yaml_and_json_alike() -> None:
    as_yaml = Settings(change_windows='[{days: mon-fri, hours: "09:00-17:00", tz: UTC}]')
    as_json = Settings(change_windows='[{"days": "mon-fri", "hours": "09:00-17:00", "tz": "UTC"}]')

    assert as_yaml.default_windows() == as_json.default_windows() != ()
