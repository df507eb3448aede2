"""The results store: tables, migrations, the durable job queue, and the one-daemon lock.

    store = Store.open("sqlite:///qa-daemon.sqlite3")   # migrates to the newest schema
    photo_id = store.add_photo(identified)               # a photo and its pending job, one transaction
    jobs = store.claim(batch_size=8, worker="host:pid")  # pending -> running
    store.complete([(job, result)], version_id)          # detections + done, one transaction

A photo is recorded as pending before any work starts, and marked done in the
same transaction that stores its detections, so a crash at any moment leaves
either no trace (the file is found again by the start-up rescan) or a job that
`recover()` puts back to pending. SQLite runs in WAL mode, so readers (status,
reports, history) never block the daemon's writes. Timestamps are naive UTC,
except `photos.captured_at`, the camera's local wall time.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    and_,
    create_engine,
    event,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from daemon.paths import safe_part
from model.errors import QAError

MIGRATIONS = Path(__file__).with_name("migrations")


class StoreError(QAError):
    """The results store cannot be opened, is locked by another daemon, or is from a newer version."""


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class JobStatus(StrEnum):
    pending = "pending"  # waiting for the processor (again, after a retryable failure)
    running = "running"  # claimed by a processor; back to pending if that process dies
    done = "done"  # results stored
    failed = "failed"  # gave up after watch.max_attempts; the file went to quarantine
    missing = "missing"  # the file vanished before it was processed (deleted, moved, share unmounted);
    # taken again when the same bytes reappear, at its path or elsewhere


class Base(DeclarativeBase):
    pass


class ModelVersion(Base):
    """A checkpoint the daemon has run; every result points at the one that produced it."""

    __tablename__ = "model_versions"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    path: Mapped[str] = mapped_column(Text)
    backend: Mapped[str] = mapped_column(String(50))
    weights_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    card: Mapped[str] = mapped_column(Text, default="{}")  # card.json as written by training
    registered_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    active: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    status: Mapped[str] = mapped_column(String(10), default="active")  # active, retired, candidate, rejected
    metrics: Mapped[str] = mapped_column(Text, default="{}")  # validation mIoU/Dice per task, from retrain
    promoted_at: Mapped[datetime | None] = mapped_column(DateTime)


class Photo(Base):
    """One photo, identified by the sha256 of its bytes."""

    __tablename__ = "photos"
    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    image_id: Mapped[str] = mapped_column(String(300))  # the stem of its mask files; unique within a site
    name: Mapped[str] = mapped_column(Text)  # the file name it arrived under
    path: Mapped[str] = mapped_column(Text)  # where the file is now (watch root, archive or quarantine)
    site: Mapped[str] = mapped_column(String(200), index=True)
    location: Mapped[str] = mapped_column(String(200))
    captured_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    captured_from: Mapped[str] = mapped_column(String(10))  # exif or mtime
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    bytes: Mapped[int] = mapped_column(BigInteger)
    first_seen_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(DateTime, index=True)
    processing_ms: Mapped[float | None] = mapped_column(Float)
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    output_dir: Mapped[str | None] = mapped_column(Text)
    overlay_path: Mapped[str | None] = mapped_column(Text)


class Job(Base):
    """The queue entry of a photo: what is left to do with it."""

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(primary_key=True)
    photo_id: Mapped[int] = mapped_column(ForeignKey("photos.id"), unique=True)
    status: Mapped[str] = mapped_column(String(10), index=True, default=JobStatus.pending)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    worker: Mapped[str | None] = mapped_column(String(200))
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Detection(Base):
    """What one prompt found in one photo, and its measurements (source pixels; mm where the site has a scale)."""

    __tablename__ = "detections"
    __table_args__ = (UniqueConstraint("photo_id", "prompt"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    photo_id: Mapped[int] = mapped_column(ForeignKey("photos.id"), index=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    task: Mapped[str] = mapped_column(String(20), index=True)
    prompt: Mapped[str] = mapped_column(String(200))
    mask_path: Mapped[str] = mapped_column(Text)
    threshold: Mapped[float] = mapped_column(Float)
    area_px: Mapped[int] = mapped_column(BigInteger)
    area_pct: Mapped[float] = mapped_column(Float)
    components: Mapped[int] = mapped_column(Integer)
    mean_confidence: Mapped[float | None] = mapped_column(Float)
    length_px: Mapped[float | None] = mapped_column(Float)  # cracks: skeleton length
    max_width_px: Mapped[float | None] = mapped_column(Float)  # cracks: widest point
    length_mm: Mapped[float | None] = mapped_column(Float)
    max_width_mm: Mapped[float | None] = mapped_column(Float)
    severity: Mapped[str | None] = mapped_column(String(10), index=True)  # hairline, fine, medium, wide
    coverage_pct: Mapped[float | None] = mapped_column(Float)  # taping: share of the photo taped


class SeenFile(Base):
    """A file met in a watch root, so rescans skip it without hashing; duplicates are recorded here."""

    __tablename__ = "files"
    __table_args__ = (UniqueConstraint("path", "size", "mtime_ns"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    photo_id: Mapped[int] = mapped_column(ForeignKey("photos.id"), index=True)
    duplicate: Mapped[bool] = mapped_column(Boolean, default=False)
    seen_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Failure(Base):
    """Every failed attempt, with its reason; `final` ones sent the file to quarantine."""

    __tablename__ = "failures"
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    path: Mapped[str] = mapped_column(Text)
    photo_id: Mapped[int | None] = mapped_column(ForeignKey("photos.id"), index=True)
    stage: Mapped[str] = mapped_column(String(10))  # intake or process
    error: Mapped[str] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(Integer)
    final: Mapped[bool] = mapped_column(Boolean, default=False)
    quarantined_to: Mapped[str | None] = mapped_column(Text)


class ScheduleRun(Base):
    """One run of a scheduled job for one slot (a day, a week, an interval): claimed once, whoever claims it."""

    __tablename__ = "schedule_runs"
    __table_args__ = (UniqueConstraint("job", "slot"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    job: Mapped[str] = mapped_column(String(50))
    slot: Mapped[str] = mapped_column(String(50))
    worker: Mapped[str] = mapped_column(String(200))
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    outcome: Mapped[str | None] = mapped_column(Text)


class Daemon(Base):
    """A running daemon's heartbeat: how `status` knows one runs, and how the others find its stale jobs."""

    __tablename__ = "daemons"
    worker: Mapped[str] = mapped_column(String(200), primary_key=True)  # host:pid
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    paused: Mapped[str | None] = mapped_column(Text)  # why it takes no work now (a full disk), or None


