"""The ``rollout`` command. Everything but ``serve`` talks to a server over HTTP
(``transport.py``); exit codes and the no-traceback guard are in ``exits.py``.

Exit codes: 0 done; 1 the server refused or failed (its message is printed);
2 bad usage or input (argparse, unreadable file, missing token); 3 server unreachable
or not the controller; 4 and 5 ``wait`` timed out, ended otherwise; 130 Ctrl-C;
141 output closed early.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from controller.cli import format as fmt
from controller.cli import freeze_commands, options, plan_commands, plan_files
from controller.cli import wait as wait_command
from controller.cli.exits import USAGE, CliError, guarded
from controller.cli.options import DEFAULT_SERVER, positive_seconds
from controller.cli.transport import Api
from controller.cli.watch import watch

ACTIONS = ("start", "pause", "resume", "advance", "approve", "rollback", "abort", "retry")
__all__ = ["DEFAULT_SERVER", "Api", "CliError", "main"]


def show(args: argparse.Namespace, data: Any, render: Callable[[Any], str]) -> None:
    """The server's JSON with ``--json``; otherwise the readable form."""
    if args.json:
        fmt.print_json(data)
    else:
        print(render(data))


# -- commands --------------------------------------------------------------------


SHUTDOWN_GRACE_SECONDS = 4


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from controller.gates.startup_check import log_prometheus_check
    from controller.http.app import create_app, prometheus_gates
    from controller.logs import configure_logging
    from controller.settings import Settings, explain_settings_error
    from controller.storage import migrate

    overrides: dict[str, Any] = {}
    if args.host:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    if args.database_url:
        overrides["database_url"] = args.database_url
    if args.upgrade_db:
        overrides["db_upgrade"] = True
    try:
        settings = Settings(**overrides)
    except (ValidationError, SettingsError) as exc:
        raise CliError(explain_settings_error(exc), 2) from None
    configure_logging(settings.log_level)
    log_prometheus_check(
        prometheus_gates(settings), configured="prometheus_url" in settings.model_fields_set
    )
    # Here rather than only in the app's start-up, so a refusal is one clear line.
    with database_errors(settings.database_url):
        migrate.prepare(settings.database_url, upgrade=settings.db_upgrade)
    app = create_app(settings, plan_files=[Path(f) for f in args.apply or []])
    uvicorn.run(
        app, host=settings.host, port=settings.port, log_level=settings.log_level,
        access_log=False,
        # X-Forwarded-* only when a proxy in front is declared: otherwise any client
        # (loopback included) could claim https or another address for the rate limit.
        proxy_headers=settings.trust_proxy_headers,
        forwarded_allow_ips="*" if settings.trust_proxy_headers else None,
        # SIGTERM: open requests get this long, then shutdown (scheduler.stop bounded
        # too), so a hung gate read cannot keep a replica alive past 10 s.
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
    )  # fmt: skip
    return 0


