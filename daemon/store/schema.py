"""The store's tables and the statuses their rows move through.

Statuses are `StrEnum`s stored as their plain string values, so SQL written by users (`docs/store.md`)
reads `status = 'done'`. Timestamps are naive UTC, except `photos.captured_at`, the camera's local
wall time. The schema is changed only through a migration in `daemon/migrations/versions/`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Boolean, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class JobStatus(StrEnum):
    pending = "pending"  # waiting for the processor (again, after a retryable failure)
    running = "running"  # claimed by a processor; back to pending if that process dies
    done = "done"  # results stored
    failed = "failed"  # gave up after watch.max_attempts; the file went to quarantine
    missing = "missing"  # the file vanished before it was processed (deleted, moved, share unmounted);
    # taken again when the same bytes reappear, at its path or elsewhere
    lost = "lost"  # its result files were lost (deleted, damaged) and its source is gone: they cannot be
    # re-made; no longer counted in trends; taken again when the same bytes reappear


class ModelStatus(StrEnum):
    candidate = "candidate"  # registered (by retrain or by a start with a new checkpoint), never promoted
    active = "active"  # the version the daemons run; exactly one
    retired = "retired"  # was active, replaced by a later promotion; `model rollback` can bring it back
    rejected = "rejected"  # refused by the promotion gate, or could not be loaded when promoted


class RetrainStatus(StrEnum):
    requested = "requested"  # asked for by the schedule's check; nobody has started it
    running = "running"
    promoted = "promoted"  # its candidate passed the gate and is active
    rejected = "rejected"  # its candidate scored worse than the active model
    failed = "failed"  # training or scoring failed; `detail` says why


class FailureStage(StrEnum):
    intake = "intake"  # the file could not be read as a photo (final: quarantined)
    process = "process"  # segmenting or writing its results failed (retried, then quarantined)
    outputs = "outputs"  # the outputs disk filled: intake and processing paused (no photo's fault)
    remade = "remade"  # the scrub found its result files missing or damaged; queued again from its source
    results_lost = "results_lost"  # the scrub found its result files missing or damaged, and the source gone


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
    status: Mapped[str] = mapped_column(String(10), default=ModelStatus.candidate)  # a ModelStatus
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
    outputs_removed_at: Mapped[datetime | None] = mapped_column(DateTime)  # retention deleted its results


class Job(Base):
    """The queue entry of a photo: what is left to do with it."""

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(primary_key=True)
    photo_id: Mapped[int] = mapped_column(ForeignKey("photos.id"), unique=True)
    status: Mapped[str] = mapped_column(String(10), index=True, default=JobStatus.pending)  # a JobStatus
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
    length_px: Mapped[float | None] = mapped_column(Float)  # cracks and taping: skeleton length
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
    stage: Mapped[str] = mapped_column(String(20))  # a FailureStage
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
    waiting: Mapped[str | None] = mapped_column(Text)  # JSON: the files it lets settle or waits on, for status


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
    status: Mapped[str] = mapped_column(String(10), default=RetrainStatus.requested)
    candidate_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    detail: Mapped[str | None] = mapped_column(Text)
