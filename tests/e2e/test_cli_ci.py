"""The ``rollout`` command for everyday and CI use, run as a subprocess against a real
server (and, for the hostile cases, against real loopback sockets that misbehave):
options anywhere, --version, status --watch, wait with its exit codes, apply -f DIR,
retries on 429/503 with one idempotency key, and one clear line, never a traceback."""

from __future__ import annotations

import http.server
import json
import os
import pty
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from controller.cli import exits
from tests.hostile import Connection, HostilePeer, hang, http_response
from tests.serving import ADMIN_TOKEN, Server, free_port, running_server
from tests.waiting import wait_until

COMMAND = [sys.executable, "-m", "controller"]
SLOW_PLAN = (
    "rollout: {name}\nflag: {name}\ninterval: 1s\nsteps:\n"
    "  - {{stage: shadow, hold: 1h}}\n  - {{stage: canary, percent: 5, hold: 1h}}\n"
    "  - {{stage: full}}\n"
)
QUICK_PLAN = (
    "rollout: {name}\nflag: {name}\ninterval: 1s\nsteps:\n"
    "  - {{stage: shadow, hold: 1s}}\n  - {{stage: full, hold: 1s}}\n"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # The scheduler runs (a quick timed ramp completes by itself), fast ticks.
    env = {"ROLLOUT_SCHEDULER": "true", "ROLLOUT_SCHEDULER_TICK": "0.25"}
    with running_server(tmp_path_factory.mktemp("cli-ci"), extra_env=env) as s:
        yield s


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROLLOUT_")}
    env.update(extra)
    return env


def run(
    *args: str,
    env: dict[str, str] | None = None,
    stdin: bytes | None = None,
    timeout: float = 90,
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*COMMAND, *args],
        env=env if env is not None else clean_env(),
        capture_output=True,
        input=stdin,
        timeout=timeout,
    )
    out = subprocess.CompletedProcess(
        result.args,
        result.returncode,
        result.stdout.decode("utf-8", "replace"),
        result.stderr.decode("utf-8", "replace"),
    )
    assert_no_traceback(out.stdout + out.stderr)
    return out


def assert_no_traceback(text: str) -> None:
    assert "Traceback" not in text, text
    assert "Exception ignored" not in text, text


