"""``rollout demo``: the controller, a demo service, a real Prometheus and the runbook plan
in seconds, in one process; progress on the terminal; errors injected on request; a
summary of what the controller did and how fast.

When the rollout has ended the demo stays up (the controller, its UI, the service and
Prometheus), so the printed address and token keep working, until ``q``, the
``--timeout`` or a signal. Everything started here is stopped here (an ``ExitStack``),
also on Ctrl-C, SIGTERM or SIGHUP.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import select
import shutil
import signal
import socket
import sys
import tempfile
import termios
import threading
import time
import tty
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from types import FrameType
from typing import Any, TextIO

import httpx
import uvicorn
from pydantic import SecretStr

from controller.deadline_http import redact_url
from controller.demo.display import (
    Display,
    Frame,
    event_time,
    is_automatic_rollback,
    make_display,
    print_summary,
)
from controller.demo.prometheus_process import (
    PrometheusNotFound,
    PrometheusProcess,
    PrometheusStartError,
)
from controller.demo.service import FLAG, DemoService, Traffic
from controller.http.app import create_app
from controller.settings import Settings
from stages.plan import Plan
from stages.planfile import parse_plan

ROLLOUT = "memory-layer"
INSTALL_HINT = "apt-get install -y prometheus   (or: make setup)"
POLL_S = 0.25
# After the rollout ends, keep the traffic going this long, so the service sees what
# the controller serves now (the "every evaluation on the old side" measurement).
LINGER_S = 2.0
FINAL_STATUSES = frozenset({"completed", "rolled_back", "aborted", "paused"})
# Signals that end the demo like Ctrl-C does: everything started is stopped.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class DemoError(Exception):
    """The demo cannot run; the message says why, ``exit_code`` what to exit with."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class StopSignal(Exception):
    """SIGTERM or SIGHUP arrived: unwind, stopping everything, as for Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass(frozen=True)
class DemoOptions:
    port: int = 8080
    metrics_port: int = 0
    inject_at: str | None = None  # a 1-based step number or a stage name
    interactive: bool = True
    timeout: float = 900.0  # the whole demo, staying up included
    # Stay up after the rollout ends, until q, the timeout or a signal; None: when keys
    # are read from a terminal (there is a person to press q).
    stay: bool | None = None
    prometheus_url: str | None = None  # an external Prometheus instead of our own
    quiet: bool = False  # no progress output at all (the benchmark)


@dataclass
class DemoResult:
    ended: str  # the final status, or "timeout" / "quit" / "SIGTERM" ...
    rollout: dict[str, Any]
    events: list[dict[str, Any]]  # audit events, oldest first
    traffic: Traffic
    started_at: datetime
    expected: bool = False
    first_rollback: dict[str, Any] | None = None
    stopped_by: str | None = None  # what ended the stay after the rollout: q, timeout, ...

    @property
    def injected(self) -> bool:
        return self.traffic.injected_at is not None

    @property
    def detection_seconds(self) -> float | None:
        """Failure start until the first automatic rollback decision."""
        if self.traffic.injected_at is None or self.first_rollback is None:
            return None
        return (event_time(self.first_rollback) - self.traffic.injected_at).total_seconds()

    @property
    def all_old_seconds(self) -> float | None:
        """Failure start until every evaluation served the old side.

        From the later of: the controller taking everyone back to the old side, and the
        first evaluation after the last one that answered new. The controller's moment
        counts because, at a small percent, a gap between new users' requests can look
        like "all old" before anything has changed.
        """
        injected, since = self.traffic.injected_at, self.traffic.all_old_since
        back = self.everyone_old_event
        if injected is None or since is None or back is None:
            return None
        return max(0.0, (max(since, event_time(back)) - injected).total_seconds())

    @property
    def everyone_old_event(self) -> dict[str, Any] | None:
        """The first transition after the failure began that serves nobody the new side."""
        injected = self.traffic.injected_at
        if injected is None:
            return None
        return next(
            (e for e in self.events if event_time(e) >= injected and serves_nobody_new(e)),
            None,
        )


def serves_nobody_new(event: dict[str, Any]) -> bool:
    # rolled_back serves the first step at 0 %, aborted serves everyone old; the plan's
    # first step is shadow, where nobody reads the new side.
    return event["to_status"] in ("rolled_back", "aborted") or event["to_step"] == 0


def default_plan_text() -> str:
    return resources.files("controller.demo").joinpath("plan.yaml").read_text(encoding="utf-8")


# -- pieces ------------------------------------------------------------------------


def bind_port(requested: int) -> tuple[socket.socket, str | None]:
    """A socket bound to ``requested`` if free (0: any free port), else to a free one with
    a note saying so. The controller serves on this very socket, so no other process can
    take the port between the choice and the server's start. SO_REUSEADDR, as servers
    set it: a run just ended leaves its connections in TIME_WAIT, which must not make
    its port look taken to the next run."""
    if requested != 0:
        with contextlib.suppress(OSError):
            return _bound(requested), None
    sock = _bound(0)
    if requested == 0:
        return sock, None
    port = sock.getsockname()[1]
    return sock, f"port {requested} is taken; the controller uses {port} instead"


def _bound(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        raise
    return sock


class ControllerServer:
    """The controller app under uvicorn in a background thread, on a bound socket."""

    def __init__(self, settings: Settings, sock: socket.socket) -> None:
        config = uvicorn.Config(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            log_level="warning",
            access_log=False,
        )
        self.url = f"http://{settings.host}:{settings.port}"
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="controller", daemon=True
        )

    def start(self, timeout: float = 30.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.url, timeout=1.0) as client:
            while time.monotonic() < deadline:
                if not self._thread.is_alive():
                    raise DemoError(f"the controller did not start on {self.url}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get("/healthz").status_code == 200:
                        return
                time.sleep(0.05)
        raise DemoError(f"the controller at {self.url} was not healthy after {timeout:g}s")

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=15)


class KeyReader:
    """Single key presses from a terminal (cbreak mode), restored on exit; inert otherwise."""

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self._fd: int | None = None
        self._saved: list[Any] | None = None
        if enabled and stream.isatty():
            self._fd = stream.fileno()

    @property
    def active(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> KeyReader:
        if self._fd is not None:
            self._saved = termios.tcgetattr(self._fd)
            tty.setcbreak(self._fd)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None and self._saved is not None:
            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)

    def poll(self) -> str:
        """Keys pressed since the last poll ('' if none); never blocks."""
        if self._fd is None:
            return ""
        ready, _, _ = select.select([self._fd], [], [], 0)
        return os.read(self._fd, 64).decode(errors="ignore") if ready else ""


def injection_step(inject_at: str | None, plan: Plan) -> int | None:
    """The 0-based step at which to inject errors, from a step number or a stage name."""
    if inject_at is None:
        return None
    if inject_at.isdigit():
        number = int(inject_at)
        if not 1 <= number <= len(plan.steps):
            raise DemoError(f"--inject-errors-at {inject_at}: steps are 1..{len(plan.steps)}", 2)
        return number - 1
    for index, step in enumerate(plan.steps):
        if step.stage.value == inject_at:
            return index
    stages = ", ".join(dict.fromkeys(s.stage.value for s in plan.steps))
    raise DemoError(f"--inject-errors-at {inject_at}: not a step number or a stage ({stages})", 2)


# -- the watch loop ----------------------------------------------------------------


@dataclass
class Watch:
    """State of the watch loop between polls."""

    api: httpx.Client
    service: DemoService
    display: Display
    inject_step: int | None
    events: dict[int, dict[str, Any]] = field(default_factory=dict)
    approved: set[int] = field(default_factory=set)
    began: float = field(default_factory=time.monotonic)

    def poll(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        rollout = self.api.get(f"/api/v1/rollouts/{ROLLOUT}").raise_for_status().json()
        gates = self.api.get(f"/api/v1/rollouts/{ROLLOUT}/gates", params={"limit": 1})
        self.take_events()
        self._maybe_inject(rollout)
        self._maybe_approve(rollout)
        latest: list[dict[str, Any]] = gates.raise_for_status().json()["latest"]
        self.display.update(
            Frame(rollout, latest, self.service.traffic(), time.monotonic() - self.began)
        )
        return rollout, self.ordered_events()

    def ordered_events(self) -> list[dict[str, Any]]:
        return [self.events[i] for i in sorted(self.events)]

    def take_events(self) -> None:
        answer = self.api.get("/api/v1/audit", params={"rollout": ROLLOUT, "limit": 200})
        for event in sorted(answer.raise_for_status().json()["events"], key=lambda e: e["id"]):
            if event["id"] in self.events:
                continue
            self.events[event["id"]] = event
            if is_automatic_rollback(event):
                self.display.alert(event)
            else:
                self.display.event(event)

    def _maybe_inject(self, rollout: dict[str, Any]) -> None:
        traffic = self.service.traffic()
        if self.inject_step is None or traffic.injected_at is not None:
            return
        if rollout["status"] == "running" and rollout["step"] >= self.inject_step:
            self.service.set_injecting(True)
            self.display.note(
                f"injecting errors on the new side at step {rollout['step'] + 1} "
                f"({rollout['step_label']})"
            )

    def _maybe_approve(self, rollout: dict[str, Any]) -> None:
        # A real rollout waits for a person here; the demo approves so that it can finish.
        if rollout["status"] != "awaiting_approval" or rollout["version"] in self.approved:
            return
        self.approved.add(rollout["version"])
        self.api.post(
            f"/api/v1/rollouts/{ROLLOUT}/actions/approve",
            json={"reason": "auto-approved by rollout demo (a person approves this step)"},
        ).raise_for_status()
        self.display.note("approval needed for the full step: the demo approves it itself")


def ended(rollout: dict[str, Any]) -> bool:
    return rollout["status"] in FINAL_STATUSES


def handle_keys(keys: str, watch: Watch) -> bool:
    """Act on key presses; True when the person asked to quit."""
    for key in keys.lower():
        if key == "q":
            return True
        if key == "e":
            on = watch.service.toggle_injecting()
            watch.display.note(f"errors on the new side: {'ON' if on else 'off'}")
    return False


def watch_until_done(watch: Watch, keys: KeyReader, deadline: float) -> tuple[str, dict[str, Any]]:
    while True:
        rollout, _ = watch.poll()
        if ended(rollout):
            return rollout["status"], rollout
        if handle_keys(keys.poll(), watch):
            return "quit", rollout
        if time.monotonic() >= deadline:
            return "timeout", rollout
        time.sleep(POLL_S)


def linger(watch: Watch) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    time.sleep(LINGER_S)
    return watch.poll()


def stay_up(watch: Watch, keys: KeyReader, deadline: float) -> str:
    """Keep everything up until q, the deadline or a signal; returns which it was. New
    audit events (a person acting in the UI or the CLI) are still shown."""
    try:
        while time.monotonic() < deadline:
            if "q" in keys.poll().lower():
                return "q"
            watch.take_events()
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        return "SIGINT"
    except StopSignal as stop:
        return str(stop)
    return "timeout"


@contextlib.contextmanager
def stop_signals_unwind() -> Iterator[None]:
    """SIGTERM and SIGHUP raise ``StopSignal`` in the main thread, so the ``ExitStack``
    stops Prometheus and the rest instead of leaving them behind; restored after."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set there; a caller's thread keeps its own
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise StopSignal(signum)

    saved = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, previous in saved.items():
            signal.signal(signum, previous)