@contextmanager
def database_errors(url: str) -> Iterator[None]:
    """Schema and connection failures as CLI errors (1: refused, 3: unreachable)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, InterfaceError, OperationalError

    from controller.storage.migrate import SchemaError

    try:
        yield
    except SchemaError as exc:
        raise CliError(str(exc), 1) from None
    except ArgumentError as exc:
        raise CliError(f"bad database URL: {exc}", 2) from None
    except (OperationalError, InterfaceError) as exc:
        where = make_url(url).render_as_string(hide_password=True)
        raise CliError(f"cannot reach the database at {where}: {exc.orig}", 3) from None


def cmd_db(args: argparse.Namespace) -> int:
    from controller.settings import Settings
    from controller.storage import migrate

    if args.db_command == "revision":
        print(f"wrote {migrate.new_revision(args.message)}: read it, then ruff format it")
        return 0
    url = args.database_url or Settings().database_url
    with database_errors(url):
        if args.db_command == "upgrade":
            print(migrate.upgrade(url).describe())
            return 0
        status = migrate.check(url)
    if args.db_command == "current":
        print(f"{status.current or 'none'} ({'head' if status.at_head else status.message})")
        return 0
    if not status.at_head:
        raise CliError(status.message, 1)
    print(status.message)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from controller.demo.runner import DemoOptions
    from controller.demo.runner import main as run_demo

    if args.timeout <= 0:
        raise CliError("--timeout must be positive", 2)
    options = DemoOptions(
        port=args.port,
        metrics_port=args.metrics_port,
        inject_at=args.inject_errors_at,
        interactive=not args.no_input,
        timeout=args.timeout,
        prometheus_url=os.environ.get("ROLLOUT_PROMETHEUS_URL") or None,
        stay=True if args.stay else None,
    )
    return run_demo(options)


def cmd_backtest(args: argparse.Namespace) -> int:
    """Replay a plan's gates over Prometheus history; reads only, needs no server or token.
    Exit 0: walked; 1: a gate query failed; 2: bad input; 3: Prometheus unreachable."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from controller import backtest as bt
    from controller.cli import backtest_format as bfmt
    from controller.http.app import prometheus_gates
    from controller.settings import Settings, explain_settings_error
    from stages.planfile import PlanError, parse_plan

    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {args.file}: {getattr(exc, 'strerror', exc)}", 2) from None
    try:
        plan = parse_plan(text)
    except PlanError as exc:
        problems = "\n".join(f"  - {p}" for p in exc.problems)
        raise CliError(f"{args.file}: the plan does not parse\n{problems}", 2) from None
    now = datetime.now(UTC)
    try:
        start, end = bt.parse_time(args.start, now), bt.parse_time(args.end, now)
        bt.check_instants(plan, start, end)
        bt.initial_state(plan, start, args.step - 1)
    except bt.BacktestError as exc:
        raise CliError(str(exc), 2) from None
    if unknown := bt.unknown_variables(plan, start):
        raise CliError(f"{args.file}: " + "; ".join(unknown), 2)
    overrides = {"prometheus_url": args.prometheus} if args.prometheus else {}
    try:
        settings = Settings(**overrides)
        reader = prometheus_gates(settings)
    except (ValidationError, SettingsError) as exc:
        raise CliError(explain_settings_error(exc), 2) from None
    except ValueError as exc:
        raise CliError(str(exc), 2) from None
    if not reader.ping():
        raise CliError(f"cannot reach Prometheus at {reader.url} (--prometheus)", 3)
    source = bt.AsOf(reader)
    if broken := bt.query_errors(source, plan, start, end):
        raise CliError(f"{args.file}: queries that fail:\n" + "\n".join(broken), 1)
    timeline = bt.backtest(
        plan,
        source,
        start,
        end,
        step=args.step - 1,
        approve=args.approve,
        holds=args.verbose,
        default_windows=settings.default_windows(),
    )
    if args.json:
        fmt.print_json(bfmt.timeline_json(timeline))
    else:
        print(bfmt.timeline_text(timeline))
    return 1 if timeline.gate_errors else 0


def cmd_apply(args: argparse.Namespace, api: Api) -> int:
    if plan_files.is_directory(args.file):
        return plan_files.apply_directory(
            args,
            Path(args.file),
            lambda name: _apply_file(args, api, name),
            lambda name, body: plan_commands.apply_text(body, name, args.dry_run),
        )
    body = _apply_file(args, api, args.file)
    if args.json:
        fmt.print_json(body)
    else:
        print(plan_commands.apply_text(body, args.file, args.dry_run))
    return 0


def _apply_file(args: argparse.Namespace, api: Api, name: str) -> dict[str, Any]:
    """One plan file applied (or checked, with --dry-run); its warnings printed."""
    text = plan_files.read_text(name)  # bytes, decoded strictly: stdin too
    params = {"dry_run": "true"} if args.dry_run else None
    request = {"yaml": text, "reason": args.reason or ""}
    try:
        body: dict[str, Any] = api.call("POST", "/api/v1/plans", json=request, params=params)
    except CliError as exc:
        if exc.exit_code == 3:
            raise  # no answer (or not the controller's): whether it applied is unknown
        raise CliError(f"{name}: plan rejected, nothing applied\n{exc}", exc.exit_code) from None
    plan_commands.print_warnings(body)
    return body


