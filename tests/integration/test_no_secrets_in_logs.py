"""No token ever reaches the server's output or the CLI's, except the one moment it is
meant to be seen: ``rollout token create`` prints the new secret once."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx

from tests.serving import ADMIN_TOKEN, Server, plan_yaml, running_server

BAD_TOKEN = "rt_not-a-real-token-but-secret-looking-0123456789"


def rollout(server: Server, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controller", *args],
        env=server.cli_env(token),
        capture_output=True,
        text=True,
        timeout=60,
    )


def sign_in_to_the_ui(server: Server, token: str) -> int:
    with httpx.Client(base_url=server.url, timeout=15) as browser:
        form = browser.get("/ui/signin").text
        match = re.search(r'name="nonce" value="([^"]+)"', form)
        assert match, "sign-in form without a nonce"
        r = browser.post("/ui/signin", data={"token": token, "nonce": match[1], "next": "/"})
        return browser.get("/").status_code if r.status_code < 400 else r.status_code


def test_no_secret_in_server_or_cli_output(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(plan_yaml("quiet"), encoding="utf-8")
    cli_outputs: list[str] = []
    # Debug logging: the most the server ever says.
    with running_server(tmp_path, extra_env={"ROLLOUT_LOG_LEVEL": "debug"}) as server:
        created = server.token("operator", name="logged-operator")
        with server.client(created) as c:
            assert c.post("/api/v1/plans", json={"yaml": plan_yaml("quiet-api")}).status_code == 201
            assert c.get("/api/v1/rollouts").status_code == 200
            assert c.post("/api/v1/evaluate/quiet-api", json={}).status_code == 200
            assert c.post("/api/v1/tokens", json={"name": "x", "role": "admin"}).status_code == 403
        with server.client(BAD_TOKEN) as c:
            assert c.get("/api/v1/rollouts").status_code == 401
            assert c.post("/api/v1/plans", json={"yaml": "x"}).status_code == 401
        with server.client(f"{BAD_TOKEN} trailing") as c:
            assert c.get("/metrics").status_code == 401
        assert sign_in_to_the_ui(server, created) == 200
        assert sign_in_to_the_ui(server, BAD_TOKEN) in (401, 403)

        for token, args in [
            (created, ("apply", "-f", str(plan))),
            (created, ("status",)),
            (created, ("start", "quiet", "--reason", "log test")),
            (ADMIN_TOKEN, ("token", "list")),
            (BAD_TOKEN, ("status",)),
            (created, ("token", "list")),  # refused: operator
        ]:
            done = rollout(server, token, *args)
            cli_outputs.append(done.stdout + done.stderr)
        minted = rollout(server, ADMIN_TOKEN, "token", "create", "minted", "--role", "viewer")
        assert minted.returncode == 0, minted.stderr
        minted_secret = minted.stdout.strip().splitlines()[-1]
        assert minted_secret.startswith("rt_")
        with server.client(minted_secret) as c:
            assert c.get("/api/v1/rollouts").status_code == 200

    server_output = server.log.read_text(encoding="utf-8", errors="replace")
    assert "Uvicorn running" in server_output or "Application startup" in server_output
    secrets = {
        "bootstrap admin": ADMIN_TOKEN,
        "created token": created,
        "bad token": BAD_TOKEN,
        "CLI-minted token": minted_secret,
    }
    for what, secret in secrets.items():
        assert secret not in server_output, f"{what} in the server's output"
        for output in cli_outputs:
            assert secret not in output, f"{what} in the CLI's output: {output!r}"
    # The one sanctioned appearance: printed once by `token create`, and nothing else.
    assert minted.stdout.count(minted_secret) == 1
    assert ADMIN_TOKEN not in minted.stdout + minted.stderr
