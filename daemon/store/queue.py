"""The durable job queue: photos in, jobs claimed, results recorded, failures kept.

    added = queue.add_photo(identified)           # a photo and its pending job, one transaction
    jobs = queue.claim(batch_size=8, worker=w)    # pending -> running
    queue.complete([(job, result)], version_id)   # detections + done, one transaction

A photo is recorded as pending before any work starts, and marked done in the same transaction that
stores its detections, so a crash at any moment leaves either no trace (the file is found again by
the start-up rescan) or a running job that `recover` puts back to pending. Intake decides what a
file is (its identity, its names); the queue records it.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from daemon.store.engine import StoreError
from daemon.store.records import Added, Claimed, Identified, PhotoResult, ResultFiles
from daemon.store.schema import Daemon, Detection, Failure, FailureStage, Job, JobStatus, Photo, SeenFile, utcnow


class Queue:
    """Photos and their jobs; thread-safe (one short session per call: `session` writes, `reader` reads)."""

    def __init__(self, session: sessionmaker, reader: sessionmaker):
        self.session, self.reader = session, reader

    def known_files(self) -> set[tuple[str, int, int]]:
        """(path, size, mtime_ns) of every file already taken; a rescan skips these without reading them."""
        with self.reader() as s:
            return {tuple(r) for r in s.execute(
                select(SeenFile.path, SeenFile.size, SeenFile.mtime_ns).join(Job, Job.photo_id == SeenFile.photo_id)
                .where(Job.status.not_in((JobStatus.missing, JobStatus.lost))))}

    def path_of(self, sha256: str) -> Path | None:
        """Where the store last saw the photo with these bytes; None for bytes never seen."""
        with self.reader() as s:
            path = s.scalar(select(Photo.path).where(Photo.sha256 == sha256))
            return Path(path) if path is not None else None

    def missing_files(self, limit: int = 1000) -> list[Path]:
        """Where the files of `missing` photos were last seen, to notice them coming back."""
        with self.reader() as s:
            return [Path(p) for p in s.scalars(select(Photo.path).join(Job, Job.photo_id == Photo.id)
                                               .where(Job.status == JobStatus.missing).limit(limit))]

    def add_photo(self, f: Identified, earlier_gone: bool = False) -> Added:
        """Record a new photo with its pending job, or a duplicate of a known one; one transaction.
        `earlier_gone`: intake found no file where the store last saw these bytes (`path_of`), so
        this file is that photo moved, not a copy of it."""
        for _ in range(3):  # a concurrent insert of the same bytes (another daemon) is a duplicate
            try:
                return self._add_photo(f, earlier_gone)
            except IntegrityError:
                continue
        raise StoreError(f"{f.path}: could not be recorded (repeated conflicts); it will be retried")

    def _add_photo(self, f: Identified, earlier_gone: bool) -> Added:
        key = dict(path=str(f.path), size=f.size, mtime_ns=f.mtime_ns)
        with self.session.begin() as s:
            seen = s.scalar(select(SeenFile).filter_by(**key))
            if seen is not None:  # a second event for a file already taken, or a vanished file back
                job = s.scalar(select(Job).where(Job.photo_id == seen.photo_id))
                if job.status in (JobStatus.missing, JobStatus.lost):
                    self._requeue(s, job, f.path)
                    return Added(seen.photo_id, "new")
                return Added(seen.photo_id, "known")
            first = s.scalar(select(Photo).where(Photo.sha256 == f.sha256))
            if first is not None:
                job = s.scalar(select(Job).where(Job.photo_id == first.id))
                if job.status in (JobStatus.failed, JobStatus.missing, JobStatus.lost):  # dropping it again retries it
                    self._requeue(s, job, f.path)
                    s.add(SeenFile(**key, sha256=f.sha256, photo_id=first.id))
                    return Added(first.id, "new")
                # the same bytes at a path already seen (a touched file) are that file again, and the same bytes
                # where the old file is gone were moved: neither is a new copy
                before = s.scalar(select(SeenFile).where(SeenFile.photo_id == first.id, SeenFile.path == str(f.path))
                                  .order_by(SeenFile.id.desc()).limit(1))
                if before is not None or earlier_gone:
                    if before is None:
                        first.path = str(f.path)  # a processor holding the old path sees it moved (`vanished`)
                    s.add(SeenFile(**key, sha256=f.sha256, photo_id=first.id,
                                   duplicate=before.duplicate if before else False))
                    return Added(first.id, "known")
                s.add(SeenFile(**key, sha256=f.sha256, photo_id=first.id, duplicate=True))
                return Added(first.id, "duplicate")
            taken = set(s.scalars(select(Photo.image_id).where(Photo.site == f.site,
                                                                Photo.image_id.in_(f.image_ids))))
            image_id = next((i for i in f.image_ids if i not in taken), f.image_ids[-1])
            photo = Photo(sha256=f.sha256, image_id=image_id, name=f.path.name,
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

    def record_failure(self, path: Path, stage: FailureStage, error: str, attempt: int, final: bool,
                       quarantined_to: Path | None = None, photo_id: int | None = None) -> None:
        with self.session.begin() as s:
            s.add(Failure(path=str(path), stage=stage, error=error, attempt=attempt, final=final,
                          quarantined_to=str(quarantined_to) if quarantined_to else None, photo_id=photo_id))

    def recover(self, max_attempts: int) -> tuple[int, list[Claimed]]:
        """At start, alone on the store: put every job left running back to pending. Returns (how many,
        the jobs that were in hand `max_attempts` times already, left running for the processor to give
        up on: they may be what crashes the process)."""
        return self._requeue_running(max_attempts, Job.status == JobStatus.running)

    def take_over(self, max_attempts: int, stale_s: float) -> tuple[int, list[Claimed]]:
        """On a shared store: the same for the jobs of daemons silent for `stale_s` seconds (dead ones)."""
        alive = select(Daemon.worker).where(Daemon.seen_at >= utcnow() - timedelta(seconds=stale_s))
        return self._requeue_running(max_attempts, and_(Job.status == JobStatus.running,
                                                        or_(Job.worker.is_(None), Job.worker.not_in(alive))))

    def _requeue_running(self, max_attempts: int, running) -> tuple[int, list[Claimed]]:
        with self.session.begin() as s:
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
            s.add(Failure(path=str(job.path), stage=FailureStage.process, error=error, attempt=job.attempts,
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
            s.add(Failure(path=str(job.path), stage=FailureStage.process, error=error, attempt=job.attempts, final=True,
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
                "lost": by_status.get(JobStatus.lost, 0),
                "duplicates": s.scalar(select(func.count(SeenFile.path.distinct())).where(SeenFile.duplicate)) or 0,
                "processed_today": s.scalar(select(func.count()).select_from(Photo)
                                            .where(Photo.processed_at >= today_start_utc)) or 0,
            }

    def recent_failures(self, limit: int = 10) -> list[Failure]:
        with self.reader() as s:
            return list(s.scalars(select(Failure).where(Failure.final).order_by(Failure.id.desc()).limit(limit)))

    # ---- the scrub: results whose files are gone or damaged (daemon/scrub.py) ----

    def results(self, after_id: int = 0, limit: int = 500, since: datetime | None = None) -> list[ResultFiles]:
        """Done photos with id > `after_id` (processed since `since`), oldest first, with the files their
        results point at; photos whose outputs retention deleted on purpose are left out."""
        with self.reader() as s:
            rows = s.execute(
                select(Photo.id, Photo.path, Photo.bytes, Photo.overlay_path).join(Job, Job.photo_id == Photo.id)
                .where(Job.status == JobStatus.done, Photo.outputs_removed_at.is_(None), Photo.id > after_id,
                       *([Photo.processed_at >= since] if since is not None else []))
                .order_by(Photo.id).limit(limit)).all()
            masks: dict[int, list[Path]] = {r.id: [] for r in rows}
            if rows:
                for photo_id, mask in s.execute(select(Detection.photo_id, Detection.mask_path)
                                                .where(Detection.photo_id.in_(masks)).order_by(Detection.id)):
                    masks[photo_id].append(Path(mask))
            return [ResultFiles(r.id, Path(r.path), r.bytes, Path(r.overlay_path) if r.overlay_path else None,
                                tuple(masks[r.id])) for r in rows]

    def results_count(self, since: datetime | None = None) -> int:
        """How many photos `results` yields: the scrub's total."""
        with self.reader() as s:
            return s.scalar(select(func.count()).select_from(Photo).join(Job, Job.photo_id == Photo.id).where(
                Job.status == JobStatus.done, Photo.outputs_removed_at.is_(None),
                *([Photo.processed_at >= since] if since is not None else []))) or 0

    def remake(self, photo_id: int, reason: str) -> None:
        """Its result files are missing or damaged and its source is here: processed again, from scratch."""
        with self.session.begin() as s:
            path = s.scalar(select(Photo.path).where(Photo.id == photo_id))
            s.execute(update(Job).where(Job.photo_id == photo_id, Job.status == JobStatus.done).values(
                status=JobStatus.pending, attempts=0, worker=None, next_attempt_at=utcnow(), updated_at=utcnow(),
                last_error=reason))
            s.add(Failure(path=path, stage=FailureStage.remade, error=reason, attempt=0, photo_id=photo_id))

    def lose(self, photo_id: int, reason: str) -> None:
        """Its result files are missing or damaged and its source is gone: recorded `lost`, with why."""
        with self.session.begin() as s:
            path = s.scalar(select(Photo.path).where(Photo.id == photo_id))
            s.execute(update(Job).where(Job.photo_id == photo_id, Job.status == JobStatus.done).values(
                status=JobStatus.lost, worker=None, updated_at=utcnow(), last_error=reason))
            s.add(Failure(path=path, stage=FailureStage.results_lost, error=reason, attempt=0, final=True,
                          photo_id=photo_id))

    def outputs_removed(self, folder: Path) -> int:
        """Retention deleted `folder` (one site's day of results) on purpose: its photos are not scrubbed."""
        with self.session.begin() as s:
            return s.execute(update(Photo).where(Photo.output_dir == str(folder), Photo.outputs_removed_at.is_(None))
                             .values(outputs_removed_at=utcnow())).rowcount
