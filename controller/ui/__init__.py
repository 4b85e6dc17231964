"""The web UI served by ``rollout serve`` at ``/``."""

from controller.ui.routes import install

__all__ = ["install"]
