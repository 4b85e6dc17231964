"""The ``rollout`` command's exit codes, its one error type, and the guard that turns
every failure into one line on stderr and a code, never a traceback.

    0    done (wait: the rollout reached the status)
    1    the server refused or failed (its message is printed)
    2    bad usage or input (argparse, an unreadable or non-UTF-8 file, no token)
    3    the controller is unreachable: connection refused, no answer in time, or
         something that is not the controller answered (an HTML page, other JSON)
    4    wait: the timeout passed before the rollout reached the status
    5    wait: the rollout ended in another final state (e.g. rolled_back while
         waiting for completed)
    130  interrupted (Ctrl-C)
    141  the output was closed early (``rollout audit | head -1``)
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from typing import NoReturn

OK = 0
REFUSED = 1
USAGE = 2
UNREACHABLE = 3
WAIT_TIMEOUT = 4
WAIT_OTHER_END = 5
INTERRUPTED = 130
OUTPUT_CLOSED = 141  # 128 + SIGPIPE, what a shell reports for a writer killed by one

# ROLLOUT_DEBUG=1 lets an unexpected exception through with its traceback, for a bug report.
DEBUG_VARIABLE = "ROLLOUT_DEBUG"


class CliError(Exception):
    def __init__(self, message: str, exit_code: int = REFUSED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Unreachable(CliError):
    """No answer at all (connection refused, timed out): may pass, e.g. during a
    restart, so a command that follows a rollout keeps trying."""

    def __init__(self, message: str) -> None:
        super().__init__(message, UNREACHABLE)


def guarded(run: Callable[[], int]) -> NoReturn:
    """Run a command; exit with its code, or with one clear line for any failure."""
    try:
        code = run()
        sys.stdout.flush()  # a closed pipe shows here, while it can still be caught
    except CliError as exc:
        _say(str(exc))
        code = exc.exit_code
    except KeyboardInterrupt:
        code = INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        _say("output closed before everything was written (broken pipe)")
        code = OUTPUT_CLOSED
    except (KeyError, TypeError, IndexError, AttributeError) as exc:
        if os.environ.get(DEBUG_VARIABLE):
            raise
        _say(
            f"the server's answer is not what this rollout command expects ({type(exc).__name__}: "
            f"{exc}): is --server the rollout controller, and of the same version?"
        )
        code = UNREACHABLE
    except Exception as exc:
        if os.environ.get(DEBUG_VARIABLE):
            raise
        _say(f"internal error: {type(exc).__name__}: {exc} (set {DEBUG_VARIABLE}=1 to see where)")
        code = REFUSED
    sys.exit(code)


def _say(message: str) -> None:
    # If stderr is gone too, the exit code is all that is left.
    with contextlib.suppress(OSError):
        print(f"rollout: {message}", file=sys.stderr, flush=True)


def _silence_stdout() -> None:
    # Python flushes stdout once more at exit; into a closed pipe that prints
    # "Exception ignored ... BrokenPipeError". Point it at /dev/null instead.
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
