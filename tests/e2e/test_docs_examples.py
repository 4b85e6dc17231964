"""The examples in docs/sdk.md and the README's walkthrough, run as written against a
real ``rollout serve`` (and a real Prometheus), so a doc edit that breaks one fails here.

The fenced blocks are read from the markdown itself. What a reader would change for
their own set-up (the server's address, the token, paths under /etc) is replaced by
``SUBSTITUTIONS``, each of which must still be found in the text. Blocks that cannot
run here are listed in ``NOT_RUN`` with why; every other block runs. Shell blocks run in
bash one after another, each seeing the variables the ones before exported, as in one
terminal; in ``console`` blocks each ``$`` command runs and the output shown under it
must be what it prints (times and durations may differ).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller.demo.prometheus_process import PrometheusProcess
from tests.serving import ROOT, Server, free_port, running_server
from tests.waiting import wait_until

README = ROOT / "README.md"
SDK = ROOT / "docs" / "sdk.md"
WALKTHROUGH = "## A first walkthrough"
RUNNABLE = {"sh", "console", "python"}

# (file, the block's first line): why it does not run here.
NOT_RUN: dict[tuple[str, str], str] = {
    ("docs/sdk.md", "pip install rollout-controller                 # FlagClient"): (
        "installs from a package index; test_the_install_block_names_this_package checks "
        "that the names it installs are this package and its extra"
    ),
}

BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Block:
    source: str  # path relative to the repository
    line: int  # of the opening fence
    lang: str
    text: str

    @property
    def first_line(self) -> str:
        return self.text.splitlines()[0] if self.text else ""

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"


def fenced_blocks(path: Path, section: str | None = None) -> list[Block]:
    """The fenced blocks of ``path`` (only those under the heading ``section``)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    if section is not None:
        start = lines.index(section)
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        offset, lines = start, lines[start:end]
    else:
        offset = 0
    blocks: list[Block] = []
    opening: tuple[int, str] | None = None
    body: list[str] = []
    for number, line in enumerate(lines, start=offset + 1):
        if opening is None and line.startswith("```"):
            opening, body = (number, line[3:].strip()), []
        elif opening is not None and line.startswith("```"):
            blocks.append(
                Block(str(path.relative_to(ROOT)), opening[0], opening[1], "\n".join(body))
            )
            opening = None
        elif opening is not None:
            body.append(line)
    assert opening is None, f"{path}: a fence opened at line {opening[0]} is not closed"
    return blocks


def runnable(blocks: list[Block]) -> list[Block]:
    return [b for b in blocks if b.lang in RUNNABLE and (b.source, b.first_line) not in NOT_RUN]


def substitute(text: str, substitutions: dict[str, str], used: set[str]) -> str:
    for literal, replacement in substitutions.items():
        if literal in text:
            used.add(literal)
            text = text.replace(literal, replacement)
    return text


def check_all_used(substitutions: dict[str, str], used: set[str], source: str) -> None:
    stale = set(substitutions) - used
    assert not stale, f"{source} no longer contains {sorted(stale)}: update the substitutions"


# -- the real server ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus() -> Iterator[str]:
    with PrometheusProcess([]) as prom:
        yield prom.url


def stop_pids(pids: Path) -> None:
    if not pids.exists():
        return
    for pid in {int(p) for p in pids.read_text().split()}:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        wait_until(lambda pid=pid: not _alive(pid), 15, f"process {pid} to stop")


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):  # reap it if it is our child
        os.waitpid(pid, os.WNOHANG)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


