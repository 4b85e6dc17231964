"""The options every server command takes, accepted before the command name as well
as after it: ``rollout --server URL status`` and ``rollout status --server URL``.

argparse copies a subcommand's defaults over what the main parser already parsed,
so the subcommands' copies default to ``SUPPRESS`` (set only when given there) and
the main parser's copies hold the real defaults.
"""

from __future__ import annotations

import argparse
import os
from importlib import metadata

from controller.cli.transport import DEFAULT_TIMEOUT

DEFAULT_SERVER = "http://127.0.0.1:8080"
DISTRIBUTION = "rollout-controller"


def package_version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text!r}")
    return value


def _environment_timeout() -> float:
    text = os.environ.get("ROLLOUT_REQUEST_TIMEOUT")
    if not text:
        return DEFAULT_TIMEOUT
    try:
        return positive_seconds(text)
    except argparse.ArgumentTypeError:
        return DEFAULT_TIMEOUT  # checked again, with a message, in main


def add_connection_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """``defaults``: the main parser's copy; the subcommands' copies default to SUPPRESS."""

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument(
        "--server",
        default=default(os.environ.get("ROLLOUT_SERVER", DEFAULT_SERVER)),
        help=f"controller URL (env ROLLOUT_SERVER; default {DEFAULT_SERVER})",
    )
    parser.add_argument("--token", default=default(None), help="API token (env ROLLOUT_TOKEN)")
    parser.add_argument(
        "--json", action="store_true", default=default(False), help="print the server's JSON"
    )
    parser.add_argument(
        "--request-timeout",
        type=positive_seconds,
        default=default(_environment_timeout()),
        metavar="SECONDS",
        help=f"give up on a request after this long (env ROLLOUT_REQUEST_TIMEOUT; "
        f"default {DEFAULT_TIMEOUT:g})",
    )


def add_version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--version", action="version", version=f"rollout {package_version()}",
        help="print the version of rollout-controller and exit",
    )  # fmt: skip
