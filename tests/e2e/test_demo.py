"""``rollout demo`` end to end: the real command, a real Prometheus, the packaged plan.

Each run takes the plan's own holds (shadow 6s, the others 4-6s, gates every 2s):
about 45s with errors injected at step 4, about 90s for a whole healthy rollout.
Runs that read keys get a pseudo-terminal as stdin (the keys) and pipes as stdout and
stderr (the plain display, easy to read back).
"""

from __future__ import annotations

import os
import pty
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from tests.serving import ROOT, free_port
from tests.waiting import wait_until

RUN_TIMEOUT_S = 280
START_TIMEOUT_S = 60
EXIT_TIMEOUT_S = 40


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROLLOUT_")}
    return subprocess.run(
        [sys.executable, "-m", "controller", "demo", "--no-input", "--port", "0", *args],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


def explain(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


class InteractiveDemo:
    """``rollout demo`` reading keys from a pseudo-terminal, its output read as it comes."""

    def __init__(self, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROLLOUT_")}
        self._keys, keys_end = pty.openpty()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "controller", "demo", *args],
            cwd=ROOT,
            env=env,
            stdin=keys_end,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        os.close(keys_end)
        self._out: list[str] = []
        self._err: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(stream, into), daemon=True)
            for stream, into in ((self.process.stdout, self._out), (self.process.stderr, self._err))
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: object, into: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            into.append(line)

    @property
    def stdout(self) -> str:
        return "".join(self._out)

    def explain(self) -> str:
        err = "".join(self._err)
        return f"exit {self.process.poll()}\n--- stdout\n{self.stdout}\n--- stderr\n{err}"

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        def seen() -> bool:
            return re.search(pattern, self.stdout, re.MULTILINE) is not None or (
                self.process.poll() is not None
            )

        wait_until(seen, timeout, f"{pattern!r} in the demo's output", every=0.1)
        match = re.search(pattern, self.stdout, re.MULTILINE)
        assert match is not None, self.explain()
        return match

    def press(self, key: str) -> None:
        os.write(self._keys, key.encode())

    def wait_exit(self, timeout: float = EXIT_TIMEOUT_S) -> int:
        code = self.process.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=5)
        return code

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for reader in self._readers:
            reader.join(timeout=5)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
        os.close(self._keys)


@contextmanager
def interactive_demo(*args: str) -> Iterator[InteractiveDemo]:
    demo = InteractiveDemo(*args)
    try:
        yield demo
    finally:
        demo.close()


def intro(demo: InteractiveDemo) -> tuple[str, str, str]:
    """The controller's URL, the admin token and Prometheus' URL, as the demo prints them."""
    url = demo.wait_for(r"^controller   (http://127\.0\.0\.1:\d+)", START_TIMEOUT_S)[1]
    token = demo.wait_for(r"^admin token  (\S+)", 5)[1]
    prometheus = demo.wait_for(r"^prometheus   (http://\S+)", 5)[1]
    return url, token, prometheus


def sign_in_to_the_ui(url: str, token: str) -> str:
    """The overview page's HTML, after signing in with ``token`` as a person would."""
    with httpx.Client(base_url=url, timeout=15, follow_redirects=True) as browser:
        form = browser.get("/ui/signin").text
        nonce = re.search(r'name="nonce" value="([^"]+)"', form)
        assert nonce is not None, form
        page = browser.post("/ui/signin", data={"token": token, "nonce": nonce[1], "next": "/"})
        assert page.status_code == 200, page.text
        return page.text


def refused(url: str) -> bool:
    try:
        httpx.get(url, timeout=2)
    except httpx.ConnectError:
        return True
    return False


@pytest.mark.timeout(RUN_TIMEOUT_S + 20)
def test_injected_errors_are_rolled_back_automatically_with_the_reason_shown() -> None:
    # Without keys but with --stay: up after the rollback until a signal, which is then
    # a normal ending (the exit code is the run's verdict).
    with interactive_demo(
        "--no-input", "--stay", "--port", "0", "--inject-errors-at", "4", "--timeout", "600"
    ) as demo:
        url, token, prometheus = intro(demo)
        demo.wait_for(r"^stop it with Ctrl-C or SIGTERM", RUN_TIMEOUT_S)
        answer = httpx.get(
            f"{url}/api/v1/rollouts/memory-layer", headers={"Authorization": f"Bearer {token}"}
        )
        assert answer.json()["status"] == "rolled_back", answer.text
        demo.process.send_signal(signal.SIGTERM)
        code = demo.wait_exit()
        out = demo.stdout
        assert code == 0, demo.explain()
    assert "stopping (SIGTERM)" in out
    assert refused(url) and refused(prometheus), "the demo left a server running"
    assert "injecting errors on the new side at step 4 (canary 5%)" in out, out
    # The rollback is announced as it happens, with the gate and value behind it.
    alert = re.search(r"!!! AUTOMATIC ROLLBACK: controller: (step_back|rollback) .*", out)
    assert alert is not None, out
    # A threshold ("0.15 > abort_above 0.05") or a compare gate's sentence ("new 75.00 %
    # vs old 0.00 %, ... > 5.00 pp -> rollback; 10 vs 230 requests").
    threshold = r"[\d.]+ > (abort|rollback)_above"
    compared = r"new [\d.]+ % vs old [\d.]+ %.* > [\d.]+ pp -> (rollback|abort); [\d,]+ vs"
    assert re.search(rf"(abort|rollback): [\w-]+: (this step )?({threshold}|{compared})", alert[0])
    summary = out[out.index("== summary ==") :]
    assert re.search(r"first rollback decision: \d+\.\ds after injection", summary), summary
    assert re.search(r"every evaluation on the old side: \d+\.\ds after injection", summary)
    assert "final: rolled_back at step 1/12 (shadow)" in summary
    assert "result: as expected (a rollback after injected errors)" in summary


