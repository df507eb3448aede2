"""What daemons coordinate through the store besides photos: scheduled-job claims, heartbeats,
labeled images in the retrain inbox, and retrain requests."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from daemon.store.schema import Daemon, LabeledImage, ModelVersion, RetrainRequest, RetrainStatus, ScheduleRun, utcnow


class Runs:
    """Schedule claims, heartbeats, the retrain inbox and requests; thread-safe (one short session per call)."""

    def __init__(self, session: sessionmaker, reader: sessionmaker):
        self.session, self.reader = session, reader

    # --- scheduled jobs: each (job, slot) runs once, whichever daemon claims it --------------------
    def claim(self, job: str, slot: str, worker: str) -> bool:
        """True for the one process that claims this (job, slot); False when it ran (or runs) elsewhere."""
        try:
            with self.session.begin() as s:
                s.add(ScheduleRun(job=job, slot=slot, worker=worker))
            return True
        except IntegrityError:
            return False

    def finish(self, job: str, slot: str, outcome: str) -> None:
        with self.session.begin() as s:
            s.execute(update(ScheduleRun).where(ScheduleRun.job == job, ScheduleRun.slot == slot)
                      .values(finished_at=utcnow(), outcome=outcome))

    def last_finished(self, job: str) -> ScheduleRun | None:
        """The latest finished run of `job` (its slot, when it finished, its outcome), or None."""
        with self.reader() as s:
            return s.scalar(select(ScheduleRun).where(ScheduleRun.job == job, ScheduleRun.finished_at.is_not(None))
                            .order_by(ScheduleRun.finished_at.desc()).limit(1))

    def has_run(self, job: str, slot: str) -> bool:
        with self.reader() as s:
            return s.scalar(select(func.count()).select_from(ScheduleRun)
                            .where(ScheduleRun.job == job, ScheduleRun.slot == slot)) > 0

    # --- heartbeats ------------------------------------------------------------------------------
    def beat(self, worker: str, paused: str | None = None) -> None:
        """This daemon is alive (and takes no work now, for this reason, when `paused`)."""
        self._alive(worker, paused=paused)

    def publish_waiting(self, worker: str, snapshot: dict[str, Any]) -> None:
        """This daemon is alive, and these are the files it has seen but not taken yet (`Settler.snapshot()`;
        none: NULL)."""
        waiting = json.dumps(snapshot, separators=(",", ":")) if snapshot["settling"] + snapshot["waiting"] else None
        self._alive(worker, waiting=waiting)

    def _alive(self, worker: str, **values: Any) -> None:
        """`worker`'s heartbeat row, seen now, with `values` set; made when it has none."""
        with self.session.begin() as s:
            row = s.get(Daemon, worker)
            if row is None:
                s.add(Daemon(worker=worker, **values))
                return
            row.seen_at = utcnow()
            for key, value in values.items():
                setattr(row, key, value)

    def waiting_seen(self, within_s: float) -> list[dict[str, Any]]:
        """The published snapshots of files not taken yet, of the daemons alive within the last `within_s`
        seconds (a value that is not a snapshot, from another version of the daemon, is left out)."""
        with self.reader() as s:
            values = list(s.scalars(select(Daemon.waiting).where(
                Daemon.seen_at >= utcnow() - timedelta(seconds=within_s), Daemon.waiting.is_not(None))))
        snapshots = []
        for value in values:
            try:
                snapshot = json.loads(value)
            except ValueError:
                continue
            if isinstance(snapshot, dict) and {"settling", "waiting", "files"} <= snapshot.keys():
                snapshots.append(snapshot)
        return snapshots

    def daemons_seen(self, within_s: float) -> list[tuple[str, str | None]]:
        """(worker, why paused or None) of the daemons alive within the last `within_s` seconds."""
        with self.reader() as s:
            return [tuple(r) for r in s.execute(select(Daemon.worker, Daemon.paused)
                                                .where(Daemon.seen_at >= utcnow() - timedelta(seconds=within_s)))]

    def leave(self, worker: str) -> None:
        """This daemon stopped cleanly."""
        with self.session.begin() as s:
            s.execute(Daemon.__table__.delete().where(Daemon.worker == worker))

    def leave_others(self, worker: str) -> None:
        """Forget every daemon but this one: alone on a SQLite store (its lock held), any other is a killed one,
        whose paused reason and files waiting `status` must not show."""
        with self.session.begin() as s:
            s.execute(Daemon.__table__.delete().where(Daemon.worker != worker))

    # --- retraining ------------------------------------------------------------------------------
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
            return s.scalar(select(RetrainRequest.id).where(RetrainRequest.status == RetrainStatus.requested)
                            .order_by(RetrainRequest.id.desc()).limit(1))

    def retrain_requests(self) -> list[RetrainRequest]:
        with self.reader() as s:
            return list(s.scalars(select(RetrainRequest).order_by(RetrainRequest.id)))

    def update_request(self, request_id: int, status: RetrainStatus, candidate: int | None = None,
                       detail: str = "") -> None:
        with self.session.begin() as s:
            s.execute(update(RetrainRequest).where(RetrainRequest.id == request_id).values(
                status=status, candidate_version_id=candidate, detail=detail))
