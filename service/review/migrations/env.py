"""Alembic's entry point: migrates the engine that ``database.migrate`` hands over (no alembic.ini)."""

from alembic import context

from flexguard.service.review.tables import Base

engine = context.config.attributes["engine"]
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
