"""The results store: photos and their job queue, the model registry, and what daemons coordinate.

    store = Store.open("sqlite:///qa-daemon.sqlite3")   # migrates to the newest schema
    store.queue.add_photo(identified)                    # daemon/store/queue.py
    store.models.promote("compact-v2")                   # daemon/store/registry.py
    store.runs.claim("daily_report", "2026-11-30", w)    # daemon/store/runs.py

Tables and statuses are in `schema.py`, the engine, migrations and the SQLite lock in `engine.py`,
the check for a network filesystem in `fs.py`, the online backup in `backup.py`. SQLite runs in WAL
mode, so readers (status, reports, history) never block the daemon's writes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import sessionmaker

from daemon.store.engine import StoreError, StoreLock, make_engine, migrate, redact, sqlite_path, worker_name
from daemon.store.fs import network_fs
from daemon.store.queue import Queue
from daemon.store.records import Added, Claimed, DetectionResult, Identified, PhotoResult
from daemon.store.registry import Registry
from daemon.store.runs import Runs
from daemon.store.schema import (
    Base,
    Detection,
    Failure,
    FailureStage,
    Job,
    JobStatus,
    ModelStatus,
    ModelVersion,
    Photo,
    RetrainStatus,
    utcnow,
)

if TYPE_CHECKING:
    from daemon.config_sections import StoreConfig

__all__ = ["Added", "Base", "Claimed", "Detection", "DetectionResult", "Failure", "FailureStage", "Identified",
           "Job", "JobStatus", "ModelStatus", "ModelVersion", "Photo", "PhotoResult", "RetrainStatus", "Store",
           "StoreError", "StoreLock", "redact", "sqlite_path", "utcnow", "worker_name"]


class Store:
    """An open store: `queue`, `models` and `runs`, sharing one engine; thread-safe."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.url = redact(str(engine.url))
        session = sessionmaker(engine.execution_options(writer=True), expire_on_commit=False)
        self.reader = sessionmaker(engine, expire_on_commit=False)  # read-only queries (summaries, history)
        self.queue = Queue(session, self.reader)
        self.models = Registry(session, self.reader)
        self.runs = Runs(session, self.reader)

    @classmethod
    def open(cls, url: str, migrate_schema: bool = True, synchronous: str = "full",
             allow_network_fs: bool = False) -> Store:
        """The store at `url`, migrated to the newest schema unless `migrate_schema` is False.

        SQLite only: `synchronous` is its PRAGMA synchronous on every connection (config
        `store.synchronous`); unless `allow_network_fs` (config `store.allow_network_fs`), a store whose folder
        is on a network filesystem is refused. `from_config` opens the store a config names."""
        path = sqlite_path(url)
        if path is not None and not allow_network_fs and (fs := network_fs(path.parent)):
            raise StoreError(f"store.url: {path} is on a network filesystem ({fs}), where SQLite's locking is "
                             "unsafe; use a local path or PostgreSQL (or set store.allow_network_fs: true)")
        engine = make_engine(url, synchronous)
        try:
            if migrate_schema:
                migrate(engine)
            else:  # a clear message now, rather than a traceback at the first query
                with engine.connect():
                    pass
        except SQLAlchemyError as exc:
            raise StoreError(f"store.url: cannot open {redact(url)} ({getattr(exc, 'orig', exc)}); "
                             "check the URL, the server and the permissions") from None
        return cls(engine)

    @classmethod
    def open_existing(cls, url: str, synchronous: str = "full", allow_network_fs: bool = False) -> Store:
        """A store for reading (status, reports, history); a clear error when none was written yet."""
        path = sqlite_path(url)
        if path is not None and not path.exists():
            raise StoreError(f"store.url: {path} does not exist yet, so nothing was processed with this config; "
                             "start the daemon with `qa-daemon run`, or pass --store")
        return cls.open(url, migrate_schema=False, synchronous=synchronous, allow_network_fs=allow_network_fs)

    @classmethod
    def from_config(cls, config: StoreConfig, create: bool = True) -> Store:
        """The store config `store:` names, with its SQLite level and network-filesystem rule; without
        `create` it must exist already (what status, reports and history read)."""
        if create:
            return cls.open(config.url, synchronous=config.synchronous, allow_network_fs=config.allow_network_fs)
        return cls.open_existing(config.url, config.synchronous, allow_network_fs=config.allow_network_fs)

    def close(self) -> None:
        self.engine.dispose()
