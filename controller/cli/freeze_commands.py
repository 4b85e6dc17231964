"""``rollout freeze``, ``unfreeze`` and ``freezes`` (docs/freezes.md): registered by
``controller.cli.commands``; each handler takes the parsed arguments and the API
client, and returns the exit code."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Protocol

from controller.cli import format as fmt

UNTIL_HELP = (
    "when the freeze ends: HH:MM is the next such time of day, in UTC unless --tz is "
    "given; or a duration from now (2h, 90m, 1d); or an ISO 8601 time "
    "(2026-12-04T14:00:00Z; without an offset, in --tz)"
)


class Client(Protocol):
    def call(self, method: str, path: str, **kwargs: Any) -> Any: ...


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    fr = sub.add_parser(
        "freeze",
        parents=[common],
        help="stop every advance (in a scope) until a time; rollbacks still act",
        description="Hold every automatic advance, completion and approval of the rollouts "
        "in scope until --until. Rollbacks, aborts and the kill switch still act. "
        "Operators and admins; an admin may force an advance past it (recorded).",
    )
    fr.add_argument("--reason", required=True, help="why, e.g. INC-123 (shown on every rollout)")
    fr.add_argument("--until", required=True, metavar="WHEN", help=UNTIL_HELP)
    fr.add_argument("--tz", default=None, help="IANA time zone for --until (default UTC)")
    fr.add_argument(
        "--scope",
        action="append",
        default=[],
        metavar="LABEL=VALUE",
        help="only rollouts whose plan labels match (repeatable, all must hold); "
        "rollout=NAME: one rollout. Default: every rollout",
    )
    un = sub.add_parser(
        "unfreeze", parents=[common], help="end a freeze now, by its id or its reason"
    )
    un.add_argument(
        "freeze", metavar="ID|REASON", help="a freeze id, or end every active one with this reason"
    )
    ls = sub.add_parser("freezes", parents=[common], help="list the active freezes")
    ls.add_argument("--all", action="store_true", help="the ended and expired ones too")


def cmd_freeze(args: argparse.Namespace, api: Client) -> int:
    body: dict[str, Any] = {"reason": args.reason, "until": args.until, "scope": args.scope}
    if args.tz:
        body["tz"] = args.tz
    freeze = api.call("POST", "/api/v1/freezes", json=body)
    if args.json:
        fmt.print_json(freeze)
    else:
        print(freeze_line(freeze))
    return 0


def cmd_unfreeze(args: argparse.Namespace, api: Client) -> int:
    target = args.freeze.strip()
    if target.isdigit():
        ids = [int(target)]
    else:
        active = api.call("GET", "/api/v1/freezes")["freezes"]
        ids = [f["id"] for f in active if f["reason"] == target]
        if not ids:
            print(f"rollout: no active freeze with reason {target!r}", file=sys.stderr)
            return 1
    ended = [api.call("DELETE", f"/api/v1/freezes/{i}") for i in ids]
    if args.json:
        fmt.print_json(ended)
    else:
        for freeze in ended:
            print(f"freeze {freeze['id']} ended ({freeze['reason']}, {freeze['scope_text']})")
    return 0


def cmd_freezes(args: argparse.Namespace, api: Client) -> int:
    params = {"ended": "true"} if args.all else None
    freezes = api.call("GET", "/api/v1/freezes", params=params)["freezes"]
    if args.json:
        fmt.print_json(freezes)
    else:
        print(freezes_table(freezes))
    return 0


def freeze_line(f: dict[str, Any]) -> str:
    held = f["rollouts"]
    holds = f"holds {len(held)} rollout(s) now" + (f": {', '.join(held)}" if held else "")
    return f"freeze {f['id']}: {f['sentence']} ({f['until']}), for {f['scope_text']}; {holds}"


def freezes_table(freezes: list[dict[str, Any]]) -> str:
    rows = [
        [
            str(f["id"]),
            f["reason"],
            f["until"],
            f["scope_text"],
            f["created_by"],
            "active" if f["active"] else (f["end_reason"] or "ended"),
            ", ".join(f["rollouts"]) or "-",
        ]
        for f in freezes
    ]
    return fmt.table(["id", "reason", "until", "scope", "by", "state", "holds"], rows)


HANDLERS = {"freeze": cmd_freeze, "unfreeze": cmd_unfreeze, "freezes": cmd_freezes}