# -- setting up ----------------------------------------------------------------------


def start_metrics(service: DemoService, port: int) -> str:
    try:
        return service.start_metrics(port)
    except OSError as exc:
        raise DemoError(f"--metrics-port {port}: {exc.strerror or exc}", 2) from None


def start_prometheus(stack: contextlib.ExitStack, options: DemoOptions, target: str) -> str:
    if options.prometheus_url:
        return options.prometheus_url
    try:
        prometheus = stack.enter_context(PrometheusProcess([target], scrape_interval="1s"))
    except PrometheusNotFound as exc:
        raise DemoError(f"{exc}\ninstall it with: {INSTALL_HINT}", 2) from None
    except PrometheusStartError as exc:
        raise DemoError(str(exc)) from None
    try:
        prometheus.wait_for_series('memory_operation_total{variant="new"}', timeout=30)
    except TimeoutError as exc:
        raise DemoError(f"Prometheus does not see the demo service at {target}: {exc}") from None
    return prometheus.url


def start_controller(
    stack: contextlib.ExitStack, options: DemoOptions, workdir: str, prometheus_url: str
) -> tuple[str, str, str | None]:
    sock, port_note = bind_port(options.port)
    stack.callback(sock.close)  # after the server has stopped (callbacks run last first)
    port = sock.getsockname()[1]
    admin_token = secrets.token_urlsafe(24)
    settings = Settings(
        database_url=f"sqlite:///{workdir}/demo.db",
        prometheus_url=prometheus_url,
        admin_token=SecretStr(admin_token),
        host="127.0.0.1",
        port=port,
        scheduler=True,
        scheduler_tick=0.5,
    )
    controller = ControllerServer(settings, sock)
    stack.callback(controller.stop)
    controller.start()
    return controller.url, admin_token, port_note