def rollout(server: Server, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return run(*args, env=server.cli_env(), **kw)


def apply(server: Server, plan: str, name: str) -> None:
    applied = rollout(server, "apply", "-f", "-", stdin=plan.format(name=name).encode())
    assert applied.returncode == 0, applied.stderr


def start(server: Server, plan: str, name: str) -> None:
    apply(server, plan, name)
    started = rollout(server, "start", name, "--reason", "test")
    assert started.returncode == 0, started.stderr


def popen(server: Server, *args: str, **kw: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*COMMAND, *args],
        env=server.cli_env(),
        stdout=kw.pop("stdout", subprocess.PIPE),
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def finish(process: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    assert_no_traceback((out or "") + err)
    return process.returncode, out or "", err


# -- global options, --version -------------------------------------------------------


def test_global_options_go_before_or_after_the_command(server: Server) -> None:
    apply(server, SLOW_PLAN, "anywhere")
    token = ("--token", ADMIN_TOKEN)
    where = ("--server", server.url)
    before = run(*where, *token, "status")
    after = run("status", *where, *token)
    mixed = run(*where, "status", *token)
    for result in (before, after, mixed):
        assert result.returncode == 0, result.stderr
        assert "anywhere" in result.stdout
    as_json = run("--json", *where, *token, "status", "anywhere")
    assert json.loads(as_json.stdout)["name"] == "anywhere"
    # After the command wins over before it, as for any repeated option.
    nowhere = f"http://127.0.0.1:{free_port()}"
    assert run("--server", nowhere, "status", *where, *token).returncode == 0
    assert run(*where, "status", "--server", nowhere, *token).returncode == exits.UNREACHABLE
    # Nested commands take them too.
    listed = run("token", "--json", *where, "list", *token)
    assert listed.returncode == 0 and "tokens" not in listed.stdout  # the list itself
    assert isinstance(json.loads(listed.stdout), list)


def test_version_is_the_package_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"rollout {metadata.version('rollout-controller')}"


# -- status --watch ------------------------------------------------------------------


def test_watch_into_a_pipe_prints_a_line_per_change_until_the_rollout_ends(
    server: Server,
) -> None:
    start(server, SLOW_PLAN, "watched")
    watcher = popen(server, "status", "watched", "--watch", "--interval", "0.2")
    assert watcher.stdout is not None
    first = watcher.stdout.readline()
    assert "rollout/watched running at step 1/3 (shadow)" in first
    assert rollout(server, "advance", "watched", "--reason", "ok").returncode == 0
    assert rollout(server, "pause", "watched", "--reason", "look").returncode == 0
    assert rollout(server, "abort", "watched", "--reason", "stop").returncode == 0
    code, out, _ = finish(watcher)
    assert code == 0  # ended: aborted
    lines = [first, *out.splitlines()]
    assert lines[-1].split(" ", 1)[1].startswith("rollout/watched aborted")
    # One line per change, not per look: at most start, advance, pause, abort.
    assert 2 <= len(lines) <= 4
    assert all(line[:9].endswith("Z") for line in lines)  # HH:MM:SSZ


def test_watch_on_a_terminal_redraws_in_place(server: Server) -> None:
    start(server, SLOW_PLAN, "on-tty")
    leader, follower = pty.openpty()
    watcher = popen(server, "status", "on-tty", "--watch", "--interval", "0.2", stdout=follower)
    os.close(follower)
    seen = bytearray()

    def drain() -> None:
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO once the child has closed the terminal
                return
            if not chunk:
                return
            seen.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        wait_until(lambda: seen.count(b"\x1b[2J") >= 2, 30, "two redraws")
        assert rollout(server, "rollback", "on-tty", "--immediate", "--reason", "x").returncode == 0
        code, _, err = finish(watcher)
        assert code == 0
        reader.join(timeout=10)
    finally:
        os.close(leader)
        if watcher.poll() is None:
            watcher.kill()
            watcher.communicate()
    screen = bytes(seen).decode("utf-8", "replace")
    last = screen.rsplit("\x1b[H\x1b[2J", 1)[1]
    assert "rollout/on-tty" in last and "Ctrl-C to stop" in last
    assert "status:   rolled_back" in last and "plan:" in last
    assert "ended: rolled_back" in last
    assert_no_traceback(screen + err)


def test_ctrl_c_ends_a_watch_with_130_and_no_traceback(server: Server) -> None:
    start(server, SLOW_PLAN, "interrupted")
    # Ctrl-C as a terminal sends it. A child of a shell job started with `&` inherits
    # SIGINT ignored (and Python then keeps it ignored), as CI runs may be: undo that.
    watcher = popen(
        server,
        "status",
        "interrupted",
        "--watch",
        "--interval",
        "0.2",
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert watcher.stdout is not None
    assert "running" in watcher.stdout.readline()
    watcher.send_signal(signal.SIGINT)
    code, _, err = finish(watcher)
    assert code == exits.INTERRUPTED == 130
    assert err == ""


def test_watch_needs_a_name(server: Server) -> None:
    result = rollout(server, "status", "--watch")
    assert result.returncode == exits.USAGE
    assert "needs a rollout NAME" in result.stderr


# -- wait ------------------------------------------------------------------------------


def test_wait_for_completed_exits_0_when_it_completes(server: Server) -> None:
    start(server, QUICK_PLAN, "quick")
    result = rollout(
        server, "wait", "quick", "--for", "completed", "--timeout", "60s", "--interval", "0.2"
    )
    assert result.returncode == exits.OK, result.stderr
    assert result.stdout.splitlines()[-1] == "rollout/quick is completed"
    again = rollout(server, "wait", "quick", "--for", "completed", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["status"] == "completed"


def test_wait_exits_5_when_the_rollout_ends_otherwise(server: Server) -> None:
    start(server, SLOW_PLAN, "doomed")
    waiter = popen(
        server, "wait", "doomed", "--for", "completed", "--timeout", "5m", "--interval", "0.2"
    )
    assert waiter.stdout is not None
    assert "running" in waiter.stdout.readline()  # waiting, not yet ended
    assert rollout(server, "rollback", "doomed", "--immediate", "--reason", "x").returncode == 0
    code, _, err = finish(waiter)
    assert code == exits.WAIT_OTHER_END == 5
    assert err.strip() == "rollout: rollout/doomed ended rolled_back, not completed"


def test_wait_exits_4_at_the_timeout(server: Server) -> None:
    start(server, SLOW_PLAN, "slow")
    began = time.monotonic()
    result = rollout(
        server, "wait", "slow", "--for", "completed", "--timeout", "1s", "--interval", "0.2"
    )
    assert result.returncode == exits.WAIT_TIMEOUT == 4
    assert time.monotonic() - began < 30
    assert "still running after 1s; waited for completed" in result.stderr


def test_wait_for_paused_keeps_waiting_through_other_live_states(server: Server) -> None:
    start(server, SLOW_PLAN, "to-pause")
    waiter = popen(server, "wait", "to-pause", "--for", "paused", "--interval", "0.2")
    assert waiter.stdout is not None
    assert "running" in waiter.stdout.readline()
    assert rollout(server, "pause", "to-pause", "--reason", "x").returncode == 0
    code, out, _ = finish(waiter)
    assert code == 0 and out.splitlines()[-1] == "rollout/to-pause is paused"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--for", "completed", "--timeout", "soon"), "--timeout 'soon'"),
        (("--for", "completed", "--timeout", "0s"), "must be more than 0s"),
        (("--for", "done"), "invalid choice"),
    ],
)
def test_wait_usage_errors_exit_2(server: Server, args: tuple[str, ...], message: str) -> None:
    result = rollout(server, "wait", "anywhere", *args)
    assert result.returncode == exits.USAGE
    assert message in result.stderr


def test_wait_for_an_unknown_rollout_exits_1(server: Server) -> None:
    result = rollout(server, "wait", "no-such-rollout", "--for", "completed")
    assert result.returncode == exits.REFUSED
    assert "error (404)" in result.stderr


# -- apply -f DIR ----------------------------------------------------------------------


def test_apply_a_directory_in_name_order_and_stop_at_the_first_refusal(
    server: Server, tmp_path: Path
) -> None:
    plans = tmp_path / "plans"
    plans.mkdir()
    (plans / "02-beta.yml").write_text(SLOW_PLAN.format(name="dir-beta"))
    (plans / "01-alpha.yaml").write_text(SLOW_PLAN.format(name="dir-alpha"))
    (plans / "03-broken.yaml").write_text("rollout: dir-broken\nflag: x\nsteps: [{stage: bogus}]\n")
    (plans / "04-gamma.yaml").write_text(SLOW_PLAN.format(name="dir-gamma"))
    (plans / "notes.txt").write_text("not a plan")
    (plans / "sub").mkdir()
    (plans / "sub" / "00-nested.yaml").write_text(SLOW_PLAN.format(name="dir-nested"))

    result = rollout(server, "apply", "-f", str(plans))
    assert result.returncode == exits.REFUSED
    assert_lines_start(
        result.stdout,
        f"{plans / '01-alpha.yaml'}: rollout/dir-alpha created",
        f"{plans / '02-beta.yml'}: rollout/dir-beta created",
    )
    assert "03-broken.yaml: plan rejected, nothing applied" in result.stderr
    assert "steps[0].stage" in result.stderr
    assert (
        "stopped at 03-broken.yaml: 2 of 4 files applied before it; not tried: 04-gamma.yaml"
        in result.stderr
    )
    assert rollout(server, "status", "dir-gamma").returncode == exits.REFUSED  # not tried
    assert rollout(server, "status", "dir-nested").returncode == exits.REFUSED  # not read

    (plans / "03-broken.yaml").unlink()
    again = rollout(server, "apply", "-f", str(plans))
    assert again.returncode == 0, again.stderr
    assert_lines_start(
        again.stdout,
        f"{plans / '01-alpha.yaml'}: rollout/dir-alpha unchanged",
        f"{plans / '02-beta.yml'}: rollout/dir-beta unchanged",
        f"{plans / '04-gamma.yaml'}: rollout/dir-gamma created",
    )
    dry = rollout(server, "apply", "-f", str(plans), "--dry-run", "--json")
    assert [d["file"] for d in json.loads(dry.stdout)] == [
        str(plans / n) for n in ("01-alpha.yaml", "02-beta.yml", "04-gamma.yaml")
    ]


def assert_lines_start(text: str, *starts: str) -> None:
    """Each line begins as given (what follows, e.g. a plan revision, may vary)."""
    lines = text.splitlines()
    assert len(lines) == len(starts), text
    for line, start in zip(lines, starts, strict=True):
        assert line.startswith(start), (line, start)


def test_apply_an_empty_directory_is_a_usage_error(server: Server, tmp_path: Path) -> None:
    result = rollout(server, "apply", "-f", str(tmp_path))
    assert result.returncode == exits.USAGE
    assert "no *.yaml or *.yml files" in result.stderr


# -- never a traceback --------------------------------------------------------------


def test_a_non_utf8_plan_file_is_one_clear_line(server: Server, tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("rollout: caf\xe9\nflag: x\nsteps: [{stage: full}]\n".encode("latin-1"))
    from_file = rollout(server, "apply", "-f", str(latin1))
    assert from_file.returncode == exits.USAGE
    [line] = from_file.stderr.splitlines()
    assert line.startswith(f"rollout: cannot read {latin1}: not UTF-8")
    from_stdin = rollout(server, "apply", "-f", "-", stdin=latin1.read_bytes())
    assert from_stdin.returncode == exits.USAGE
    [line] = from_stdin.stderr.splitlines()
    assert line.startswith("rollout: cannot read -: not UTF-8")


def test_a_closed_pipe_is_one_line_and_exit_141(server: Server) -> None:
    for i in range(30):
        rollout(server, "apply", "-f", "-", stdin=SLOW_PLAN.format(name=f"pipe-{i}").encode())
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before a byte is written, as with `| head -0`
    try:
        result = subprocess.run(
            [*COMMAND, "audit", "--limit", "200"],
            env=server.cli_env(),
            stdout=write_end,
            stderr=subprocess.PIPE,
            timeout=60,
        )
    finally:
        os.close(write_end)
    err = result.stderr.decode()
    assert_no_traceback(err)
    assert result.returncode == exits.OUTPUT_CLOSED == 141
    assert err == "rollout: output closed before everything was written (broken pipe)\n"
    # And as people write it: the shell's pipeline reports head's status.
    shell = subprocess.run(
        f"{sys.executable} -m controller audit --limit 200 | head -1",
        shell=True,
        env=server.cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shell.stdout.startswith("ID")
    assert_no_traceback(shell.stderr)


class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def plain_web_server(tmp_path: Path) -> Iterator[str]:
    """A plain web server (Python's http.server) on loopback, serving a page."""
    (tmp_path / "index.html").write_text("<html><body>It works!</body></html>")
    handler = lambda *a: _Files(*a, directory=str(tmp_path))  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize(
    "args", [("status",), ("status", "x"), ("pause", "x", "--reason", "r"), ("token", "list")]
)
def test_a_plain_web_server_is_not_taken_for_the_controller(
    plain_web_server: str, args: tuple[str, ...]
) -> None:
    result = run(*args, env=clean_env(ROLLOUT_SERVER=plain_web_server, ROLLOUT_TOKEN="t"))
    assert result.returncode == exits.UNREACHABLE
    [line] = result.stderr.splitlines()
    assert "with text/html, not the controller's JSON" in line  # 404, or 501 for a POST
    assert "is --server (env ROLLOUT_SERVER) the rollout controller's address?" in line


def test_an_html_200_page_and_foreign_json_are_one_line() -> None:
    page = http_response(b"<html>hello</html>", content_type="text/html")
    with HostilePeer(lambda conn: conn.send(page)) as peer:
        result = run("status", env=clean_env(ROLLOUT_SERVER=peer.url, ROLLOUT_TOKEN="t"))
    assert result.returncode == exits.UNREACHABLE
    assert "answered 200 with text/html" in result.stderr
    foreign = http_response(b'{"hello": "world"}')
    with HostilePeer(lambda conn: conn.send(foreign)) as peer:
        result = run("status", env=clean_env(ROLLOUT_SERVER=peer.url, ROLLOUT_TOKEN="t"))
    assert result.returncode == exits.UNREACHABLE
    assert len(result.stderr.splitlines()) == 1
    assert "is --server the rollout controller" in result.stderr


def test_connection_refused_and_a_bad_url_are_one_line() -> None:
    refused = run(
        "status", env=clean_env(ROLLOUT_SERVER=f"http://127.0.0.1:{free_port()}", ROLLOUT_TOKEN="t")
    )
    assert refused.returncode == exits.UNREACHABLE
    [line] = refused.stderr.splitlines()
    assert line.startswith("rollout: cannot reach the server at http://127.0.0.1:")
    bad = run("status", env=clean_env(ROLLOUT_SERVER="127.0.0.1:8080", ROLLOUT_TOKEN="t"))
    assert bad.returncode == exits.USAGE
    assert "expected an http(s) URL" in bad.stderr


def test_a_server_that_hangs_times_out_with_one_line() -> None:
    with HostilePeer(hang()) as peer:
        began = time.monotonic()
        result = run(
            "status",
            "--request-timeout",
            "1",
            env=clean_env(ROLLOUT_SERVER=peer.url, ROLLOUT_TOKEN="t"),
        )
        took = time.monotonic() - began
    assert result.returncode == exits.UNREACHABLE
    assert result.stderr.strip() == (
        f"rollout: no answer from {peer.url} within 1s "
        "(--request-timeout, env ROLLOUT_REQUEST_TIMEOUT)"
    )
    assert took < 20
    with HostilePeer(hang()) as peer:
        from_env = run(
            "status",
            env=clean_env(
                ROLLOUT_SERVER=peer.url, ROLLOUT_TOKEN="t", ROLLOUT_REQUEST_TIMEOUT="0.5"
            ),
        )
    assert from_env.returncode == exits.UNREACHABLE and "within 0.5s" in from_env.stderr


# -- retries ---------------------------------------------------------------------------


ACTION_ANSWER = {
    "name": "r",
    "status": "paused",
    "step": 0,
    "step_count": 2,
    "step_label": "shadow",
    "serving": {"step": 0, "percent": 0, "regions": [], "shadow": True},
}


class Flaky:
    """Answers the first ``busy`` requests with ``status`` and ``Retry-After``, then 200."""

    def __init__(self, busy: int, status: str, retry_after: str | None, answer: Any) -> None:
        self.busy = busy
        self.status = status
        self.retry_after = retry_after
        self.answer = json.dumps(answer).encode()
        self.times: list[float] = []

    def __call__(self, conn: Connection) -> None:
        self.times.append(time.monotonic())
        if len(self.times) <= self.busy:
            headers = {"Retry-After": self.retry_after} if self.retry_after else {}
            body = b'{"error": "busy", "message": "the database is unavailable"}'
            conn.send(http_response(body, status=self.status, headers=headers))
        else:
            conn.send(http_response(self.answer))


def test_a_503_with_retry_after_is_retried_and_then_succeeds() -> None:
    flaky = Flaky(1, "503 Service Unavailable", "1", {"rollouts": []})
    with HostilePeer(flaky) as peer:
        result = run("status", env=clean_env(ROLLOUT_SERVER=peer.url, ROLLOUT_TOKEN="t"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(none)"
    assert len(peer.requests) == 2
    assert flaky.times[1] - flaky.times[0] >= 0.95  # Retry-After: 1 honoured
    assert result.stderr.strip() == (
        "rollout: server answered 503 (the database is unavailable); trying again in 1.0s (2 of 5)"
    )


def test_a_change_is_retried_with_the_same_idempotency_key() -> None:
    flaky = Flaky(2, "429 Too Many Requests", "0", ACTION_ANSWER)
    with HostilePeer(flaky) as peer:
        result = run(
            "pause", "r", "--reason", "x", env=clean_env(ROLLOUT_SERVER=peer.url, ROLLOUT_TOKEN="t")
        )
    assert result.returncode == 0, result.stderr
    assert "rollout/r pause: now paused" in result.stdout
    keys = [r.headers.get("idempotency-key") for r in peer.requests]
    assert len(keys) == 3 and keys[0] and len(set(keys)) == 1


def test_retries_are_bounded() -> None:
    flaky = Flaky(100, "503 Service Unavailable", "0", {})
    with HostilePeer(flaky) as peer:
        result = run("status", env=clean_env(ROLLOUT_SERVER=peer.url, ROLLOUT_TOKEN="t"))
    assert result.returncode == exits.REFUSED
    assert len(peer.requests) == 5
    assert "error (503): the database is unavailable" in result.stderr
    assert "(gave up after 5 tries in" in result.stderr


def test_retries_against_the_real_server_apply_a_change_once(tmp_path: Path) -> None:
    """The real rate limiter answers 429 with Retry-After; the CLI waits and retries
    the same change (same key), and the server applies it once."""
    # One change per 10 s: the start comes well within that of the apply, however
    # slowly a busy machine starts the second command, and Retry-After (10 s) is
    # within what the CLI waits.
    env = {"ROLLOUT_RATE_LIMIT_PER_MIN": "6", "ROLLOUT_RATE_LIMIT_BURST": "1"}
    with running_server(tmp_path, extra_env=env) as s:
        plan = SLOW_PLAN.format(name="limited").encode()
        first = run("apply", "-f", "-", env=s.cli_env(), stdin=plan)
        assert first.returncode == 0, first.stderr
        started = run("start", "limited", "--reason", "go", env=s.cli_env())
        assert started.returncode == 0, started.stderr
        assert "answered 429" in started.stderr and "trying again in" in started.stderr
        with s.client() as c:
            events = c.get("/api/v1/audit", params={"rollout": "limited"}).json()["events"]
        assert [e["action"] for e in events].count("start") == 1


# -- the CI example of docs/cli.md ----------------------------------------------------


def test_the_ci_example_script_applies_starts_and_waits(server: Server, tmp_path: Path) -> None:
    script = Path(__file__).resolve().parents[2] / "docs" / "examples" / "ci-rollout.sh"
    plans = tmp_path / "plans"
    plans.mkdir()
    (plans / "ci-quick.yaml").write_text(QUICK_PLAN.format(name="ci-quick"))
    env = server.cli_env()
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(
        ["sh", str(script), str(plans), "ci-quick", "60s"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_no_traceback(result.stdout + result.stderr)
    assert result.returncode == 0, result.stderr
    assert "rollout/ci-quick created" in result.stdout
    assert result.stdout.splitlines()[-1] == "rollout/ci-quick completed"
    # Run again (the job retried): start is refused, the wait still answers at once.
    again = subprocess.run(
        ["sh", str(script), str(plans), "ci-quick", "60s"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    assert "not started; waiting anyway" in again.stdout


def test_wait_outlasts_a_server_restart(tmp_path: Path) -> None:
    """A deploy restarts the controller while CI waits: the wait says so and goes on."""
    port = free_port()
    with running_server(tmp_path, port=port) as first:
        start(first, SLOW_PLAN, "restarted")
        waiter = popen(
            first, "wait", "restarted", "--for", "rolled_back", "--timeout", "2m",
            "--interval", "0.2",
        )  # fmt: skip
        assert waiter.stdout is not None
        assert "running" in waiter.stdout.readline()
    try:
        # The server is gone now; the wait keeps looking.
        assert "server not answering" in waiter.stdout.readline()
        with running_server(tmp_path, port=port, database_url=first.database_url) as second:
            rolled = rollout(second, "rollback", "restarted", "--immediate", "--reason", "x")
            assert rolled.returncode == 0, rolled.stderr
            code, out, _ = finish(waiter)
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.communicate()
    assert code == 0
    assert out.splitlines()[-1] == "rollout/restarted is rolled_back"
