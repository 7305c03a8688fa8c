"""The review database's migrations, on SQLite and PostgreSQL: an empty database is brought to the
newest schema, which matches the code's tables exactly; a database at the previous schema, with data
in it, is upgraded without losing any."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from flexguard.service.review.database import alembic_config, current_revision, migrate, open_database, table_names
from flexguard.service.review.tables import Base

REVISIONS = ["0001", "0002", "0003", "0004", "0005"]
FIRST, NEWEST = REVISIONS[0], REVISIONS[-1]


def test_the_revisions_are_one_line_from_the_first_to_the_newest():
    scripts = ScriptDirectory.from_config(alembic_config(open_database("sqlite://")))
    assert scripts.get_heads() == [NEWEST]
    assert [r.revision for r in scripts.walk_revisions()] == REVISIONS[::-1]


def test_an_empty_database_is_migrated_to_exactly_the_code_s_tables(database_url):
    engine = open_database(database_url)
    assert current_revision(engine) is None
    migrate(engine)
    assert current_revision(engine) == NEWEST
    assert table_names(engine) == set(Base.metadata.tables) | {"alembic_version"}
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []
    migrate(engine)  # again, as every service start does: nothing to do
    assert current_revision(engine) == NEWEST


def test_a_database_at_the_previous_schema_is_upgraded_with_its_data(database_url):
    engine = open_database(database_url)
    migrate(engine, FIRST)
    now = "2026-11-01 08:00:00+00:00"
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO units (id, name, created_at) VALUES ('dinkes', 'Dinas Kesehatan', :t)"), {"t": now})
        connection.execute(text(
            "INSERT INTO api_keys (id, prefix, digest, role, unit_id, label, created_at) "
            "VALUES (1, 'fgr_submit_abcdefgh', :d, 'submit', 'dinkes', 'tool', :t)"), {"d": "a" * 64, "t": now})
        connection.execute(text(
            "INSERT INTO submissions (id, unit_id, key_id, account, caption, status, risk, model_name, model_version, "
            "review_threshold, block_threshold, request_digest, created_at) VALUES ('sub_old', 'dinkes', 1, '@ani', "
            "'Lama', 'pending', 0.9, 'flexguard', '0.1.0', 0.5, 0.9, :d, :t)"), {"d": "b" * 64, "t": now})
    assert "webhook_deliveries" not in table_names(engine)
    migrate(engine)
    assert current_revision(engine) == NEWEST
    with engine.connect() as connection:
        key = connection.execute(text("SELECT prefix, webhook_url FROM api_keys")).one()
        submission = connection.execute(text("SELECT id, status, caption, model_weights_sha256 FROM submissions")).one()
    assert tuple(key) == ("fgr_submit_abcdefgh", None)
    # which weights scored a submission from before 0003 was never recorded: null, not a guess
    assert tuple(submission) == ("sub_old", "pending", "Lama", None)
    assert "webhook_deliveries" in table_names(engine)