def prepare_rollout(api: httpx.Client, plan_text: str) -> str:
    """Apply the plan and create the service's token; returns the ``sdk`` token."""
    api.post("/api/v1/plans", json={"yaml": plan_text}).raise_for_status()
    token = api.post("/api/v1/tokens", json={"name": "demo-service", "role": "sdk"})
    return str(token.raise_for_status().json()["token"])


def start_rollout(api: httpx.Client) -> None:
    api.post(
        f"/api/v1/rollouts/{ROLLOUT}/actions/start",
        json={"reason": "rollout demo: memory-layer runbook in seconds"},
    ).raise_for_status()


def make_workdir(stack: contextlib.ExitStack) -> str:
    workdir = tempfile.mkdtemp(prefix="rollout-demo-")
    stack.callback(shutil.rmtree, workdir, True)
    return workdir


# -- the whole run ---------------------------------------------------------------------


def run_demo(options: DemoOptions, out: TextIO | None = None) -> DemoResult:
    """Start everything, run the rollout to its end, stop everything; raises DemoError."""
    out = out or sys.stdout
    plan_text = default_plan_text()
    inject_step = injection_step(options.inject_at, parse_plan(plan_text))
    display = make_display(out, quiet=options.quiet)
    deadline = time.monotonic() + options.timeout
    with contextlib.ExitStack() as stack:
        stack.enter_context(stop_signals_unwind())
        workdir = make_workdir(stack)
        service = DemoService()
        target = start_metrics(service, options.metrics_port)
        stack.callback(service.stop)
        prometheus_url = start_prometheus(stack, options, target)
        url, admin_token, port_note = start_controller(stack, options, workdir, prometheus_url)
        api = stack.enter_context(
            httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {admin_token}"}, timeout=10
            )
        )
        service.start_traffic(url, prepare_rollout(api, plan_text))
        keys = stack.enter_context(KeyReader(sys.stdin, options.interactive))
        display.intro(
            _intro_lines(options, url, admin_token, port_note, target, prometheus_url, keys)
        )
        start_rollout(api)
        watch = Watch(api, service, display, inject_step)
        with display:
            how, rollout = watch_until_done(watch, keys, deadline)
            if how == "quit":
                events = watch.ordered_events()
            else:
                rollout, events = linger(watch)
        result = _result(how, rollout, events, service.traffic())
        if not options.quiet:
            print_summary(result, out)
        stay = keys.active if options.stay is None else options.stay
        if stay and ended(rollout):
            display.intro(_still_up_lines(url, admin_token, keys, deadline))
            result.stopped_by = stay_up(watch, keys, deadline)
            display.intro([f"stopping ({result.stopped_by})"])
    return result