class Terminal:
    """bash commands run one after another in ``workdir``, each with the variables the
    ones before exported (kept in a file between them), like one terminal session."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env_file = workdir / ".env.sh"
        self.pids = workdir / ".pids"
        self.env = env
        self.env_file.write_text("")

    def run(self, script: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        wrapped = (
            f"set -a; . {self.env_file}; set +a\n{script}\n"
            f"status=$?\nexport -p > {self.env_file}\n"
            f'[ -n "$!" ] && echo $! >> {self.pids}\nexit $status\n'
        )
        log = self.workdir / "background.log"
        with log.open("a") as background:
            # Output goes to a file, not a pipe: a server started with `&` keeps it open.
            out = self.workdir / ".out"
            with out.open("w") as stdout:
                code = subprocess.run(
                    ["bash", "-c", wrapped],
                    cwd=self.workdir,
                    env=self.env,
                    stdout=stdout,
                    stderr=background,
                    stdin=subprocess.DEVNULL,
                    timeout=timeout,
                    check=False,
                ).returncode
        return subprocess.CompletedProcess(script, code, out.read_text(), "")


# -- the README walkthrough ----------------------------------------------------------------


def console_commands(block: Block) -> list[tuple[str, list[str]]]:
    """(command, the output shown under it) for each ``$`` line; ``\\`` continues."""
    commands: list[tuple[str, list[str]]] = []
    lines = block.text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        assert line.startswith("$ "), f"{block.where}: output before any command: {line!r}"
        command = line[2:]
        while command.endswith("\\"):
            i += 1
            command += "\n" + lines[i]
        i += 1
        shown: list[str] = []
        while i < len(lines) and not lines[i].startswith("$ "):
            shown.append(lines[i])
            i += 1
        commands.append((command, shown))
    return commands


DURATION = r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+"


# Shown lines that depend on timing: label -> where the line stops being checked
# ("": after the label). Which gates have been read, and the reason in brackets (the
# last action's until the scheduler's first check, then what holds the step), depend
# on when the scheduler last ran.
VARIES = {"gates:": "", "status:": "  ("}


def shown_line_pattern(line: str) -> re.Pattern[str]:
    """A shown output line as a pattern: its durations may be any duration, runs of
    spaces any run of spaces."""
    label = next((v for v in VARIES if line.strip().startswith(v)), None)
    if label is not None:
        cut = VARIES[label]
        line = (
            line[: line.index(cut)]
            if cut and cut in line
            else line[: line.index(label) + len(label)]
        )
    words = [
        re.sub(rf"\b{DURATION}\b", lambda _: DURATION, re.escape(word)) for word in line.split()
    ]
    return re.compile(r"\s+".join(words))


def assert_shows(block: Block, command: str, shown: list[str], printed: str) -> None:
    """Each shown line (but ``...``, which elides) is printed, in that order."""
    rest = printed.splitlines()
    for line in shown:
        if line.strip() in ("...", ""):
            continue
        pattern = shown_line_pattern(line)
        found = next((i for i, out in enumerate(rest) if pattern.search(out)), None)
        assert found is not None, (
            f"{block.where}: `{command}` no longer prints {line!r}; it printed:\n{printed}"
        )
        rest = rest[found + 1 :]


def test_the_readme_walkthrough_runs_as_written(tmp_path: Path, prometheus: str) -> None:
    port = free_port()
    server = f"http://127.0.0.1:{port}"
    substitutions = {
        # The reader's default address; here a free port, the same one the server takes.
        "http://127.0.0.1:8080": server,
        "http://127.0.0.1:9090": prometheus,
    }
    (tmp_path / "docs").symlink_to(ROOT / "docs")  # `-f docs/examples/...` from the checkout
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROLLOUT_")}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        ROLLOUT_PORT=str(port),  # what a reader on another port would set
        ROLLOUT_SERVER=server,
    )
    terminal = Terminal(tmp_path, env)
    used: set[str] = set()
    blocks = runnable(fenced_blocks(README, WALKTHROUGH))
    assert len(blocks) >= 4, "the walkthrough's examples were not found"
    try:
        for block in blocks:
            assert block.lang in ("sh", "console"), f"{block.where}: a {block.lang} block"
            text = substitute(block.text, substitutions, used)
            if block.lang == "sh":
                result = terminal.run(text)
                assert result.returncode == 0, (
                    f"{block.where}: exit {result.returncode}\n{result.stdout}"
                )
                if "rollout serve &" in text:
                    wait_healthy(server, tmp_path)
                continue
            for command, shown in console_commands(
                Block(block.source, block.line, "console", text)
            ):
                result = terminal.run(command)
                assert result.returncode == 0, (
                    f"{block.where}: `{command}` exit {result.returncode}\n{result.stdout}"
                )
                assert "Traceback" not in result.stdout
                assert_shows(block, command, shown, result.stdout)
        check_all_used(substitutions, used, "README.md")
        log = (tmp_path / "background.log").read_text()
        # The serve block names the Prometheus it set, and the server found it.
        assert f"prometheus: {prometheus} answers queries (ROLLOUT_PROMETHEUS_URL)" in log, log
    finally:
        stop_pids(terminal.pids)


def wait_healthy(server: str, workdir: Path) -> None:
    def healthy() -> bool:
        try:
            return httpx.get(f"{server}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(healthy, 30, f"rollout serve at {server}")
    except AssertionError:
        raise AssertionError((workdir / "background.log").read_text()) from None


# -- docs/sdk.md ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sdk_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    """A server with the runbook's flag (``memory-layer``) and an ``sdk`` token."""
    with running_server(tmp_path_factory.mktemp("sdk-docs")) as server:
        plan = (ROOT / "docs" / "examples" / "memory-layer.yaml").read_text(encoding="utf-8")
        with server.client() as admin:
            admin.post("/api/v1/plans", json={"yaml": plan}).raise_for_status()
        yield server, server.token("sdk", "docs-sdk")


