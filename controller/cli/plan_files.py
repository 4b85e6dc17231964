"""``rollout apply -f FILE|DIR|-``: one plan file, stdin, or every ``*.yaml`` and
``*.yml`` in a directory (not its subdirectories) in name order. A directory stops
at the first file the server refuses (or that cannot be read): the files before it
are applied and reported, the refused one says why, the rest are named as not tried.
Each file is applied whole or not at all, as the server does."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from controller.cli import format as fmt
from controller.cli.exits import OK, UNREACHABLE, USAGE, CliError
from controller.cli.transport import Api

PLAN_SUFFIXES = (".yaml", ".yml")


def read_text(name: str) -> str:
    """A plan file's text, or stdin's for ``-``; a clear error if unreadable or not UTF-8."""
    try:
        data = sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {name}: {exc.strerror or exc}", USAGE) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CliError(
            f"cannot read {name}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
            f"{exc.start}); save it as UTF-8",
            USAGE,
        ) from None


def files_in(directory: Path) -> list[Path]:
    found = sorted(
        p for p in directory.iterdir() if p.suffix.lower() in PLAN_SUFFIXES and p.is_file()
    )
    if not found:
        raise CliError(f"{directory}: no *.yaml or *.yml files in it", USAGE)
    return found


def is_directory(name: str) -> bool:
    return name != "-" and Path(name).is_dir()


def apply(args: argparse.Namespace, api: Api) -> int:
    def apply_file(name: str) -> dict[str, Any]:
        return apply_one(api, name, read_text(name), args.dry_run)

    if is_directory(args.file):
        return apply_directory(
            args,
            Path(args.file),
            apply_file,
            lambda name, body: outcome(name, body, args.dry_run),
        )
    body = apply_file(args.file)
    if args.json:
        fmt.print_json(body)
    else:
        print(outcome(args.file, body, args.dry_run))
    return OK


def apply_directory(
    args: argparse.Namespace,
    directory: Path,
    apply_file: Callable[[str], dict[str, Any]],
    describe: Callable[[str, dict[str, Any]], str],
) -> int:
    """``apply_file(name)`` reads and applies one file (raising ``CliError`` when it
    cannot); ``describe(name, body)`` is the line ``apply -f FILE`` prints for it."""
    files = files_in(directory)
    done: list[dict[str, Any]] = []
    for i, path in enumerate(files):
        try:
            body = apply_file(str(path))
        except CliError as exc:
            rest = [p.name for p in files[i + 1 :]]
            raise CliError(
                f"{exc}\nstopped at {path.name}: {i} of {len(files)} files applied before it"
                + (f"; not tried: {', '.join(rest)}" if rest else ""),
                exc.exit_code,
            ) from None
        if not args.json:
            line = describe(str(path), body)
            # The dry-run line names its file already; an applied one names its rollout.
            print(line if line.startswith(str(path)) else f"{path}: {line}", flush=True)
        done.append({"file": str(path), **body})
    if args.json:
        fmt.print_json(done)
    return OK


def apply_one(api: Api, name: str, text: str, dry_run: bool) -> dict[str, Any]:
    params = {"dry_run": "true"} if dry_run else None
    try:
        body: dict[str, Any] = api.call("POST", "/api/v1/plans", json={"yaml": text}, params=params)
    except CliError as exc:
        if exc.exit_code == UNREACHABLE:
            raise  # no answer (or not the controller's): whether it applied is unknown
        raise CliError(f"{name}: plan rejected, nothing applied\n{exc}", exc.exit_code) from None
    return body


def outcome(name: str, body: dict[str, Any], dry_run: bool) -> str:
    if dry_run:
        return f"{name}: valid ({len(body['plan']['steps'])} steps)"
    rollout = body["rollout"]
    changes = f" ({', '.join(body['changes'])})" if body["outcome"] == "updated" else ""
    return f"rollout/{rollout['name']} {body['outcome']}{changes}"
