"""Test fixtures: every database test runs on SQLite and on a real PostgreSQL
server (a throwaway cluster this session starts)."""

from __future__ import annotations

import itertools
import os
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from commcredits.api.app import create_app
from commcredits.config import Settings, sqlalchemy_url
from tests.support import pg

OPERATOR_TOKEN = "test-operator-token"
BACKENDS = ["sqlite", "postgres"]
_database_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[pg.Cluster | None]:
    if os.environ.get("COMMCREDITS_TEST_PG_URL"):
        yield None
        return
    cluster = pg.start_cluster()
    try:
        yield cluster
    finally:
        if cluster is not None:
            cluster.stop()


def fresh_database_url(backend: str, pg_cluster: pg.Cluster | None) -> str:
    """A new, empty database of the given backend."""
    if backend == "sqlite":
        directory = tempfile.mkdtemp(prefix="commcredits-test-")
        return f"sqlite:///{directory}/commcredits.db"
    external = os.environ.get("COMMCREDITS_TEST_PG_URL")
    if external:
        return external
    if pg_cluster is None:
        pytest.fail("PostgreSQL is not installed: run `make test`, which installs it")
    return pg_cluster.create_database(f"cc_{next(_database_counter)}_{uuid.uuid4().hex[:6]}")


def make_settings(database_url: str, **overrides: Any) -> Settings:
    env = {
        "COMMCREDITS_DATABASE_URL": database_url,
        "COMMCREDITS_OPERATOR_TOKEN": OPERATOR_TOKEN,
        "COMMCREDITS_BACKGROUND_WORKERS": "0",
    }
    env.update({k: str(v) for k, v in overrides.items()})
    return Settings.from_env(env)


@pytest.fixture(scope="session", params=BACKENDS)
def backend_url(request: pytest.FixtureRequest, pg_cluster: pg.Cluster | None) -> str:
    """One database per backend for the whole session; tests isolate themselves by tenant."""
    return fresh_database_url(request.param, pg_cluster)


@pytest.fixture(scope="session")
def app(backend_url: str) -> Any:
    return create_app(make_settings(backend_url))


@pytest.fixture()
def client(app: Any) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture()
def engine(app: Any) -> Any:
    return app.state.ctx.engine


def sqlalchemy_of(url: str) -> str:
    return sqlalchemy_url(url)


@pytest.fixture(scope="session")
def live_server(backend_url: str) -> Iterator[Any]:
    """A real `commcredits serve` process on the session's database."""
    from tests.support.server import ServerProcess

    server = ServerProcess(
        database_url=backend_url,
        operator_token=OPERATOR_TOKEN,
        extra_env={"COMMCREDITS_BACKGROUND_WORKERS": "0"},
    ).start()
    try:
        yield server
    finally:
        server.stop()