@pytest.mark.timeout(RUN_TIMEOUT_S + 60)
def test_without_errors_the_whole_runbook_completes_and_stays_up_until_q() -> None:
    with interactive_demo("--port", "0", "--timeout", "600") as demo:
        url, token, prometheus = intro(demo)
        demo.wait_for(r"^== still up", RUN_TIMEOUT_S)

        # After the end, the printed address and token still work: the API and the UI.
        answer = httpx.get(
            f"{url}/api/v1/rollouts/memory-layer", headers={"Authorization": f"Bearer {token}"}
        )
        assert answer.status_code == 200 and answer.json()["status"] == "completed", answer.text
        assert "memory-layer" in sign_in_to_the_ui(url, token)
        assert demo.process.poll() is None, demo.explain()
        demo.press("q")
        code = demo.wait_exit()

        out = demo.stdout
        assert code == 0, demo.explain()
    assert "stopping (q)" in out
    assert refused(url) and refused(prometheus), "the demo left a server running"
    summary = out[out.index("== summary ==") :]
    assert "final: completed at step 12/12 (full (dual-write off))" in summary, summary
    # Every step was entered in order by the controller, and the approval was recorded.
    advances = re.findall(r"controller: advance -> running at step (\d+)", summary)
    assert advances == ["2", "3", "4", "5", "6", "7", "8", "9", "10", "12"], summary
    assert "approve -> running at step 11: auto-approved by rollout demo" in summary
    assert "AUTOMATIC ROLLBACK" not in out
    assert "errors injected: no" in summary
    assert "result: as expected (a completed rollout)" in summary


@pytest.mark.timeout(3 * START_TIMEOUT_S + 60)
def test_q_ends_a_run_normally_and_the_next_run_gets_the_same_port() -> None:
    port = free_port()
    for run in ("first", "second, right after"):
        with interactive_demo("--port", str(port)) as demo:
            url, _, prometheus = intro(demo)
            demo.wait_for(r"running: step 1/12 shadow", START_TIMEOUT_S)
            demo.press("q")
            code = demo.wait_exit()
            assert code == 0, f"{run} run: {demo.explain()}"
        # No "port is taken": the last run's connections in TIME_WAIT do not count.
        assert url == f"http://127.0.0.1:{port}", f"{run} run: {demo.explain()}"
        assert "is taken" not in demo.stdout and "address already in use" not in demo.explain()
        assert refused(url) and refused(prometheus), f"{run} run left a server running"


@pytest.mark.timeout(START_TIMEOUT_S + 60)
def test_a_taken_port_gives_another_and_sigterm_stops_everything() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with interactive_demo("--port", str(port)) as demo:
            url, _, prometheus = intro(demo)
            demo.wait_for(r"running: step 1/12 shadow", START_TIMEOUT_S)
            demo.process.send_signal(signal.SIGTERM)
            code = demo.wait_exit()

    assert f"port {port} is taken; the controller uses {url.rsplit(':', 1)[1]} instead" in (
        demo.stdout
    ), demo.explain()
    assert code == 128 + signal.SIGTERM, demo.explain()
    assert "stopped by SIGTERM" in demo.explain()
    assert refused(url) and refused(prometheus), "SIGTERM left a server running"


def test_a_bad_injection_step_is_refused_before_anything_starts() -> None:
    result = run_demo("--inject-errors-at", "13")

    assert result.returncode == 2, explain(result)
    assert "--inject-errors-at 13: steps are 1..12" in result.stderr


def test_a_taken_metrics_port_is_one_clear_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_demo("--metrics-port", str(port))

    assert result.returncode == 2, explain(result)
    assert result.stderr.strip() == f"rollout demo: --metrics-port {port}: Address already in use"
