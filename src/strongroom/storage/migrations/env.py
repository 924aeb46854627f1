"""Run Strongroom's revisions on the connection that `migrate` opened and locked.

Alembic executes this file for every command. `strongroom.storage.migrate` puts
its connection, already inside the transaction that holds the migration lock,
in `config.attributes["connection"]`; the revisions then run in that same
transaction, so a failure leaves nothing half done on PostgreSQL and SQLite
alike (both have transactional DDL).

Alembic's own command line has nothing to run on: there is no alembic.ini and
no URL here, on purpose. Only `migrate` holds the lock and, on SQLite, turns
foreign keys off so that a batch rebuild of a parent table cannot cascade
deletes into its children.

Offline (`--sql`) mode is refused: the schema is only ever changed through a
live, locked connection.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from strongroom.storage._schema import metadata


def run_on(connection: Connection) -> None:
    """Run the pending revisions on `connection`."""
    # One revision file serves both databases, so ALTERs always go through
    # batch blocks: SQLite rebuilds the table, PostgreSQL runs plain ALTERs.
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError(
        "Strongroom's migrations run only on a live database: use "
        "'strongroom db upgrade'"
    )
_given = context.config.attributes.get("connection")
if not isinstance(_given, Connection):
    raise RuntimeError(
        "Strongroom's migrations run only through strongroom.storage.migrate "
        "(start-up or 'strongroom db upgrade'), which locks the database first"
    )
run_on(_given)
