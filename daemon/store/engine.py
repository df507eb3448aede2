"""Connecting to the store: the engine and its SQLite settings, migrations, redacted URLs, and the
one-daemon lock on a SQLite file."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from filelock import FileLock, Timeout
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError

from model.errors import QAError

MIGRATIONS = Path(__file__).parent.parent / "migrations"


class StoreError(QAError):
    """The results store cannot be opened, is locked by another daemon, or is from a newer version."""


def redact(url: str) -> str:
    """The store URL without its password (in the user part or the query, e.g. `sslpassword`), fit for logs,
    messages and status output."""
    try:
        u = make_url(url)
    except ArgumentError:
        return "(not a database URL)"  # it could be anything, a password included
    secrets = {k: "***" for k in u.query if "pass" in k.lower() and k.lower() != "passfile"}
    return u.update_query_dict(secrets).render_as_string(hide_password=True)


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL; None for other databases and in-memory SQLite."""
    u = make_url(url)
    return Path(u.database) if u.get_backend_name() == "sqlite" and u.database not in (None, "", ":memory:") else None


SYNCHRONOUS = ("off", "normal", "full", "extra")  # SQLite's levels (config store.synchronous)


def make_engine(url: str, synchronous: str = "full") -> Engine:
    """The engine of `url`. On SQLite every connection gets WAL, foreign keys, a busy timeout and
    `PRAGMA synchronous=<synchronous>`: with full, each commit is on disk before it returns (it survives
    a power cut); with normal, the last commits before a power cut may be lost, never corrupted."""
    if synchronous not in SYNCHRONOUS:
        raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS)}, not {synchronous!r}")
    try:
        u: URL = make_url(url)
    except ArgumentError:
        raise StoreError(f"store.url is not a database URL (it begins {url.split(':', 1)[0][:20]!r}); "
                         "use e.g. sqlite:///qa-daemon.sqlite3") from None
    if u.get_backend_name() == "sqlite":
        path = sqlite_path(url)
        if path is not None and not path.parent.is_dir():
            raise StoreError(f"store.url: folder {path.parent} does not exist; create it or change the URL")
        engine = create_engine(u, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(conn, _record):  # every connection: WAL so readers never block the writer
            conn.isolation_level = None  # transactions are begun below, not by the driver
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute(f"PRAGMA synchronous={synchronous.upper()}")  # checked against SYNCHRONOUS above
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn):
            # writers take the write lock up front: a deferred transaction that reads and then writes
            # fails at once with "database is locked" when another writer got in between
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("writer") else "BEGIN")

        return engine
    try:
        return create_engine(u, pool_pre_ping=True)
    except ImportError as exc:
        raise StoreError(f"store.url: no driver for {u.drivername} ({exc}); install it") from None


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest version; an existing history is kept and converted."""
    from alembic import command
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":  # daemons starting together: one migrates, the others wait
            conn.execute(text("SELECT pg_advisory_xact_lock(7271)"))
        cfg.attributes["connection"] = conn
        try:
            command.upgrade(cfg, "head")
        except Exception as exc:  # alembic raises CommandError for a revision it does not know
            if "Can't locate revision" in str(exc):
                raise StoreError(f"store {redact(str(engine.url))} was written by a newer qa-daemon; "
                                 "upgrade qa-daemon or point store.url elsewhere") from None
            raise


class StoreLock:
    """Keeps a second daemon off a SQLite store: an OS file lock beside the database, freed if the holder dies.
    A database server (PostgreSQL) is shared by design: several daemons, each claiming its own jobs."""

    def __init__(self, url: str):
        path = sqlite_path(url)
        self.path = path.with_name(path.name + ".lock") if path else None
        self._lock = FileLock(str(self.path)) if self.path else None

    def acquire(self) -> None:
        if self._lock is None:
            return
        try:
            self._lock.acquire(timeout=2)  # `status` takes the lock for an instant to see whether it is held
        except Timeout:
            raise StoreError(f"{self.path}: another qa-daemon is running on this store; stop it first, "
                             "or give this one its own store.url") from None
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot create the store lock ({exc}); check the folder's permissions") \
                from None

    def release(self) -> None:
        if self._lock is not None and self._lock.is_locked:
            self._lock.release()

    def held_elsewhere(self) -> bool:
        """True when some daemon holds the lock right now."""
        if self._lock is None or not self.path.exists():
            return False
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            return True
        except OSError:
            return False
        self._lock.release()
        return False


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"
