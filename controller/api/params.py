"""Path and query parameters the routes share, bounded to what the database can hold,
so a value it would choke on is a 422 naming the parameter rather than a 500."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

# A database integer column (and id) is a signed 64-bit integer; SQLite raises an
# overflow on anything bigger.
MAX_DB_INT = 2**63 - 1
# PostgreSQL text cannot hold NUL (0x00), not even in a WHERE clause.
NO_NUL = r"^[^\x00]*$"

PathText = Annotated[str, Path(pattern=NO_NUL)]
QueryText = Annotated[str | None, Query(pattern=NO_NUL)]
