"""Alembic environment: the daemon passes its connection in; developers use alembic.ini beside this file."""

from alembic import context
from sqlalchemy import create_engine

from daemon.store.schema import Base

config = context.config


def _run(connection) -> None:
    # batch mode, so later migrations can alter SQLite tables (SQLite has no ALTER COLUMN)
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    with create_engine(url).begin() as conn:
        _run(conn)
