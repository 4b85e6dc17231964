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

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller.demo.prometheus_process import PrometheusProcess
from tests.serving import ROOT, free_port
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
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
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