class LabeledImage(Base):
    """A labeled photo found in the retrain inbox."""

    __tablename__ = "labeled_images"
    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    path: Mapped[str] = mapped_column(Text)
    first_seen_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)


class RetrainRequest(Base):
    """A retrain the check job asked for, and what became of it."""

    __tablename__ = "retrain_requests"
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    new_images: Mapped[int] = mapped_column(Integer)
    base_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    # requested, running, promoted, rejected or failed
    status: Mapped[str] = mapped_column(String(10), default="requested")
    candidate_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    detail: Mapped[str | None] = mapped_column(Text)


@dataclass(frozen=True)
class Identified:
    """A complete photo file and what intake learned of it, ready to be recorded."""

    path: Path
    sha256: str
    size: int
    mtime_ns: int
    site: str
    location: str
    captured_at: datetime
    captured_from: str
    width: int
    height: int


@dataclass(frozen=True)
class Added:
    photo_id: int
    kind: str  # new; duplicate (these bytes arrived before under another name); known (this file, seen again)


@dataclass(frozen=True)
class Claimed:
    job_id: int
    photo_id: int
    attempts: int  # including this one
    path: Path
    image_id: str
    site: str
    location: str
    captured_at: datetime
    width: int
    height: int


@dataclass
class DetectionResult:
    task: str
    prompt: str
    mask_path: Path
    threshold: float
    measures: dict[str, Any]  # column name -> value, from daemon.measure


@dataclass
class PhotoResult:
    output_dir: Path
    overlay_path: Path | None
    processing_ms: float
    detections: list[DetectionResult]


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


def _engine(url: str) -> Engine:
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
            cur.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
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