def cmd_status(args: argparse.Namespace, api: Api) -> int:
    if args.watch:
        if not args.name:
            raise CliError("status --watch needs a rollout NAME", USAGE)
        return watch(args, api)
    if args.name:
        rollout = api.call("GET", f"/api/v1/rollouts/{args.name}")
        if args.json:
            fmt.print_json(rollout)
            return 0
        gates = api.call("GET", f"/api/v1/rollouts/{args.name}/gates", params={"limit": 1})
        print(fmt.rollout_detail(rollout, gates["latest"]))
        return 0
    params = {"label": args.label} if args.label else None
    rollouts = api.call("GET", "/api/v1/rollouts", params=params)["rollouts"]
    show(args, rollouts, fmt.rollout_table)
    return 0


def cmd_action(args: argparse.Namespace, api: Api) -> int:
    body: dict[str, Any] = {"reason": args.reason or ""}
    if getattr(args, "force", False):
        body["force"] = True
    if getattr(args, "immediate", False):
        body["immediate"] = True
    if args.version is not None:
        body["version"] = args.version
    rollout = api.call("POST", f"/api/v1/rollouts/{args.name}/actions/{args.action}", json=body)
    if args.json:
        fmt.print_json(rollout)
    else:
        print(
            f"rollout/{rollout['name']} {args.action}: now {rollout['status']} at step "
            f"{rollout['step'] + 1}/{rollout['step_count']} ({rollout['step_label']}), "
            f"serving {fmt.serving_text(rollout['serving'])}"
        )
    return 0


def cmd_eval(args: argparse.Namespace, api: Api) -> int:
    context: dict[str, Any] = {}
    if args.key is not None:
        context["targetingKey"] = args.key
    for item in args.attr or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise CliError(f"--attr {item!r}: expected NAME=VALUE", 2)
        context[name] = value
    result = api.call("POST", f"/api/v1/evaluate/{args.flag}", json={"context": context})
    show(args, result, fmt.evaluation_text)
    return 1 if result.get("errorCode") == "FLAG_NOT_FOUND" else 0


def cmd_gates(args: argparse.Namespace, api: Api) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    if args.gate:
        params["gate"] = args.gate
    body = api.call("GET", f"/api/v1/rollouts/{args.name}/gates", params=params)
    if args.json:
        fmt.print_json(body)
    else:
        print("latest:")
        print(fmt.readings_table(body["latest"]))
        print("\nhistory (newest first):")
        print(fmt.readings_table(body["history"]))
    return 0


def cmd_test_gate(args: argparse.Namespace, api: Api) -> int:
    body = {"gate": args.gate} if args.gate else {}
    result = api.call("POST", f"/api/v1/rollouts/{args.name}/gates/test", json=body)
    if args.json:
        fmt.print_json(result)
    else:
        print(fmt.readings_table(result["readings"]))
        would = result["would_decide"]
        print(f"\nwould decide now: {would['decision']}: {would['reason']}")
    return 0


def cmd_audit(args: argparse.Namespace, api: Api) -> int:
    if args.audit_command == "verify":
        return cmd_audit_verify(args, api)
    params: dict[str, Any] = {"limit": args.limit}
    if args.rollout:
        params["rollout"] = args.rollout
    if args.flag:
        params["flag"] = args.flag
    events = api.call("GET", "/api/v1/audit", params=params)["events"]
    show(args, events, fmt.audit_table)
    return 0


