"""``rollout wait NAME --for STATUS [--timeout 30m]``: block until a rollout reaches a
status, for CI. Exit codes (``controller.cli.exits``): 0 reached; 4 the timeout
passed first; 5 the rollout ended in another final state (completed, rolled_back,
aborted), e.g. rolled back while waiting for completed. A non-final status other
than the one waited for (paused, awaiting_approval) keeps the wait going: a person
may still resume or approve. Each change is printed as one timestamped line.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import timedelta

from controller.cli import format as fmt
from controller.cli.exits import OK, USAGE, WAIT_OTHER_END, WAIT_TIMEOUT, CliError
from controller.cli.follow import STATUSES, looks, stamp, summary
from controller.cli.options import positive_seconds
from controller.cli.transport import Api
from stages.durations import parse_duration

DEFAULT_TIMEOUT = "30m"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name")
    parser.add_argument(
        "--for",
        dest="status",
        required=True,
        choices=STATUSES,
        metavar="STATUS",
        help="the status to wait for: completed, rolled_back, paused, aborted, ...",
    )
    parser.add_argument(
        "--timeout",
        default=DEFAULT_TIMEOUT,
        metavar="DURATION",
        help=f"give up after this long: 90s, 30m, 2h (default {DEFAULT_TIMEOUT}); exit 4",
    )
    parser.add_argument(
        "--interval",
        type=positive_seconds,
        default=2.0,
        metavar="SECONDS",
        help="seconds between looks (default 2)",
    )


def timeout_of(text: str) -> timedelta:
    try:
        span = parse_duration(text)
    except ValueError as exc:
        raise CliError(f"--timeout {text!r}: {exc}", USAGE) from None
    if span <= timedelta(0):
        raise CliError(f"--timeout {text!r}: must be more than 0s", USAGE)
    return span


def wait(
    args: argparse.Namespace,
    api: Api,
    *,
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    limit = timeout_of(args.timeout).total_seconds()
    deadline = monotonic() + limit
    wanted = args.status
    last: str | None = None

    def nap(seconds: float) -> None:
        # Never sleep past the deadline: a 30m wait ends at 30m, not 30m + interval.
        sleep(max(0.0, min(seconds, deadline - monotonic())))

    for look in looks(api, args.name, interval=args.interval, sleep=nap):
        line = summary(look)
        if line != last and not args.json:
            print(f"{stamp(look.at)} {line}", flush=True)
            last = line
        if look.status == wanted:
            if args.json:
                fmt.print_json(look.rollout)
            else:
                print(f"rollout/{args.name} is {wanted}")
            return OK
        if look.ended:
            if args.json:
                fmt.print_json(look.rollout)
            raise CliError(f"rollout/{args.name} ended {look.status}, not {wanted}", WAIT_OTHER_END)
        if monotonic() >= deadline:
            raise CliError(
                f"rollout/{args.name} is still {look.status or 'unknown (server not answering)'} "
                f"after {args.timeout}; waited for {wanted}",
                WAIT_TIMEOUT,
            )
    raise AssertionError("looks() never ends")  # pragma: no cover