def test_the_sdk_page_python_examples_run_as_written(
    sdk_server: tuple[Server, str], tmp_path: Path
) -> None:
    from openfeature import api

    server, token = sdk_server
    substitutions = {
        '"http://rollout.internal:8080"': repr(server.url),
        '"/etc/my-service/flags.json"': repr(str(tmp_path / "bootstrap.json")),
        '"/var/cache/my-service/flags.json"': repr(str(tmp_path / "cache.json")),
        '"/var/cache/flags.json"': repr(str(tmp_path / "openfeature-cache.json")),
    }
    used: set[str] = set()
    blocks = [b for b in runnable(fenced_blocks(SDK)) if b.lang == "python"]
    assert len(blocks) == 3, [b.where for b in blocks]
    # One namespace, as a reader pasting the page into one session: `token` is theirs.
    namespace: dict[str, Any] = {"token": token}
    try:
        for block in blocks:
            code = compile(substitute(block.text, substitutions, used), block.where, "exec")
            exec(code, namespace)
            check_block(block, namespace)
        check_all_used(substitutions, used, "docs/sdk.md")
    finally:
        api.shutdown()
        api.clear_providers()


def check_block(block: Block, namespace: dict[str, Any]) -> None:
    """What a reader of ``block`` would expect to hold once it has run."""
    from openfeature.evaluation_context import EvaluationContext

    if "FlagClient(" in block.text:
        answer = namespace["answer"]
        # A pending rollout serves everyone the old side: the flag's default, no error.
        assert (answer.value, answer.variant, answer.error_code) == (False, "off", None), answer
    elif "RolloutProvider" in block.text:
        details = namespace["details"]
        # Evaluated right after the provider was set: it must already be ready.
        assert details.error_code is None, f"{block.where}: {details}"
        assert (details.value, details.variant) == (False, "off"), details
        assert details.flag_metadata.get("rollout") == "memory-layer", details
    elif "OFREPProvider" in block.text:
        client = namespace["api"].get_client()
        details = client.get_boolean_details("memory-layer", False, EvaluationContext("u-81c2f0"))
        assert details.error_code is None, f"{block.where}: {details}"
        assert (details.value, details.variant) == (False, "off"), details
    else:
        raise AssertionError(f"{block.where}: a Python example this test does not know")


def test_the_sdk_page_json_examples_are_what_the_server_takes_and_gives(
    sdk_server: tuple[Server, str],
) -> None:
    server, token = sdk_server
    impressions, report = (json.loads(b.text) for b in fenced_blocks(SDK) if b.lang == "json")
    with server.client(token) as sdk:
        answer = sdk.post("/api/v1/evaluations/report", json=report)
        assert answer.status_code == 202, answer.text
        # Every count and impression of the example is one the server takes.
        assert answer.json() == {
            "counts": {"accepted": 1, "ignored": 0},
            "impressions": {"accepted": 1, "ignored": 0},
        }
    with server.client() as admin:
        shown = admin.get("/api/v1/flags/memory-layer/impressions").json()
    assert set(impressions) == set(shown), shown
    assert shown["impressions"] and set(impressions["impressions"][0]) == set(
        shown["impressions"][0]
    ), shown


def test_the_install_block_names_this_package() -> None:
    """The block in NOT_RUN: what it installs is this project and its extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    block = next(b for b in fenced_blocks(SDK) if (b.source, b.first_line) in NOT_RUN)
    wanted = re.findall(r"pip install '?([\w-]+)(?:\[(\w+)\])?'?", block.text)
    assert wanted == [("rollout-controller", ""), ("rollout-controller", "openfeature")], wanted
    assert project["name"] == "rollout-controller"
    assert "openfeature" in project["optional-dependencies"]


def test_every_block_not_run_is_still_in_the_docs_and_says_why() -> None:
    present = {
        (b.source, b.first_line) for b in [*fenced_blocks(README, WALKTHROUGH), *fenced_blocks(SDK)]
    }
    for key, why in NOT_RUN.items():
        assert key in present, f"{key} is no longer in the docs: drop it from NOT_RUN"
        assert len(why) > 20, key


def test_the_prometheus_page_scrape_config_is_one_prometheus_takes(tmp_path: Path) -> None:
    (config,) = [b for b in fenced_blocks(ROOT / "docs" / "prometheus.md") if b.lang == "yaml"]
    path = tmp_path / "prometheus.yml"
    path.write_text(config.text + "\n", encoding="utf-8")

    checked = subprocess.run(
        ["promtool", "check", "config", str(path)], capture_output=True, text=True, check=False
    )

    assert checked.returncode == 0, f"{config.where}: {checked.stdout}{checked.stderr}"
