"""Opening the review database (SQLite by default, PostgreSQL by URL) and bringing its schema up to date.

SQLite is set up for a service with several threads writing: write-ahead logging (readers never wait
for the writer), a busy timeout, foreign keys on, and every writing transaction begun ``IMMEDIATE`` so
two writers queue for the lock at the start instead of one failing half-way; a connection marked
``READ_ONLY`` (the store's reads) begins ``DEFERRED`` and takes no write lock. PostgreSQL needs nothing
special: a decision is a conditional UPDATE, which its row locks make exact.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    InterfaceError,
    NoSuchModuleError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

DEFAULT_DATABASE_URL = "sqlite:///flexguard.db"
# How long a request waits for the database before it is answered 503 (database_unavailable): for SQLite,
# the wait for another writer's lock (our own transactions hold it for milliseconds, so only a stuck
# process or a backup holds it this long); for PostgreSQL, the wait for a connection to the server.
DEFAULT_DATABASE_TIMEOUT_S = 10.0
# The psycopg 3 driver, which the `postgres` extra installs; a bare postgresql:// URL would ask for psycopg2.
POSTGRES_DRIVER = "postgresql+psycopg"
# The execution option that marks a connection as only reading (see the module docstring).
READ_ONLY = "flexguard_read_only"


class DatabaseError(Exception):
    """The database cannot be opened or migrated; the message says why, in one line."""


def _normalised_url(url: str):
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseError(f"not a database URL: {url!r} (e.g. sqlite:///flexguard.db or postgresql://user@host/db)") from None
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername=POSTGRES_DRIVER)
    return parsed


def open_database(url: str, timeout_s: float = DEFAULT_DATABASE_TIMEOUT_S) -> Engine:
    """An engine for ``url``; nothing is connected until first use.

    After a database restart the pool's old connections are dead: ``pool_pre_ping`` finds that out
    before a request uses one and connects afresh, so the service recovers by itself.
    """
    parsed = _normalised_url(url)
    try:
        if parsed.get_backend_name() == "sqlite":
            engine = create_engine(parsed, connect_args={"timeout": timeout_s, "check_same_thread": False})
            _configure_sqlite(engine)
        elif parsed.get_backend_name() == "postgresql":
            # libpq takes whole seconds, at least 2 (it treats 1 as 2).
            seconds = max(2, round(timeout_s))
            engine = create_engine(parsed, pool_pre_ping=True, pool_timeout=timeout_s,
                                   connect_args={"connect_timeout": seconds})
        else:
            raise DatabaseError(f"unsupported database {parsed.get_backend_name()!r}: use sqlite:/// or postgresql://")
    except NoSuchModuleError:
        raise DatabaseError(f"no driver for {parsed.drivername}: PostgreSQL needs pip install 'flexguard[postgres]'") from None
    except ModuleNotFoundError as missing:
        raise DatabaseError(f"no driver for {parsed.drivername} ({missing.name}): pip install 'flexguard[postgres]'") from None
    return engine


# What SQLite says when another connection held its lock past the busy timeout.
SQLITE_LOCKED_MESSAGES = ("database is locked", "database is busy")


def is_unavailable(error: BaseException) -> bool:
    """Whether ``error`` means the database could not be reached or used for now (a restart, a dropped
    connection, a lock held past the timeout), as opposed to a fault in our own statements. A transaction
    that fails this way changed nothing, so the request can be retried as it was."""
    if isinstance(error, (PoolTimeout, InterfaceError)):
        return True
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    if isinstance(error, OperationalError):
        # psycopg raises OperationalError only for the connection and the server's state (refused, closed,
        # shutting down); SQLite raises it for its own SQL errors too ("no such table"), so only its lock counts.
        if type(error.orig).__module__.startswith("psycopg"):
            return True
        return any(text in str(error.orig) for text in SQLITE_LOCKED_MESSAGES)
    return False


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" below open transactions, not the sqlite3 module's implicit ones.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        if engine.url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode = WAL")
        # FULL: a committed submission survives a power cut, not only a killed process.
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection: Any) -> None:
        reading = connection.get_execution_options().get(READ_ONLY, False)
        connection.exec_driver_sql("BEGIN DEFERRED" if reading else "BEGIN IMMEDIATE")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    # expire_on_commit=False: objects read in a transaction stay readable after it, to build answers.
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(files("flexguard.service.review") / "migrations"))
    config.attributes["engine"] = engine
    return config


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (default: the newest); safe to run on every start."""
    try:
        command.upgrade(alembic_config(engine), revision)
    except OperationalError as error:
        why = " ".join(str(error.orig).split())  # one line: drivers' messages span several
        raise DatabaseError(f"cannot open the review database {engine.url.render_as_string()}: {why}") from None


def require_existing(engine: Engine) -> None:
    """Refuse a database that holds no review schema yet (a SQLite file that does not exist included),
    so that a command run from the wrong folder or with the wrong URL says so instead of quietly making
    an empty database of its own."""
    url = engine.url.render_as_string()
    create = "run `flexguard admin migrate` to create it there (or add --create), or give the service's database"
    if engine.url.get_backend_name() == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        path = Path(engine.url.database).resolve()
        if not path.is_file():
            raise DatabaseError(f"no review database at {url} (looked for {path}): {create} with --database or "
                                "FLEXGUARD_DATABASE_URL")
    try:
        revision = current_revision(engine)
    except SQLAlchemyError as error:
        raise DatabaseError(f"cannot open the review database {url}: {error.__class__.__name__}") from None
    if revision is None:
        raise DatabaseError(f"{url} holds no flexguard review database yet: {create}")


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def table_names(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())