def _result(
    how: str, rollout: dict[str, Any], events: list[dict[str, Any]], traffic: Traffic
) -> DemoResult:
    start = next((e for e in events if e["action"] == "start"), None)
    started_at = event_time(start) if start else datetime.now(UTC)
    first = None
    if traffic.injected_at is not None:
        injected_at = traffic.injected_at
        first = next(
            (e for e in events if is_automatic_rollback(e) and event_time(e) >= injected_at),
            None,
        )
    result = DemoResult(how, rollout, events, traffic, started_at, first_rollback=first)
    result.expected = _as_expected(result)
    return result


def _as_expected(result: DemoResult) -> bool:
    if not result.injected:
        return result.ended == "completed"
    return result.first_rollback is not None and result.ended in ("rolled_back", "paused")


def _intro_lines(
    options: DemoOptions,
    url: str,
    admin_token: str,
    port_note: str | None,
    target: str,
    prometheus_url: str,
    keys: KeyReader,
) -> list[str]:
    lines = [
        f"controller   {url}   (web UI at /, API under /api/v1)",
        f"admin token  {admin_token}",
        f"             try: ROLLOUT_SERVER={url} ROLLOUT_TOKEN=<token> rollout status {ROLLOUT}",
        f"demo service http://{target}/metrics   (flag {FLAG}, asked per request)",
        f"prometheus   {redact_url(prometheus_url)}",
    ]
    if port_note:
        lines.insert(0, port_note)
    if options.prometheus_url:
        lines.append(
            f"using ROLLOUT_PROMETHEUS_URL: that Prometheus must scrape {target} every 1s "
            "(pass --metrics-port to keep the address fixed)"
        )
    if keys.active:
        lines.append("keys: e = toggle errors on the new side, q = quit")
    return lines


