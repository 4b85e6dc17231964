"""python -m controller: the rollout command."""

from controller.cli import main

main()
