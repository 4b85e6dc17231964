"""``rollout freeze``, ``unfreeze``, ``freezes`` and ``status --label`` as a person runs
them, against a real server: what they print, exit codes, and never a traceback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.test_cli import rollout
from tests.serving import EXAMPLES, Server, plan_yaml, running_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("freeze-cli")) as s:
        for name, team in (("cli-memory", "memory"), ("cli-search", "search")):
            plan = plan_yaml(name) + f"labels: {{team: {team}, environment: production}}\n"
            assert rollout(s, "apply", "-f", "-", stdin=plan).returncode == 0
            assert rollout(s, "start", name, "--reason", "go").returncode == 0
        yield s


def no_traceback(*results: object) -> None:
    for result in results:
        assert "Traceback" not in getattr(result, "stderr", "") + getattr(result, "stdout", "")


def test_freeze_shows_on_status_refuses_advance_and_unfreeze_by_reason(server: Server) -> None:
    made = rollout(
        server, "freeze", "--reason", "INC-123", "--until", "2h", "--scope", "team=memory"
    )
    assert made.returncode == 0, made.stderr
    assert "freeze 1: frozen: INC-123 until " in made.stdout
    assert "for team=memory; holds 1 rollout(s) now: cli-memory" in made.stdout

    listed = rollout(server, "freezes")
    assert listed.returncode == 0
    assert "INC-123" in listed.stdout and "team=memory" in listed.stdout
    status = rollout(server, "status")
    line = next(x for x in status.stdout.splitlines() if x.startswith("cli-memory"))
    assert "running (frozen)" in line and "environment=production,team=memory" in line
    detail = rollout(server, "status", "cli-memory")
    assert "FROZEN:   freeze 1: frozen: INC-123 until" in detail.stdout

    refused = rollout(server, "advance", "cli-memory", "--reason", "now")
    assert refused.returncode == 1
    assert "error (409)" in refused.stderr and "freeze 1 (frozen: INC-123" in refused.stderr
    assert rollout(server, "advance", "cli-search", "--reason", "now").returncode == 0
    forced = rollout(server, "advance", "cli-memory", "--force", "--reason", "hotfix")
    assert forced.returncode == 0, forced.stderr  # the admin token: recorded

    ended = rollout(server, "unfreeze", "INC-123")
    assert ended.returncode == 0, ended.stderr
    assert "freeze 1 ended (INC-123, team=memory)" in ended.stdout
    assert rollout(server, "freezes").stdout.strip() == "(none)"
    again = rollout(server, "unfreeze", "INC-123")
    assert again.returncode == 1 and "no active freeze with reason 'INC-123'" in again.stderr
    by_id = rollout(server, "unfreeze", "1")
    assert by_id.returncode == 1 and "error (409)" in by_id.stderr
    every = rollout(server, "freezes", "--all")
    assert "unfrozen" in every.stdout
    no_traceback(made, listed, status, detail, refused, forced, ended, again, by_id, every)


def test_status_filters_by_labels(server: Server) -> None:
    memory = rollout(server, "status", "--label", "team=memory")
    both = rollout(server, "status", "--label", "team=memory", "--label", "environment=staging")
    bad = rollout(server, "status", "--label", "team")

    assert memory.returncode == 0
    assert "cli-memory" in memory.stdout and "cli-search" not in memory.stdout
    assert both.stdout.strip() == "(none)"
    assert bad.returncode == 1 and "query.label" in bad.stderr
    no_traceback(memory, both, bad)


BAD = [
    ("until in the past", ["--until", "2001-01-01T00:00:00Z"], 1, "body.until"),
    ("unknown scope syntax", ["--until", "1h", "--scope", "team"], 1, "body.scope[0]"),
    ("unknown zone", ["--until", "14:00", "--tz", "Mars/Base"], 1, "body.tz"),
    ("missing until", [], 2, "--until"),
]


@pytest.mark.parametrize(("extra", "code", "said"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_freeze_input_is_one_clear_error(
    server: Server, extra: list[str], code: int, said: str
) -> None:
    result = rollout(server, "freeze", "--reason", "INC-9", *extra)

    assert result.returncode == code
    assert said in result.stderr
    no_traceback(result)
    assert "INC-9" not in rollout(server, "freezes", "--all").stdout


def test_missing_reason_and_a_viewer_are_refused(server: Server) -> None:
    missing = rollout(server, "freeze", "--until", "1h")
    viewer = rollout(
        server, "freeze", "--reason", "INC-5", "--until", "1h", token=server.token("viewer")
    )

    assert missing.returncode == 2 and "--reason" in missing.stderr
    assert viewer.returncode == 1 and "error (403)" in viewer.stderr
    no_traceback(missing, viewer)
    help_text = rollout(server, "freeze", "--help").stdout
    assert "in UTC unless --tz" in " ".join(help_text.split())


def test_the_docs_example_plan_is_valid(server: Server) -> None:
    checked = rollout(server, "apply", "--dry-run", "-f", str(EXAMPLES / "labelled-ramp.yaml"))

    assert checked.returncode == 0, checked.stderr
    assert "valid; applying it now would create" in checked.stdout
    assert "(4 steps)" in checked.stdout
