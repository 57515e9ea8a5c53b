"""Alembic environment: run with the engine the service uses."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from commcredits.store.tables import metadata

config = context.config
connection = config.attributes.get("connection")


def run() -> None:
    if connection is not None:
        context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(
        config.get_main_option("sqlalchemy.url") or "sqlite:///data/commcredits.db"
    )
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run()
