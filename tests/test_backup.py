"""`qa-daemon backup`: a copy of the SQLite store taken while photos are being recorded opens, passes
`PRAGMA integrity_check`, and is the store as it was when the backup began; PostgreSQL is sent to
`pg_dump`; an existing file is kept unless --force."""

from __future__ import annotations

import sqlite3
import threading
from datetime import datetime
from pathlib import Path

import pytest

from daemon.store import DetectionResult, Identified, PhotoResult, Store, StoreError
from daemon.store.backup import backup
from tests.support.store import fill

BURST = 200


class Writer(threading.Thread):
    """Records `BURST` processed photos through the store API, as the daemon's processor does (one
    transaction per photo: its two detections and its job done). It stops after `pause_at` photos until
    `go` is set; `done` counts its commits."""

    def __init__(self, url: str, folder: Path, pause_at: int):
        super().__init__(name="writer", daemon=True)
        self.store, self.folder, self.pause_at = Store.open(url), folder, pause_at
        self.go, self.done, self.changed = threading.Event(), 0, threading.Condition()
        self.version = self.store.models.register("v1", folder, "compact", "f" * 64, {})

    def run(self) -> None:
        try:
            for i in range(BURST):
                if i == self.pause_at:
                    self.go.wait(60)
                self.store.queue.add_photo(Identified(
                    path=self.folder / f"{i}.jpg", sha256=f"{i:064d}", image_ids=(f"p{i}",), size=1, mtime_ns=i,
                    site="tower-a", location="L1", captured_at=datetime(2026, 11, 24, 10), captured_from="exif",
                    width=100, height=100))
                [job] = self.store.queue.claim(1, "writer")
                measures = {"area_px": 1, "area_pct": 0.01, "components": 1}
                self.store.queue.complete([(job, PhotoResult(self.folder, None, 10.0, [
                    DetectionResult("crack", "segment crack", self.folder / f"p{i}_c.png", 0.5, measures),
                    DetectionResult("taping", "segment taping area", self.folder / f"p{i}_t.png", 0.5, measures),
                ]))], self.version)
                with self.changed:
                    self.done += 1
                    self.changed.notify_all()
        finally:
            self.store.close()

    def wait_for(self, n: int, timeout: float = 60) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: self.done >= n or not self.is_alive(), timeout), \
                f"the writer recorded {self.done} of {n} photos in {timeout} s"


def test_a_backup_during_a_burst_opens_passes_integrity_check_and_is_the_store_when_it_began(tmp_path):
    url = f"sqlite:///{tmp_path / 'qa.sqlite3'}"
    writer = Writer(url, tmp_path, pause_at=50)
    writer.start()
    writer.wait_for(50)
    steps = []

    def step(remaining: int, total: int) -> None:  # after each step of pages: the burst goes on meanwhile
        steps.append(remaining)
        if len(steps) == 1:
            writer.go.set()
            writer.wait_for(70)

    copy = tmp_path / "backup.sqlite3"
    result = backup(url, copy, pages_per_step=2, progress=step)
    writer.wait_for(BURST)
    writer.join(60)

    assert writer.done == BURST  # the backup did not hold up the writer
    assert len(steps) > 1 and steps[-1] == 0
    assert (result.photos, result.done, result.detections) == (50, 50, 100) and result.schema
    con = sqlite3.connect(copy)
    try:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        # a consistent prefix: the first 50 photos, each done with both its detections, nothing half-recorded
        assert [r[0] for r in con.execute("SELECT id FROM photos ORDER BY id")] == list(range(1, 51))
        assert con.execute("SELECT count(*) FROM jobs WHERE status = 'done'").fetchone()[0] == 50
        assert con.execute("SELECT count(*) FROM jobs WHERE status != 'done'").fetchone()[0] == 0
        per_photo = con.execute("SELECT photo_id, count(*) FROM detections GROUP BY photo_id").fetchall()
        assert per_photo == [(i, 2) for i in range(1, 51)]
    finally:
        con.close()
    restored = Store.open_existing(f"sqlite:///{copy}")  # the copy is a store qa-daemon reads as it is
    try:
        assert restored.queue.counts(datetime(2000, 1, 1))["processed"] == 50
    finally:
        restored.close()
    assert [p.name for p in tmp_path.glob(".backup*")] == []  # no partial file left beside it


@pytest.fixture
def small_store(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'qa.sqlite3'}"
    store = Store.open(url)
    fill(store, tmp_path, [("tower-a", "2026-11-24", 1.0, "fine"), ("tower-b", "2026-11-24", 0.0, None)])
    store.close()
    return url


def test_backup_prints_what_the_verified_copy_holds(cli, write_config, small_store, tmp_path):
    result = cli("--config", write_config(), "backup", "--out", tmp_path / "b.sqlite3", "--store", small_store)
    assert result.code == 0, result.stderr
    assert "2 photos (2 done), 4 detections" in result.stdout and "integrity ok" in result.stdout
    assert sqlite3.connect(tmp_path / "b.sqlite3").execute("SELECT count(*) FROM photos").fetchone() == (2,)


def test_backup_keeps_an_existing_file_unless_forced(cli, write_config, small_store, tmp_path):
    target = tmp_path / "b.sqlite3"
    target.write_bytes(b"last week's backup")
    config = write_config()
    refused = cli("--config", config, "backup", "--out", target, "--store", small_store)
    assert refused.code == 2
    assert str(target) in refused.stderr and "--force" in refused.stderr and "Traceback" not in refused.stderr
    assert target.read_bytes() == b"last week's backup"
    forced = cli("--config", config, "backup", "--out", target, "--store", small_store, "--force")
    assert forced.code == 0, forced.stderr
    assert sqlite3.connect(target).execute("SELECT count(*) FROM detections").fetchone() == (4,)


def test_backup_of_a_postgresql_store_points_to_pg_dump_without_showing_the_password(cli, write_config, tmp_path):
    result = cli("--config", write_config(), "backup", "--out", tmp_path / "b.sqlite3",
                 "--store", "postgresql://qa:s3cret@db.example/qa")
    assert result.code == 2
    assert "pg_dump" in result.stderr and "s3cret" not in result.stderr
    assert not (tmp_path / "b.sqlite3").exists()


def test_a_copy_that_fails_its_integrity_check_is_not_kept(small_store, tmp_path, monkeypatch):
    import daemon.store.backup as backup_module

    real = sqlite3.connect

    def damaged(database, *args, **kwargs):  # the copy reads back damaged
        con = real(database, *args, **kwargs)
        if "backup" in str(database) and "mode=ro" in str(database):
            return _Damaged(con)
        return con

    monkeypatch.setattr(backup_module.sqlite3, "connect", damaged)
    with pytest.raises(StoreError, match="integrity check"):
        backup(small_store, tmp_path / "backup.sqlite3")
    assert list(tmp_path.glob("*backup*")) == []


class _Damaged:
    """A connection whose `PRAGMA integrity_check` finds a damaged page."""

    def __init__(self, con):
        self.con = con

    def execute(self, sql, *args):
        if sql.startswith("PRAGMA integrity_check"):
            return iter([("*** in database main ***",), ("Page 3: btreeInitPage() returns error code 11",)])
        return self.con.execute(sql, *args)

    def close(self):
        self.con.close()
