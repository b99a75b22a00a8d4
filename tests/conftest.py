"""Shared fixtures: databases (SQLite and the Postgres server at 127.0.0.1:5432), shared data, tools."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.tools import DCMTK, require_tool  # noqa: F401  (the fixtures' and tests' one import place)

SHARED_DATA = Path(os.environ.get("DICOMNODE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
POSTGRES_ADMIN_URL = os.environ.get("DICOMNODE_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def shared_data(*parts: str) -> Path:
    """A path in ../shared/data; the test is skipped, saying why, when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared test data not found at {path}")
    return path


def _postgres_database() -> Iterator[str]:
    import sqlalchemy as sa

    try:
        admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        with admin.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as exc:  # any connection failure means: no server here
        pytest.skip(f"no Postgres server reachable at {POSTGRES_ADMIN_URL}: {exc}")
    name = f"dicomnode_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.engine.make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: SQLite in tmp_path, or a new database on the Postgres server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'node.sqlite3'}"
    else:
        yield from _postgres_database()


# The Orthanc PACS fixture, for every test folder.
from tests.support.orthanc import orthanc  # noqa: E402, F401