class Store:
    """The results store; thread-safe (one short session per call: `session` writes, `reader` reads)."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.url = redact(str(engine.url))
        self.session = sessionmaker(engine.execution_options(writer=True), expire_on_commit=False)
        self.reader = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def open(cls, url: str, migrate_schema: bool = True) -> Store:
        engine = _engine(url)
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
    def open_existing(cls, url: str) -> Store:
        """A store for reading (status, reports, history); a clear error when none was written yet."""
        path = sqlite_path(url)
        if path is not None and not path.exists():
            raise StoreError(f"store.url: {path} does not exist yet, so nothing was processed with this config; "
                             "start the daemon with `qa-daemon run`, or pass --store")
        return cls.open(url, migrate_schema=False)

    def close(self) -> None:
        self.engine.dispose()

    # --- models ---------------------------------------------------------------------------------
    def register_model(self, name: str, path: Path, backend: str, weights_sha256: str, card: dict,
                       metrics: dict | None = None, activate: bool = True) -> int:
        """The id of this checkpoint's version, added when new; made the active one with `activate`."""
        with self.session.begin() as s:
            mv = self._register(s, name, path, backend, weights_sha256, card, metrics)
            if activate:
                self._activate(s, mv)
            return mv.id

    @staticmethod
    def _register(s: Session, name: str, path: Path, backend: str, weights_sha256: str, card: dict,
                  metrics: dict | None = None) -> ModelVersion:
        mv = s.scalar(select(ModelVersion).where(ModelVersion.weights_sha256 == weights_sha256))
        if mv is None:
            mv = ModelVersion(name=name, path=str(path), backend=backend, weights_sha256=weights_sha256,
                              card=json.dumps(card, default=str), metrics=json.dumps(metrics or {}),
                              status="candidate", active=False)
            s.add(mv)
            s.flush()
        return mv

    @staticmethod
    def _activate(s: Session, mv: ModelVersion) -> None:
        s.execute(update(ModelVersion).where(ModelVersion.active, ModelVersion.id != mv.id)
                  .values(active=False, status="retired"))
        mv.active, mv.status, mv.promoted_at = True, "active", utcnow()

    def startup_model(self, path: Path, backend: str, weights_sha256: str, card: dict) -> ModelVersion:
        """The version the daemon runs: the configured checkpoint when it is new to this store (the
        user changed it), else whichever version was promoted last (retraining may have replaced it)."""
        with self.session.begin() as s:
            known = s.scalar(select(ModelVersion).where(ModelVersion.weights_sha256 == weights_sha256))
            active = s.scalar(select(ModelVersion).where(ModelVersion.active))
            if known is None or active is None or not Path(active.path).is_dir():
                active = self._register(s, path.name, path, backend, weights_sha256, card)
                self._activate(s, active)
            return active

    def reject(self, version_id: int, keep_id: int | None) -> None:
        """A promoted version that cannot be loaded: marked rejected, and `keep_id` (the one that runs) active."""
        with self.session.begin() as s:
            s.execute(update(ModelVersion).where(ModelVersion.id == version_id).values(active=False, status="rejected"))
            if keep_id is not None:
                self._activate(s, s.get(ModelVersion, keep_id))

    def set_status(self, version_id: int, status: str) -> None:
        with self.session.begin() as s:
            s.execute(update(ModelVersion).where(ModelVersion.id == version_id).values(status=status))

    def promote(self, version: str) -> ModelVersion:
        """Make the version with this id or name the active one."""
        with self.session.begin() as s:
            mv = self._find(s, version)
            self._activate(s, mv)
            return mv

    def rollback(self) -> ModelVersion:
        """Make the version promoted before the active one active again."""
        with self.session.begin() as s:
            active = s.scalar(select(ModelVersion).where(ModelVersion.active))
            before = s.scalar(select(ModelVersion).where(ModelVersion.promoted_at.is_not(None),
                                                         ModelVersion.id != (active.id if active else -1))
                              .order_by(ModelVersion.promoted_at.desc()).limit(1))
            if before is None:
                raise StoreError("no earlier model version to roll back to; see `qa-daemon model list`")
            self._activate(s, before)
            return before

    @staticmethod
    def _find(s: Session, version: str) -> ModelVersion:
        mv = s.get(ModelVersion, int(version)) if version.isdigit() else None
        mv = mv or s.scalar(select(ModelVersion).where(ModelVersion.name == version)
                            .order_by(ModelVersion.id.desc()).limit(1))
        if mv is None:
            raise StoreError(f"model version {version!r} is not in the store; see `qa-daemon model list`")
        return mv

    def versions(self) -> list[ModelVersion]:
        with self.reader() as s:
            return list(s.scalars(select(ModelVersion).order_by(ModelVersion.id)))

    def active_version(self) -> ModelVersion | None:
        with self.reader() as s:
            return s.scalar(select(ModelVersion).where(ModelVersion.active))

    def active_model(self) -> str | None:
        mv = self.active_version()
        return mv.name if mv else None

    # --- scheduled jobs, retraining -------------------------------------------------------------
    def claim_run(self, job: str, slot: str, worker: str) -> bool:
        """True for the one process that claims this (job, slot); False when it ran (or runs) elsewhere."""
        try:
            with self.session.begin() as s:
                s.add(ScheduleRun(job=job, slot=slot, worker=worker))
            return True
        except IntegrityError:
            return False

    def finish_run(self, job: str, slot: str, outcome: str) -> None:
        with self.session.begin() as s:
            s.execute(update(ScheduleRun).where(ScheduleRun.job == job, ScheduleRun.slot == slot)
                      .values(finished_at=utcnow(), outcome=outcome))

    def has_run(self, job: str, slot: str) -> bool:
        with self.reader() as s:
            return s.scalar(select(func.count()).select_from(ScheduleRun)
                            .where(ScheduleRun.job == job, ScheduleRun.slot == slot)) > 0

    def add_labeled(self, sha256: str, path: Path) -> bool:
        """Record a labeled inbox image; True when it is new."""
        try:
            with self.session.begin() as s:
                s.add(LabeledImage(sha256=sha256, path=str(path)))
            return True
        except IntegrityError:
            return False

    def new_labeled(self) -> int:
        """Labeled inbox images first seen after the active model was promoted."""
        with self.reader() as s:
            since = s.scalar(select(ModelVersion.promoted_at).where(ModelVersion.active)) or datetime(1970, 1, 1)
            return s.scalar(select(func.count()).select_from(LabeledImage)
                            .where(LabeledImage.first_seen_at > since)) or 0

    def request_retrain(self, new_images: int) -> int | None:
        """Record a retrain request, unless one for this model already counted as many images."""
        with self.session.begin() as s:
            active = s.scalar(select(ModelVersion.id).where(ModelVersion.active))
            asked = s.scalar(select(func.max(RetrainRequest.new_images))
                             .where(RetrainRequest.base_version_id == active))
            if asked is not None and asked >= new_images:
                return None
            req = RetrainRequest(new_images=new_images, base_version_id=active)
            s.add(req)
            s.flush()
            return req.id

    def open_request(self) -> int | None:
        """The newest retrain request nobody has started on."""
        with self.reader() as s:
            return s.scalar(select(RetrainRequest.id).where(RetrainRequest.status == "requested")
                            .order_by(RetrainRequest.id.desc()).limit(1))

    def retrain_requests(self) -> list[RetrainRequest]:
        with self.reader() as s:
            return list(s.scalars(select(RetrainRequest).order_by(RetrainRequest.id)))

    def update_request(self, request_id: int, status: str, candidate: int | None = None, detail: str = "") -> None:
        with self.session.begin() as s:
            s.execute(update(RetrainRequest).where(RetrainRequest.id == request_id).values(
                status=status, candidate_version_id=candidate, detail=detail))

    # --- intake ---------------------------------------------------------------------------------
    def known_files(self) -> set[tuple[str, int, int]]:
        """(path, size, mtime_ns) of every file already taken; a rescan skips these without reading them."""
        with self.reader() as s:
            return {tuple(r) for r in s.execute(
                select(SeenFile.path, SeenFile.size, SeenFile.mtime_ns).join(Job, Job.photo_id == SeenFile.photo_id)
                .where(Job.status != JobStatus.missing))}

    def missing_files(self, limit: int = 1000) -> list[Path]:
        """Where the files of `missing` photos were last seen, to notice them coming back."""
        with self.reader() as s:
            return [Path(p) for p in s.scalars(select(Photo.path).join(Job, Job.photo_id == Photo.id)
                                               .where(Job.status == JobStatus.missing).limit(limit))]

    def add_photo(self, f: Identified) -> Added:
        """Record a new photo with its pending job, or a duplicate of a known one; one transaction."""
        for _ in range(3):  # a concurrent insert of the same bytes (another daemon) is a duplicate
            try:
                return self._add_photo(f)
            except IntegrityError:
                continue
        raise StoreError(f"{f.path}: could not be recorded (repeated conflicts); it will be retried")

    def _add_photo(self, f: Identified) -> Added:
        key = dict(path=str(f.path), size=f.size, mtime_ns=f.mtime_ns)
        with self.session.begin() as s:
            seen = s.scalar(select(SeenFile).filter_by(**key))
            if seen is not None:  # a second event for a file already taken, or a vanished file back
                job = s.scalar(select(Job).where(Job.photo_id == seen.photo_id))
                if job.status == JobStatus.missing:
                    self._requeue(s, job, f.path)
                    return Added(seen.photo_id, "new")
                return Added(seen.photo_id, "known")
            first = s.scalar(select(Photo).where(Photo.sha256 == f.sha256))
            if first is not None:
                job = s.scalar(select(Job).where(Job.photo_id == first.id))
                if job.status in (JobStatus.failed, JobStatus.missing):  # dropping it again retries it
                    self._requeue(s, job, f.path)
                    s.add(SeenFile(**key, sha256=f.sha256, photo_id=first.id))
                    return Added(first.id, "new")
                # the same bytes at a path already seen (a touched file) are that file again, and the same bytes
                # where the old file is gone were moved: neither is a new copy
                before = s.scalar(select(SeenFile).where(SeenFile.photo_id == first.id, SeenFile.path == str(f.path))
                                  .order_by(SeenFile.id.desc()).limit(1))
                if before is not None or not os.path.lexists(first.path):
                    if before is None:
                        first.path = str(f.path)  # a processor holding the old path sees it moved (`vanished`)
                    s.add(SeenFile(**key, sha256=f.sha256, photo_id=first.id,
                                   duplicate=before.duplicate if before else False))
                    return Added(first.id, "known")
                s.add(SeenFile(**key, sha256=f.sha256, photo_id=first.id, duplicate=True))
                return Added(first.id, "duplicate")
            stem = safe_part(f.path.stem)  # it names the mask files
            taken = s.scalar(select(func.count()).select_from(Photo).where(Photo.site == f.site,
                                                                              Photo.image_id == stem))
            photo = Photo(sha256=f.sha256, image_id=f"{stem}-{f.sha256[:8]}" if taken else stem, name=f.path.name,
                          path=str(f.path), site=f.site, location=f.location, captured_at=f.captured_at,
                          captured_from=f.captured_from, width=f.width, height=f.height, bytes=f.size)
            s.add(photo)
            s.flush()
            s.add(Job(photo_id=photo.id))
            s.add(SeenFile(**key, sha256=f.sha256, photo_id=photo.id))
            return Added(photo.id, "new")

    @staticmethod
    def _requeue(s: Session, job: Job, path: Path) -> None:
        """A failed or vanished photo's file is here (again): queue it afresh, from this path."""
        job.status, job.attempts, job.next_attempt_at, job.updated_at = JobStatus.pending, 0, utcnow(), utcnow()
        s.execute(update(Photo).where(Photo.id == job.photo_id).values(path=str(path)))

    def record_failure(self, path: Path, stage: str, error: str, attempt: int, final: bool,
                       quarantined_to: Path | None = None, photo_id: int | None = None) -> None:
        with self.session.begin() as s:
            s.add(Failure(path=str(path), stage=stage, error=error, attempt=attempt, final=final,
                          quarantined_to=str(quarantined_to) if quarantined_to else None, photo_id=photo_id))

    # --- the queue ------------------------------------------------------------------------------
    def recover(self, max_attempts: int, stale_s: float | None = None) -> tuple[int, list[Claimed]]:
        """Put jobs left running by a crashed daemon back to pending: (how many, the jobs that were in
        hand `max_attempts` times already, left running for the caller to give up on: they may be what
        crashes the process). With `stale_s`, only jobs of daemons silent for that long (several daemons
        share the store); without, all of them (this daemon holds the store alone)."""
        with self.session.begin() as s:
            running = Job.status == JobStatus.running
            if stale_s is not None:
                alive = select(Daemon.worker).where(Daemon.seen_at >= utcnow() - timedelta(seconds=stale_s))
                running = and_(running, or_(Job.worker.is_(None), Job.worker.not_in(alive)))
            exhausted = [self._claimed(job, photo) for job, photo in s.execute(
                select(Job, Photo).join(Photo, Photo.id == Job.photo_id)
                .where(running, Job.attempts >= max_attempts))]
            n = s.execute(update(Job).where(running, Job.attempts < max_attempts)
                          .values(status=JobStatus.pending, worker=None, updated_at=utcnow())).rowcount
            return n, exhausted

    def release(self, worker: str) -> int:
        """Put `worker`'s running jobs back to pending, the attempt not counted: their outcome could not be
        recorded (the store was locked or down). Only between batches, when the worker has none in hand."""
        with self.session.begin() as s:
            return s.execute(update(Job).where(Job.status == JobStatus.running, Job.worker == worker).values(
                status=JobStatus.pending, worker=None, attempts=Job.attempts - 1, updated_at=utcnow())).rowcount

    def beat(self, worker: str, paused: str | None = None) -> None:
        """This daemon is alive (and takes no work now, for this reason, when `paused`)."""
        with self.session.begin() as s:
            row = s.get(Daemon, worker)
            if row is None:
                s.add(Daemon(worker=worker, paused=paused))
            else:
                row.seen_at, row.paused = utcnow(), paused

    def daemons_seen(self, within_s: float) -> list[tuple[str, str | None]]:
        """(worker, why paused or None) of the daemons alive within the last `within_s` seconds."""
        with self.reader() as s:
            return [tuple(r) for r in s.execute(select(Daemon.worker, Daemon.paused)
                                                .where(Daemon.seen_at >= utcnow() - timedelta(seconds=within_s)))]

    def leave(self, worker: str) -> None:
        """This daemon stopped cleanly."""
        with self.session.begin() as s:
            s.execute(Daemon.__table__.delete().where(Daemon.worker == worker))

    @staticmethod
    def _claimed(job: Job, photo: Photo) -> Claimed:
        return Claimed(job.id, photo.id, job.attempts, Path(photo.path), photo.image_id, photo.site,
                       photo.location, photo.captured_at, photo.width, photo.height)

    def claim(self, batch_size: int, worker: str) -> list[Claimed]:
        """Up to `batch_size` due pending jobs, oldest first, marked running for `worker`."""
        now = utcnow()
        with self.session.begin() as s:
            rows = s.execute(
                select(Job, Photo).join(Photo, Photo.id == Job.photo_id)
                .where(Job.status == JobStatus.pending, Job.next_attempt_at <= now)
                # on PostgreSQL, daemons on several machines each lock the rows they take and skip the others'
                .order_by(Job.id).limit(batch_size).with_for_update(skip_locked=True, of=Job)).all()
            claimed = []
            for job, photo in rows:
                job.status, job.worker, job.claimed_at, job.updated_at = JobStatus.running, worker, now, now
                job.attempts += 1
                claimed.append(self._claimed(job, photo))
            return claimed

    def next_due(self) -> datetime | None:
        """When the earliest pending job becomes due."""
        with self.reader() as s:
            return s.scalar(select(func.min(Job.next_attempt_at)).where(Job.status == JobStatus.pending))

    def complete(self, results: list[tuple[Claimed, PhotoResult]], model_version_id: int) -> None:
        """Store the photos' detections and mark their jobs done, all in one transaction."""
        with self.session.begin() as s:
            for job, result in results:
                s.execute(Detection.__table__.delete().where(Detection.photo_id == job.photo_id))
                for d in result.detections:
                    s.add(Detection(photo_id=job.photo_id, model_version_id=model_version_id, task=d.task,
                                    prompt=d.prompt, mask_path=str(d.mask_path), threshold=d.threshold,
                                    **d.measures))
                s.execute(update(Photo).where(Photo.id == job.photo_id).values(
                    processed_at=utcnow(), processing_ms=result.processing_ms, model_version_id=model_version_id,
                    output_dir=str(result.output_dir),
                    overlay_path=str(result.overlay_path) if result.overlay_path else None))
                s.execute(update(Job).where(Job.id == job.job_id).values(
                    status=JobStatus.done, last_error=None, updated_at=utcnow()))

    def retry_later(self, job: Claimed, error: str, delay_s: float, count: bool = True) -> None:
        """Back to pending after `delay_s`; `count=False` when the trouble was not the photo's (a missing
        share, a full disk), so it does not use up the photo's attempts."""
        with self.session.begin() as s:
            s.execute(update(Job).where(Job.id == job.job_id).values(
                status=JobStatus.pending, worker=None, last_error=error, updated_at=utcnow(),
                attempts=job.attempts if count else job.attempts - 1,
                next_attempt_at=utcnow() + timedelta(seconds=delay_s)))
            s.add(Failure(path=str(job.path), stage="process", error=error, attempt=job.attempts,
                          photo_id=job.photo_id))

    def vanished(self, job: Claimed) -> bool:
        """The job's file is gone. True when the photo was seen elsewhere meanwhile (moved: queued again at
        its new path, the attempt not counted); else the job waits, `missing`, for the file to reappear."""
        with self.session.begin() as s:
            path = s.scalar(select(Photo.path).where(Photo.id == job.photo_id))
            moved = path != str(job.path)
            s.execute(update(Job).where(Job.id == job.job_id).values(
                status=JobStatus.pending if moved else JobStatus.missing, worker=None, updated_at=utcnow(),
                attempts=job.attempts - 1, last_error=None if moved else "the file vanished before it was processed"))
            return moved

    def give_up(self, job: Claimed, error: str, quarantined_to: Path | None) -> None:
        """The job failed for the last time; the file was moved to `quarantined_to`."""
        with self.session.begin() as s:
            s.execute(update(Job).where(Job.id == job.job_id).values(
                status=JobStatus.failed, worker=None, last_error=error, updated_at=utcnow()))
            if quarantined_to is not None:
                s.execute(update(Photo).where(Photo.id == job.photo_id).values(path=str(quarantined_to)))
            s.add(Failure(path=str(job.path), stage="process", error=error, attempt=job.attempts, final=True,
                          photo_id=job.photo_id, quarantined_to=str(quarantined_to) if quarantined_to else None))

    def moved(self, photo_id: int, path: Path) -> None:
        """The photo's file now lives at `path` (archived)."""
        with self.session.begin() as s:
            s.execute(update(Photo).where(Photo.id == photo_id).values(path=str(path)))

    def done_photos_under(self, folder: Path) -> list[tuple[int, Path]]:
        """Done photos whose file still sits under `folder` (to finish an archive move cut short)."""
        with self.reader() as s:
            rows = s.execute(select(Photo.id, Photo.path).join(Job, Job.photo_id == Photo.id)
                             .where(Job.status == JobStatus.done, Photo.path.startswith(str(folder) + os.sep)))
            return [(i, Path(p)) for i, p in rows]

    # --- reading --------------------------------------------------------------------------------
    def counts(self, today_start_utc: datetime) -> dict[str, int]:
        with self.reader() as s:
            by_status = dict(s.execute(select(Job.status, func.count()).group_by(Job.status)).all())
            return {
                "processed": by_status.get(JobStatus.done, 0),
                "pending": by_status.get(JobStatus.pending, 0) + by_status.get(JobStatus.running, 0),
                "failed": by_status.get(JobStatus.failed, 0) + (s.scalar(
                    select(func.count()).select_from(Failure)
                    .where(Failure.final, Failure.photo_id.is_(None))) or 0),
                "missing": by_status.get(JobStatus.missing, 0),
                "duplicates": s.scalar(select(func.count(SeenFile.path.distinct())).where(SeenFile.duplicate)) or 0,
                "processed_today": s.scalar(select(func.count()).select_from(Photo)
                                            .where(Photo.processed_at >= today_start_utc)) or 0,
            }

    def recent_failures(self, limit: int = 10) -> list[Failure]:
        with self.reader() as s:
            return list(s.scalars(select(Failure).where(Failure.final).order_by(Failure.id.desc()).limit(limit)))


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
