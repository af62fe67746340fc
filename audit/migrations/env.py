"""Alembic environment for the audit store; the connection comes from `flotilla.audit.migrate`."""

from alembic import context

from flotilla.audit.schema import VERSION_TABLE, metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, version_table=VERSION_TABLE, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
