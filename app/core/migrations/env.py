"""Alembic environment: runs on the connection app.core.db.migrate hands it (or a URL)."""

from alembic import context
from sqlalchemy import Connection, create_engine

from app.core.models import Base

config = context.config
target_metadata = Base.metadata


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is None:  # plain `alembic` command line
        engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
        with engine.begin() as connection:
            _run(connection)
    else:
        _run(connection)


def _run(connection: Connection) -> None:
    # render_as_batch lets ALTERs work on SQLite too.
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


run()
