"""`commcredits migrate`, run as a user runs it, on a fresh database of each kind."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from commcredits.config import sqlalchemy_url
from commcredits.store import tables as t
from commcredits.store.migrate import alembic_config
from tests.conftest import fresh_database_url

MIGRATE_TIMEOUT_SECONDS = 120


def migrate(database_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COMMCREDITS_DATABASE_URL": database_url}
    return subprocess.run(
        [sys.executable, "-m", "commcredits.cli", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=MIGRATE_TIMEOUT_SECONDS,
        check=False,
    )


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_migrate_brings_a_fresh_database_to_the_newest_revision(backend, pg_cluster):
    database_url = fresh_database_url(backend, pg_cluster)
    engine = create_engine(sqlalchemy_url(database_url))
    try:
        assert not inspect(engine).get_table_names()
        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        assert head
        result = migrate(database_url)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "newest revision" in result.stdout
        with engine.connect() as connection:
            revisions = connection.execute(text("SELECT version_num FROM alembic_version"))
            assert list(revisions.scalars()) == [head]
        tables = set(inspect(engine).get_table_names())
        assert set(t.metadata.tables) <= tables, set(t.metadata.tables) - tables
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM tenants")).scalar_one() == 0
    finally:
        engine.dispose()
