"""Alembic environment: runs on the connection handed over by :mod:`nolly_pipeline.db.migrate`."""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None, version_table="nolly_alembic_version")
with context.begin_transaction():
    context.run_migrations()
