"""``rollout status NAME --watch``: a live view until the rollout ends or Ctrl-C.

On a terminal the view is redrawn in place every ``--interval`` seconds (like
``kubectl argo rollouts get rollout --watch``); into a pipe or a file it prints one
timestamped line whenever the status, step, serving, gate outcomes or reason
change, so a CI log stays short. Exit 0 once the rollout has ended (completed,
rolled back or aborted).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import TextIO

from controller.cli import format as fmt
from controller.cli.exits import OK
from controller.cli.follow import Look, looks, stamp, summary
from controller.cli.transport import Api

# Home the cursor and clear the screen: a redraw, not a scroll.
CLEAR = "\x1b[H\x1b[2J"


def watch(
    args: argparse.Namespace,
    api: Api,
    *,
    out: TextIO | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    out = out or sys.stdout
    redraw = out.isatty()
    last: str | None = None
    for look in looks(api, args.name, interval=args.interval, sleep=sleep):
        if redraw:
            out.write(CLEAR + screen(args.name, look, args.interval) + "\n")
            out.flush()
        else:
            line = summary(look)
            if line != last:
                print(f"{stamp(look.at)} {line}", file=out, flush=True)
                last = line
        if look.ended:
            return OK
    raise AssertionError("looks() never ends")  # pragma: no cover


def screen(name: str, look: Look, interval: float) -> str:
    head = f"rollout/{name}  {stamp(look.at)}  every {interval:g}s  (Ctrl-C to stop)"
    if look.rollout is None:
        return f"{head}\n\n  {summary(look)}"
    body = fmt.rollout_detail(look.rollout, look.latest)
    tail = "\n\nended: " + str(look.status) if look.ended else ""
    return f"{head}\n\n{body}{tail}"
