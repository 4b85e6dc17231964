"""``rollout diff`` and ``rollout history``, and how ``rollout apply`` shows a plan's
changes and warnings."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controller.cli import format as fmt

if TYPE_CHECKING:
    from controller.cli.commands import Api


def read_plan_file(name: str) -> str:
    from controller.cli.commands import CliError

    try:
        return sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read {name}: {exc.strerror}", 2) from None
    except UnicodeDecodeError as exc:
        raise CliError(f"cannot read {name}: not UTF-8 ({exc.reason})", 2) from None


def cmd_diff(args: argparse.Namespace, api: Api) -> int:
    """Like diff(1): exit 0 when the plan changes nothing, 1 when it changes something,
    2 when it cannot tell (bad file, refused), 3 when the server is unreachable."""
    from controller.cli.commands import CliError

    text = read_plan_file(args.file)
    try:
        body = api.call("POST", "/api/v1/plans/diff", json={"yaml": text})
    except CliError as exc:
        code = 3 if exc.exit_code == 3 else 2
        raise CliError(f"{args.file}: cannot diff\n{exc}", code) from None
    if args.json:
        fmt.print_json(body)
    else:
        print(diff_text(body, args.file))
    return 1 if body["changes"] else 0


def diff_text(body: dict[str, Any], file: str) -> str:
    name = body["rollout"]
    if not body["exists"]:
        return f"{file}: {body['changes'][0]}"
    against = f"rollout/{name}" + (
        f" (plan revision {body['revision']})" if body["revision"] else ""
    )
    if not body["changes"]:
        return f"{file}: no change against {against}"
    lines = [f"{file} against {against}: {_count(len(body['changes']), 'change')}"]
    lines += [f"  {marker(c)} {c['text']}" for c in body["diff"]]
    return "\n".join(lines)


def marker(change: dict[str, Any]) -> str:
    return {"added": "+", "removed": "-"}.get(change["kind"], "~")


def cmd_history(args: argparse.Namespace, api: Api) -> int:
    if args.revision is not None:
        revision = api.call("GET", f"/api/v1/rollouts/{args.name}/plans/{args.revision}")
        if args.json:
            fmt.print_json(revision)
        else:
            print(revision_text(args.name, revision))
        return 0
    body = api.call("GET", f"/api/v1/rollouts/{args.name}/plans")
    if args.json:
        fmt.print_json(body)
    else:
        print(history_table(body["revisions"]))
    return 0


def history_table(revisions: list[dict[str, Any]]) -> str:
    rows = [
        [str(r["revision"]), r["applied_at"], r["actor"], r["reason"] or "-", r["summary"]]
        for r in revisions
    ]
    return fmt.table(["rev", "applied", "by", "reason", "changes"], rows)


def revision_text(name: str, r: dict[str, Any]) -> str:
    lines = [
        f"rollout/{name} plan revision {r['revision']}",
        f"  applied:  {r['applied_at']} by {r['actor']}",
        f"  reason:   {r['reason'] or '-'}",
        f"  sha256:   {r['plan_hash']}",
    ]
    if r["previous"] is not None:
        lines.append(f"  changes against revision {r['previous']}:")
        lines += [f"    {marker(c)} {c['text']}" for c in r["changes"]] or ["    (none)"]
    lines.append("  source:" if r["source"] else "  plan (sent as JSON; stored form):")
    source = r["source"] or json.dumps(r["plan"], indent=2)
    lines += [f"    {line}" for line in source.rstrip("\n").split("\n")]
    return "\n".join(lines)


def apply_text(body: dict[str, Any], file: str, dry_run: bool) -> str:
    if dry_run:
        head = f"{file}: valid; applying it now would {_would(body)}"
    else:
        rollout = body["rollout"]
        revision = f", plan revision {body['revision']}" if body.get("revision") else ""
        head = f"rollout/{rollout['name']} {body['outcome']}{revision}"
    if body["outcome"] == "updated" or body.get("would") == "updated":
        head += "".join(f"\n  {marker(c)} {c['text']}" for c in body["diff"])
    return head


def _would(body: dict[str, Any]) -> str:
    name = body["plan"]["rollout"]
    return {
        "created": f"create rollout/{name} ({len(body['plan']['steps'])} steps)",
        "updated": f"update rollout/{name}:",
        "unchanged": f"change nothing (rollout/{name} already has this plan)",
    }[body["would"]]


def print_warnings(body: dict[str, Any]) -> None:
    for warning in body.get("warnings") or []:
        print(f"rollout: warning: {warning}", file=sys.stderr)


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")
