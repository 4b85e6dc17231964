"""The background loops: the scheduler and the snapshot refresh."""
