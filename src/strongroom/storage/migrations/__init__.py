"""Alembic's environment for the metadata database, shipped inside the package.

`env.py` runs the revisions in `versions/` on the connection that
`strongroom.storage.migrate` hands it; there is no alembic.ini (the Alembic
`Config` is built in code). Start-up and `strongroom db upgrade` are the only
callers: they hold the migration lock that keeps two processes from migrating
one database at once.

Writing a revision: add `versions/NNNN_what_changes.py` with `down_revision`
set to the previous head, spell every operation out (never
`metadata.create_all`), and change `_schema.py` to match. Make ALTERs with
`op.batch_alter_table`: SQLite can only add columns in place, so Alembic
rebuilds its tables instead (with foreign keys off, see `migrate`), while
PostgreSQL gets plain ALTER statements from the same file.
`tests/storage/test_migrations.py` compares the migrated schema with
`_schema.metadata` on both databases and fails until they agree.
"""