def cmd_audit_verify(args: argparse.Namespace, api: Api) -> int:
    """Exit 0 when the audit hash chain holds, 1 when it is broken."""
    report = api.call("GET", "/api/v1/audit/verify")
    if args.json:
        fmt.print_json(report)
    elif report["ok"]:
        print(f"audit log intact: {report['checked']} events checked, the hash chain holds")
    else:
        print(
            f"audit log BROKEN at event {report['first_bad']}: {report['problem']} "
            f"({report['checked']} events checked)"
        )
    return 0 if report["ok"] else 1


def cmd_flag(args: argparse.Namespace, api: Api) -> int:
    if args.flag_command == "list":
        flags = api.call("GET", "/api/v1/flags")["flags"]
        show(args, flags, fmt.flag_table)
        return 0
    if args.flag_command == "show":
        fmt.print_json(api.call("GET", f"/api/v1/flags/{args.key}"))
        return 0
    if args.flag_command == "put":
        try:
            definition = json.loads(Path(args.file).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CliError(f"cannot read {args.file} as JSON: {exc}", 2) from None
        result = api.call("PUT", f"/api/v1/flags/{args.key}", json=definition)
        print(f"flag/{args.key} {result['outcome']} (version {result['flag']['version']})")
        return 0
    switch = "enable" if args.flag_command == "enable" else "disable"
    flag = api.call(
        "POST", f"/api/v1/flags/{args.key}/{switch}", json={"reason": args.reason or ""}
    )
    state = "enabled" if flag["enabled"] else "DISABLED (everyone gets the default)"
    print(f"flag/{args.key} {state} (version {flag['version']})")
    return 0


def cmd_token(args: argparse.Namespace, api: Api) -> int:
    if args.token_command == "create":
        body = {"name": args.name, "role": args.role}
        if args.expires:
            body["expires"] = args.expires
        token = api.call("POST", "/api/v1/tokens", json=body)
        if args.json:
            fmt.print_json(token)
        else:
            expiry = f", expires {token['expires_at'][:19]}Z" if token.get("expires_at") else ""
            print(
                f"token {token['id']} ({token['role']}) for {token['name']}{expiry}; "
                "shown once, store it now:"
            )
            print(token["token"])
        return 0
    if args.token_command == "list":
        tokens = api.call("GET", "/api/v1/tokens")["tokens"]
        show(args, tokens, fmt.token_table)
        return 0
    api.call("DELETE", f"/api/v1/tokens/{args.id}")
    print(f"token {args.id} revoked")
    return 0


def cmd_delete(args: argparse.Namespace, api: Api) -> int:
    api.call("DELETE", f"/api/v1/rollouts/{args.name}")
    print(f"rollout/{args.name} deleted")
    return 0


def cmd_webhooks(args: argparse.Namespace, api: Api) -> int:
    if args.webhooks_command == "retry":
        delivery = api.call("POST", f"/api/v1/webhooks/deliveries/{args.id}/retry")
        if args.json:
            fmt.print_json(delivery)
        else:
            print(f"webhook delivery {delivery['id']} ({delivery['webhook']}) will be sent again")
        return 0
    params: dict[str, Any] = {"limit": args.limit}
    if args.status:
        params["status"] = args.status
    if args.webhook:
        params["webhook"] = args.webhook
    deliveries = api.call("GET", "/api/v1/webhooks/deliveries", params=params)["deliveries"]
    show(args, deliveries, _deliveries_table)
    return 0


def _deliveries_table(deliveries: list[dict[str, Any]]) -> str:
    rows = [
        [
            str(d["id"]),
            d["webhook"],
            d["event"],
            d["rollout"] or "-",
            d["status"],
            str(d["attempts"]),
            d["delivered_at"] or d["next_attempt_at"] or "-",
            d["last_error"] or "",
        ]
        for d in deliveries
    ]
    headers = ["id", "webhook", "event", "rollout", "status", "tries", "at", "last error"]
    return fmt.table(headers, rows)


# -- parser ----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    # --server, --token, --json, --request-timeout before the command or after it.
    common = argparse.ArgumentParser(add_help=False)
    options.add_connection_options(common, defaults=False)

    parser = argparse.ArgumentParser(
        prog="rollout", description="Progressive rollouts with feature flags and Prometheus gates."
    )
    options.add_connection_options(parser, defaults=True)
    options.add_version(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the API, web UI and scheduler")
    serve.add_argument("--host", default=None, help="bind address (env ROLLOUT_HOST)")
    serve.add_argument("--port", type=int, default=None, help="port (env ROLLOUT_PORT)")
    serve.add_argument("--database-url", default=None, help="env ROLLOUT_DATABASE_URL")
    serve.add_argument(
        "--apply",
        action="append",
        metavar="FILE",
        help="apply this plan file at start (repeatable; idempotent)",
    )
    serve.add_argument(
        "--upgrade-db",
        action="store_true",
        help="upgrade a database schema that is behind this version (env ROLLOUT_DB_UPGRADE)",
    )

    db = sub.add_parser("db", help="database schema: upgrade, current, check")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    for name, text in (
        ("upgrade", "create or upgrade the schema to this version's (head)"),
        ("current", "print the schema revision the database is at"),
        ("check", "exit 0 when the schema is at head, 1 when it is not"),
    ):
        db_sub.add_parser(name, help=text).add_argument(
            "--database-url", default=None, help="env ROLLOUT_DATABASE_URL"
        )
    db_sub.add_parser(
        "revision", help="developers: write the next migration from the table models"
    ).add_argument("-m", "--message", required=True, help="what the migration changes")

    demo = sub.add_parser(
        "demo",
        help="run a whole rollout on embedded defaults: controller, demo service, Prometheus",
        description="Start the controller, a demo service and Prometheus, apply the "
        "memory-layer runbook in seconds and run it. Keys: e toggles errors on the new "
        "side, q quits. When the rollout has ended it stays up (UI, API, Prometheus) "
        "until q, --timeout or a signal. Exit 0 when the run ends as expected: completed "
        "without injected errors, rolled back with them; or on q before it ends.",
    )
    demo.add_argument(
        "--port",
        type=int,
        default=8080,
        help="controller port; 0: any free port; if taken, a free one (default %(default)s)",
    )
    demo.add_argument(
        "--metrics-port", type=int, default=0, help="demo service /metrics port (default any)"
    )
    demo.add_argument(
        "--inject-errors-at",
        metavar="STEP",
        default=None,
        help="inject errors on the new side once the rollout reaches this step "
        "(1-based number, or a stage name such as graduated)",
    )
    demo.add_argument(
        "--no-input",
        action="store_true",
        help="do not read keys from stdin (then the demo ends with the rollout, unless --stay)",
    )
    demo.add_argument(
        "--stay",
        action="store_true",
        help="stay up after the rollout ends until --timeout or a signal, also with --no-input",
    )
    demo.add_argument(
        "--timeout",
        type=float,
        default=900.0,
        help="end the demo after SECONDS, staying up included (default 900)",
    )

    bt = sub.add_parser(
        "backtest",
        help="replay a plan's gates over Prometheus history; print what it would have done",
        description="Walk the checks the controller would have made from --from to --to, "
        "reading each gate as of that instant, through the same decide(); print each "
        "transition. Reads Prometheus only (ROLLOUT_PROMETHEUS_URL or --prometheus): no "
        "server, no token, nothing changed. Exit 0 walked, 1 a gate query failed, 2 bad "
        "input, 3 Prometheus unreachable.",
    )
    bt.add_argument("-f", "--file", required=True, help="plan file (YAML), or - for stdin")
    bt.add_argument(
        "--from",
        dest="start",
        required=True,
        metavar="T",
        help="first check: RFC 3339 (2026-11-30T14:00:00Z), now, or relative (-7d, now-6h)",
    )
    bt.add_argument("--to", dest="end", default="now", metavar="T", help="last (default now)")
    bt.add_argument(
        "--step", type=int, default=1, metavar="N", help="start at step N (1-based; default 1)"
    )
    bt.add_argument("--approve", action="store_true", help="assume each approval granted at once")
    bt.add_argument("-v", "--verbose", action="store_true", help="print every hold too")
    bt.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print the timeline as JSON"
    )
    bt.add_argument("--prometheus", default=None, metavar="URL", help="env ROLLOUT_PROMETHEUS_URL")

    apply = sub.add_parser("apply", parents=[common], help="create or update a rollout from a plan")
    apply.add_argument(
        "-f",
        "--file",
        required=True,
        help="plan file (YAML), - for stdin, or a directory: each *.yaml/*.yml in name "
        "order, stopping at the first refused",
    )
    apply.add_argument(
        "--dry-run",
        action="store_true",
        help="run every check of the apply (gate queries with Prometheus too); change nothing",
    )
    apply.add_argument("--reason", default="", help="why (kept with the plan revision)")

    df = sub.add_parser(
        "diff",
        parents=[common],
        help="what a plan file would change against the stored plan",
        description="Exit 0 when the plan changes nothing, 1 when it changes something "
        "(like diff), 2 when it cannot tell, 3 when the server is unreachable.",
    )
    df.add_argument("-f", "--file", required=True, help="plan file (YAML), or - for stdin")

    hi = sub.add_parser("history", parents=[common], help="a rollout's applied plans")
    hi.add_argument("name")
    hi.add_argument(
        "revision", nargs="?", type=int, help="show this revision: its source and changes"
    )

    status = sub.add_parser("status", parents=[common], help="show rollouts, or one in detail")
    status.add_argument("name", nargs="?")
    status.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="LABEL=VALUE",
        help="only rollouts whose plan has this label (repeatable, all must hold)",
    )
    status.add_argument(
        "-w", "--watch", action="store_true", help="a live view until the rollout ends (Ctrl-C)"
    )
    status.add_argument(
        "--interval", type=positive_seconds, default=2.0, metavar="SECONDS",
        help="with --watch: seconds between looks (default 2)",
    )  # fmt: skip

    wait_command.configure(
        sub.add_parser(
            "wait",
            parents=[common],
            help="wait until a rollout reaches a status (CI): exit 0 reached, 4 timeout, "
            "5 ended otherwise",
        )
    )

    for action in ACTIONS:
        p = sub.add_parser(action, parents=[common], help=f"{action} a rollout")
        p.add_argument("name")
        p.add_argument("--reason", default="", help="why (goes into the audit log)")
        p.add_argument(
            "--version",
            type=int,
            default=None,
            help="refuse if the rollout is no longer at this version",
        )
        if action == "advance":
            p.add_argument(
                "--force",
                action="store_true",
                help="advance even while a gate is at rollback/abort, or (admins) a freeze "
                "holds the rollout (recorded)",
            )
        if action == "approve":
            p.add_argument(
                "--force",
                action="store_true",
                help="admins: approve even while a freeze holds the rollout (recorded)",
            )
        if action == "rollback":
            p.add_argument(
                "--immediate",
                action="store_true",
                help="straight to the first step instead of stepping back",
            )
        p.set_defaults(action=action)

    ev = sub.add_parser("eval", parents=[common], help="evaluate a flag for a user")
    ev.add_argument("flag")
    ev.add_argument("--key", help="targeting key (the user's pseudonym)")
    ev.add_argument("--attr", action="append", metavar="NAME=VALUE", help="context attribute")

    gh = sub.add_parser("gates", parents=[common], help="a rollout's gate readings and history")
    gh.add_argument("name")
    gh.add_argument("--gate", help="one gate only")
    gh.add_argument("--limit", type=int, default=20)

    tg = sub.add_parser(
        "test-gate", parents=[common], help="read a rollout's gates now; say what would happen"
    )
    tg.add_argument("name")
    tg.add_argument("--gate", help="one gate only (any gate of the plan)")

    au = sub.add_parser(
        "audit",
        parents=[common],
        help="show the audit log, or verify its hash chain (audit verify)",
    )
    au.add_argument(
        "audit_command",
        nargs="?",
        choices=["verify"],
        metavar="verify",
        help="check the hash chain instead: exit 0 when intact, 1 when broken",
    )
    au.add_argument("--rollout")
    au.add_argument("--flag")
    au.add_argument("--limit", type=int, default=50)

    fl = sub.add_parser("flag", parents=[common], help="list, show, put, enable or disable flags")
    fl_sub = fl.add_subparsers(dest="flag_command", required=True)
    fl_sub.add_parser("list", parents=[common])
    fl_sub.add_parser("show", parents=[common]).add_argument("key")
    put = fl_sub.add_parser("put", parents=[common], help="create or replace from a JSON file")
    put.add_argument("key")
    put.add_argument("-f", "--file", required=True)
    for switch in ("enable", "disable"):
        sp = fl_sub.add_parser(switch, parents=[common])
        sp.add_argument("key")
        sp.add_argument("--reason", default="")

    tk = sub.add_parser("token", parents=[common], help="manage API tokens (admin)")
    tk_sub = tk.add_subparsers(dest="token_command", required=True)
    create = tk_sub.add_parser("create", parents=[common])
    create.add_argument("name")
    create.add_argument(
        "--role", required=True, choices=["viewer", "operator", "admin", "sdk", "alerts"]
    )
    create.add_argument(
        "--expires", metavar="DURATION", help="refused after this long, e.g. 90d (default never)"
    )
    tk_sub.add_parser("list", parents=[common])
    tk_sub.add_parser("revoke", parents=[common]).add_argument("id")

    wh = sub.add_parser("webhooks", parents=[common], help="webhook deliveries: list, retry")
    wh_sub = wh.add_subparsers(dest="webhooks_command", required=True)
    wl = wh_sub.add_parser("list", parents=[common], help="deliveries, newest first")
    wl.add_argument("--status", choices=["pending", "dead", "delivered"])
    wl.add_argument("--webhook", help="one webhook only")
    wl.add_argument("--limit", type=int, default=50)
    wh_sub.add_parser(
        "retry", parents=[common], help="send a dead delivery again now (admin)"
    ).add_argument("id", type=int)

    sub.add_parser(
        "delete", parents=[common], help="delete a finished rollout (admin)"
    ).add_argument("name")
    freeze_commands.add_parsers(sub, common)
    return parser


