"""The `rollout` command line (`commands.py`) and its output formats (`format.py`)."""

from controller.cli.commands import main

__all__ = ["main"]
