"""Alembic migration scripts for the controller's tables, run by ``controller.storage.migrate``.

A package (not a loose folder) so that ``pip install .`` carries the scripts along."""
