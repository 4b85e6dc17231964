from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.storage.store import Store
from tests.databases import fresh_database
from tests.serving import Server, running_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("server")) as s:
        yield s


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh database with the schema, once on SQLite and once on PostgreSQL: storage
    behaviour is tested on both."""
    with fresh_database(request.param, tmp_path) as url:
        s = Store(url)
        s.create_schema()
        try:
            yield s
        finally:
            s.dispose()