HANDLERS = {
    "apply": cmd_apply,
    "diff": plan_commands.cmd_diff,
    "history": plan_commands.cmd_history,
    "status": cmd_status,
    "wait": wait_command.wait,
    "eval": cmd_eval,
    "audit": cmd_audit,
    "gates": cmd_gates,
    "test-gate": cmd_test_gate,
    "flag": cmd_flag,
    "token": cmd_token,
    "delete": cmd_delete,
    "webhooks": cmd_webhooks,
    **dict.fromkeys(ACTIONS, cmd_action),
    **freeze_commands.HANDLERS,
}


def _attach_times(argv: Sequence[str]) -> list[str]:
    """``--from -7d`` as ``--from=-7d``: argparse takes a value starting with ``-`` for
    an option, and relative times are written that way."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in ("--from", "--to") and arg.startswith("-"):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> NoReturn:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "backtest" in argv:
        argv = _attach_times(argv)
    args = build_parser().parse_args(argv)
    guarded(lambda: run(args))


def run(args: argparse.Namespace) -> int:
    if args.command == "serve":
        return cmd_serve(args)
    if args.command == "demo":
        return cmd_demo(args)
    if args.command == "db":
        return cmd_db(args)
    if args.command == "backtest":
        return cmd_backtest(args)
    token = args.token or os.environ.get("ROLLOUT_TOKEN")
    if not token:
        raise CliError("no API token: pass --token or set ROLLOUT_TOKEN", 2)
    api = Api(args.server, token, timeout=args.request_timeout)
    return HANDLERS[args.command](args, api)
