"""One module per schema revision. Alembic skips this file; it is here so the folder
installs as a package."""
