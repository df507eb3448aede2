"""The model registry: which checkpoint versions this store has run, and which one is active.

Every result points at the version that produced it. Exactly one version is active; promoting one
retires the one before, and `rollback` brings back the one promoted before the active one.
"""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from daemon.store.engine import StoreError
from daemon.store.schema import ModelStatus, ModelVersion, utcnow


class Registry:
    """Model versions; thread-safe (one short session per call)."""

    def __init__(self, session: sessionmaker, reader: sessionmaker):
        self.session, self.reader = session, reader

    def register(self, name: str, path: Path, backend: str, weights_sha256: str, card: dict,
                 metrics: dict | None = None, activate: bool = True) -> int:
        """The id of this checkpoint's version, added as a candidate when new; made active with `activate`."""
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
                              status=ModelStatus.candidate, active=False)
            s.add(mv)
            s.flush()
        return mv

    @staticmethod
    def _activate(s: Session, mv: ModelVersion) -> None:
        s.execute(update(ModelVersion).where(ModelVersion.active, ModelVersion.id != mv.id)
                  .values(active=False, status=ModelStatus.retired))
        mv.active, mv.status, mv.promoted_at = True, ModelStatus.active, utcnow()

    def startup(self, path: Path, backend: str, weights_sha256: str, card: dict) -> ModelVersion:
        """The version the daemon runs: the configured checkpoint when it is new to this store (the
        user changed it), else whichever version was promoted last (retraining may have replaced it)."""
        for _ in range(3):  # daemons starting together on a new store: one registers, the others read it
            try:
                return self._startup(path, backend, weights_sha256, card)
            except IntegrityError:
                continue
        raise StoreError(f"{path}: could not be registered as a model version (repeated conflicts); start again")

    def _startup(self, path: Path, backend: str, weights_sha256: str, card: dict) -> ModelVersion:
        with self.session.begin() as s:
            known = s.scalar(select(ModelVersion).where(ModelVersion.weights_sha256 == weights_sha256))
            active = s.scalar(select(ModelVersion).where(ModelVersion.active))
            if known is None or active is None or not Path(active.path).is_dir():
                active = self._register(s, path.name, path, backend, weights_sha256, card)
                self._activate(s, active)
            return active

    def reject(self, version_id: int, keep_id: int | None = None) -> None:
        """Mark a version rejected (the gate refused it, or it cannot be loaded); `keep_id` becomes active."""
        with self.session.begin() as s:
            s.execute(update(ModelVersion).where(ModelVersion.id == version_id)
                      .values(active=False, status=ModelStatus.rejected))
            if keep_id is not None:
                self._activate(s, s.get(ModelVersion, keep_id))

    def promote(self, version: str) -> ModelVersion:
        """Make the version with this id or name the active one."""
        with self.session.begin() as s:
            mv = self._find(s, version)
            self._activate(s, mv)
            return mv

    def rollback(self) -> ModelVersion:
        """Make the version promoted before the active one active again, passing over versions marked
        rejected since (they could not be loaded, or the gate refused them)."""
        with self.session.begin() as s:
            active = s.scalar(select(ModelVersion).where(ModelVersion.active))
            before = s.scalar(select(ModelVersion).where(ModelVersion.promoted_at.is_not(None),
                                                         ModelVersion.status != ModelStatus.rejected,
                                                         ModelVersion.id != (active.id if active else -1))
                              .order_by(ModelVersion.promoted_at.desc()).limit(1))
            if before is None:
                raise StoreError("no earlier model version to roll back to (rejected versions are passed over); "
                                 "see `qa-daemon model list`")
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

    def active(self) -> ModelVersion | None:
        with self.reader() as s:
            return s.scalar(select(ModelVersion).where(ModelVersion.active))
