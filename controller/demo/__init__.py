"""``rollout demo``: the controller, a demo service, a real Prometheus and the runbook
plan in seconds, run together in one process (see ``controller.demo.runner``)."""
