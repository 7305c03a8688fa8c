"""Supervisor review: flagged photos wait for their unit head's decision before they are posted.

``tables`` is the database schema (SQLAlchemy 2; migrations in ``migrations/``), ``database`` opens
and migrates it, ``keys`` makes and checks the per-unit keys, ``store`` is the workflow (submit,
queue, decide, purge) with its audit trail, ``webhooks`` tells upload tools the outcome, and ``api``
is the thin HTTP layer over all of it. Nothing in here but ``api`` knows about HTTP.
"""
