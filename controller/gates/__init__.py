"""Gates: the Prometheus source and the stored history of what it read."""