def _still_up_lines(url: str, admin_token: str, keys: KeyReader, deadline: float) -> list[str]:
    left = max(0.0, deadline - time.monotonic())
    how = "press q to quit (or Ctrl-C)" if keys.active else "stop it with Ctrl-C or SIGTERM"
    return [
        "",
        "== still up: the controller, its web UI, the demo service and Prometheus ==",
        f"web UI       {url}/   (sign in with the admin token)",
        f"admin token  {admin_token}",
        f"             try: ROLLOUT_SERVER={url} ROLLOUT_TOKEN=<token> rollout status {ROLLOUT}",
        f"{how}; everything stops by itself in {left:.0f}s (--timeout)",
    ]


def main(options: DemoOptions) -> int:
    """The ``rollout demo`` command: exit 0 when the run ended as expected, or when a
    person pressed q before it ended (a normal way to stop it)."""
    try:
        result = run_demo(options)
    except DemoError as exc:
        print(f"rollout demo: {exc}", file=sys.stderr)
        return exc.exit_code
    except httpx.HTTPError as exc:
        print(f"rollout demo: the controller failed: {exc}", file=sys.stderr)
        return 1
    except StopSignal as stop:
        print(f"rollout demo: stopped by {stop}", file=sys.stderr)
        return 128 + stop.signum
    return 0 if result.expected or result.ended == "quit" else 1


__all__ = ["DemoError", "DemoOptions", "DemoResult", "StopSignal", "main", "run_demo"]
