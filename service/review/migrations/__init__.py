"""Alembic migrations of the review database; ``database.migrate`` runs them."""
