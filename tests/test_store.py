"""The results store: migrations, the durable queue, exactly-once bookkeeping, and the one-daemon lock."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from daemon.intake import image_ids
from daemon.store import (
    Base,
    DetectionResult,
    Identified,
    PhotoResult,
    Store,
    StoreError,
    StoreLock,
    migrate,
    redact,
)


def identified(path: Path, sha: str, site: str = "tower-a", mtime_ns: int = 1) -> Identified:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()  # the file is there, as when intake identifies it
    sha = sha * 64 if len(sha) == 1 else sha
    return Identified(path=path, sha256=sha, image_ids=image_ids(path, sha), size=100, mtime_ns=mtime_ns, site=site,
                      location="L3", captured_at=datetime(2026, 11, 24, 9, 30), captured_from="exif",
                      width=640, height=480)


MEASURES = {"area_px": 10, "area_pct": 1.0, "components": 1, "mean_confidence": 0.9}


def result(tmp_path: Path) -> PhotoResult:
    return PhotoResult(tmp_path, None, 12.0, [DetectionResult("crack", "segment crack", tmp_path / "m.png", 0.5,
                                                              MEASURES)])


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    """The same store code on a SQLite file and on a PostgreSQL server."""
    url = f"sqlite:///{tmp_path / 'qa.sqlite3'}" if request.param == "sqlite" else request.getfixturevalue(
        "pg_database")
    s = Store.open(url)
    yield s
    s.close()


@pytest.fixture
def sqlite_store(tmp_path):
    s = Store.open(f"sqlite:///{tmp_path / 'qa.sqlite3'}")
    yield s
    s.close()


def test_migrations_build_exactly_the_schema_the_code_uses(store):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_history_survives_reopening_and_repeated_migration(tmp_path):
    url = f"sqlite:///{tmp_path / 'qa.sqlite3'}"
    first = Store.open(url)
    first.queue.add_photo(identified(tmp_path / "a.jpg", "a"))
    first.close()
    again = Store.open(url)  # migrates again: a no-op on an up-to-date store
    migrate(again.engine)
    assert again.queue.counts(datetime(2000, 1, 1))["pending"] == 1
    again.close()


def test_sqlite_store_runs_in_wal_mode_with_foreign_keys(sqlite_store):
    with sqlite_store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_a_photo_is_pending_until_its_results_commit_and_then_done_once(store, tmp_path):
    added = store.queue.add_photo(identified(tmp_path / "a.jpg", "a"))
    assert added.kind == "new"
    mv = store.models.register("tiny", tmp_path, "compact", "f" * 64, {})
    [job] = store.queue.claim(8, "test")
    assert store.queue.claim(8, "test") == []  # running jobs are not handed out twice
    store.queue.complete([(job, result(tmp_path))], mv)
    counts = store.queue.counts(datetime(2000, 1, 1))
    assert (counts["processed"], counts["pending"]) == (1, 0)


def test_jobs_left_running_by_a_crash_are_queued_again(store, tmp_path):
    store.queue.add_photo(identified(tmp_path / "a.jpg", "a"))
    store.queue.claim(8, "crashed")
    assert store.queue.recover(max_attempts=3) == (1, [])
    assert len(store.queue.claim(8, "restarted")) == 1


def test_same_bytes_under_another_name_are_a_duplicate_and_the_same_file_again_is_not(store, tmp_path):
    first = store.queue.add_photo(identified(tmp_path / "a.jpg", "a"))
    assert store.queue.add_photo(identified(tmp_path / "a.jpg", "a")).kind == "known"  # second event, same file
    assert store.queue.add_photo(identified(tmp_path / "a.jpg", "a", mtime_ns=2)).kind == "known"  # touched
    dup = store.queue.add_photo(identified(tmp_path / "copy of a.jpg", "a"))
    assert (dup.kind, dup.photo_id) == ("duplicate", first.photo_id)
    counts = store.queue.counts(datetime(2000, 1, 1))
    assert (counts["pending"], counts["duplicates"]) == (1, 1)
    # gone from its place (intake looks where the store last saw it): the same bytes elsewhere were moved
    (tmp_path / "a.jpg").unlink()
    assert store.queue.path_of("a" * 64) == tmp_path / "a.jpg"
    assert store.queue.add_photo(identified(tmp_path / "moved" / "a.jpg", "a"), earlier_gone=True).kind == "known"
    [job] = store.queue.claim(8, "w")
    assert job.path == tmp_path / "moved" / "a.jpg"
    assert store.queue.counts(datetime(2000, 1, 1))["duplicates"] == 1


def test_photos_with_the_same_name_at_one_site_get_distinct_image_ids(store, tmp_path):
    store.queue.add_photo(identified(tmp_path / "d1" / "IMG_1.jpg", "a"))
    store.queue.add_photo(identified(tmp_path / "d2" / "IMG_1.jpg", "b"))
    store.queue.add_photo(identified(tmp_path / "d3" / "IMG_1.jpg", "c", site="other"))
    ids = sorted(j.image_id for j in store.queue.claim(8, "w"))
    assert ids == ["IMG_1", "IMG_1", f"IMG_1-{'b' * 8}"]


def test_failed_attempts_back_off_then_give_up(store, tmp_path):
    store.queue.add_photo(identified(tmp_path / "a.jpg", "a"))
    [job] = store.queue.claim(8, "w")
    store.queue.retry_later(job, "boom", delay_s=60)
    assert store.queue.claim(8, "w") == []  # not due yet
    store.queue.give_up(job, "boom", tmp_path / "quarantine" / "a.jpg")
    assert store.queue.counts(datetime(2000, 1, 1))["failed"] == 1
    assert store.queue.recent_failures()[0].quarantined_to.endswith("a.jpg")


def test_readers_never_block_the_daemons_writes(sqlite_store, tmp_path):
    store = sqlite_store
    reader = sqlite3.connect(store.engine.url.database)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM photos").fetchall()  # a report holding a read transaction open
    start = time.perf_counter()
    store.queue.add_photo(identified(tmp_path / "a.jpg", "a"))
    assert time.perf_counter() - start < 2
    reader.rollback()
    reader.close()


def test_concurrent_writers_in_one_daemon_never_see_database_is_locked(store, tmp_path):
    errors = []

    def add(i: int) -> None:
        try:
            for k in range(20):
                store.queue.add_photo(identified(tmp_path / f"{i}-{k}.jpg", f"{i:02d}{k:02d}" + "0" * 60))
                store.queue.claim(1, f"w{i}")
        except Exception as exc:  # noqa: BLE001 - collected for the assert
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_a_second_daemon_on_the_same_store_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'qa.sqlite3'}"
    first, second = StoreLock(url), StoreLock(url)
    first.acquire()
    try:
        assert second.held_elsewhere()
        with pytest.raises(StoreError, match="another qa-daemon is running on this store"):
            second.acquire()
    finally:
        first.release()
    assert not second.held_elsewhere()


def test_store_url_password_is_hidden():
    assert "secret" not in redact("postgresql://qa:secret@db.example/qa")


def test_store_in_a_missing_folder_is_one_clear_error(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        Store.open(f"sqlite:///{tmp_path / 'nope' / 'qa.sqlite3'}")


def test_a_photo_given_up_on_is_retried_when_dropped_in_again(store, tmp_path):
    store.queue.add_photo(identified(tmp_path / "a.jpg", "a"))
    [job] = store.queue.claim(8, "w")
    store.queue.give_up(job, "boom", tmp_path / "quarantine" / "a.jpg")
    again = store.queue.add_photo(identified(tmp_path / "again" / "a.jpg", "a"))
    assert again.kind == "new"
    [retry] = store.queue.claim(8, "w")
    assert (retry.photo_id, retry.attempts, retry.path) == (job.photo_id, 1, tmp_path / "again" / "a.jpg")


def test_a_photo_in_hand_at_every_crash_is_handed_back_for_quarantine_not_requeued(store, tmp_path):
    store.queue.add_photo(identified(tmp_path / "poison.jpg", "a"))
    store.queue.add_photo(identified(tmp_path / "fine.jpg", "b"))
    for _ in range(2):  # two daemons died while processing both
        assert len(store.queue.claim(8, "w")) in (1, 2)
        requeued, exhausted = store.queue.recover(max_attempts=2)
    assert requeued == 0 and sorted(j.path.name for j in exhausted) == ["fine.jpg", "poison.jpg"]


def test_touching_a_duplicate_does_not_count_it_again(store, tmp_path):
    store.queue.add_photo(identified(tmp_path / "a.jpg", "a"))
    store.queue.add_photo(identified(tmp_path / "copy.jpg", "a"))
    assert store.queue.add_photo(identified(tmp_path / "copy.jpg", "a", mtime_ns=5)).kind == "known"
    assert store.queue.counts(datetime(2000, 1, 1))["duplicates"] == 1


def test_daemons_sharing_a_server_never_claim_the_same_photo(pg_database, tmp_path):
    stores = [Store.open(pg_database) for _ in range(3)]
    for i in range(40):
        stores[0].queue.add_photo(identified(tmp_path / f"{i}.jpg", f"{i:064d}"))
    claimed: list[list[int]] = [[] for _ in stores]

    def claim(k: int) -> None:
        while jobs := stores[k].queue.claim(2, f"daemon-{k}"):
            claimed[k] += [j.job_id for j in jobs]

    threads = [threading.Thread(target=claim, args=(k,)) for k in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [j for c in claimed for j in c]
    assert len(every) == 40 and len(set(every)) == 40
    for s in stores:
        s.close()


def test_on_a_shared_server_only_a_silent_daemons_jobs_are_requeued(store, tmp_path):
    store.queue.add_photo(identified(tmp_path / "a.jpg", "a"))
    store.queue.add_photo(identified(tmp_path / "b.jpg", "b"))
    store.runs.beat("alive")
    store.queue.claim(1, "alive")
    store.queue.claim(1, "dead")  # never sent a heartbeat
    requeued, _ = store.queue.take_over(max_attempts=3, stale_s=60)
    assert requeued == 1
    assert [j.path.name for j in store.queue.claim(8, "other")] == ["b.jpg"]


def test_daemons_starting_together_on_a_new_server_database_migrate_it_once(pg_database):
    errors = []

    def open_store() -> None:
        try:
            Store.open(pg_database).close()
        except Exception as exc:  # noqa: BLE001 - collected for the assert
            errors.append(exc)

    threads = [threading.Thread(target=open_store, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "concurrent migrations deadlocked"
    assert errors == []



def test_daemons_starting_together_on_a_new_store_run_the_same_model_version(store, tmp_path, monkeypatch):
    """The daemon that loses the race to register the configured checkpoint reads the winner's row
    instead of dying of the unique constraint."""
    from sqlalchemy.exc import IntegrityError

    real, calls = store.models._startup, []

    def racing(*args):
        calls.append(args)
        if len(calls) == 1:  # another daemon registers it between our look and our insert
            real(*args)
            raise IntegrityError("INSERT INTO model_versions", {}, Exception("duplicate key value"))
        return real(*args)

    monkeypatch.setattr(store.models, "_startup", racing)
    version = store.models.startup(tmp_path / "m", "compact", "a" * 64, {})
    assert len(calls) == 2 and version.active
    assert [v.id for v in store.models.versions()] == [version.id]


def test_rollback_passes_over_a_version_rejected_since_it_was_promoted(store, tmp_path):
    first = store.models.register("v1", tmp_path / "v1", "compact", "1" * 64, {})
    broken = store.models.register("v2", tmp_path / "v2", "compact", "2" * 64, {})
    store.models.register("v3", tmp_path / "v3", "compact", "3" * 64, {})
    store.models.reject(broken)  # promoted once, then found unloadable
    assert store.models.rollback().id == first
    assert store.models.active().name == "v1"
    store.models.reject(first)  # the version rolled back to fails too: back to the last good one, v3
    assert store.models.rollback().name == "v3"


def rows_of(store: Store, photo_id: int) -> tuple:
    """The photo's row, its job's row and its detections, as the store holds them."""
    from sqlalchemy import select

    from daemon.store.schema import Detection, Job, Photo
    with store.reader() as s:
        return (s.get(Photo, photo_id), s.scalar(select(Job).where(Job.photo_id == photo_id)),
                list(s.scalars(select(Detection).where(Detection.photo_id == photo_id).order_by(Detection.id))))


def test_completing_a_photo_records_its_results_on_it_and_leaves_every_other_photo_as_it_was(
        store, tmp_path, monkeypatch):
    from daemon.store import queue as queue_module
    a = store.queue.add_photo(identified(tmp_path / "a.jpg", "a")).photo_id
    b = store.queue.add_photo(identified(tmp_path / "b.jpg", "b")).photo_id
    mv = store.models.register("tiny", tmp_path, "compact", "f" * 64, {})
    job_a, job_b = store.queue.claim(8, "test")
    assert (job_b.photo_id, job_b.path, job_b.site, job_b.location, job_b.width, job_b.height) == (
        b, tmp_path / "b.jpg", "tower-a", "L3", 640, 480)
    store.queue.retry_later(job_a, "a passing fault", delay_s=0)  # its job carries an error until it is done
    clock = [datetime(2030, 5, 6, 7, 8, 9)]
    monkeypatch.setattr(queue_module, "utcnow", lambda: clock[0])
    [job_a] = store.queue.claim(8, "test")
    now = clock[0] = datetime(2030, 5, 6, 7, 9, 0)  # completed a while after it was claimed
    b_result = PhotoResult(tmp_path / "out-b", None, 7.0, [DetectionResult(
        "taping", "segment taping area", tmp_path / "out-b" / "b.png", 0.4, MEASURES)])
    store.queue.complete([(job_b, b_result)], mv)
    a_result = PhotoResult(tmp_path / "out-a", tmp_path / "out-a" / "a__overlay.jpg", 12.5, [
        DetectionResult("crack", "segment crack", tmp_path / "out-a" / "a__segment_crack.png", 0.55, MEASURES),
        DetectionResult("taping", "segment taping area", tmp_path / "out-a" / "a__segment_taping_area.png", 0.45,
                        MEASURES)])
    store.queue.complete([(job_a, a_result)], mv)
    store.queue.complete([(job_a, a_result)], mv)  # made again (a scrub): its detections replaced, not added

    photo, job, detections = rows_of(store, a)
    assert (photo.processed_at, photo.processing_ms, photo.model_version_id) == (now, 12.5, mv)
    assert (photo.output_dir, photo.overlay_path) == (str(tmp_path / "out-a"), str(a_result.overlay_path))
    assert (job.status, job.last_error, job.updated_at) == ("done", None, now)
    assert [(d.task, d.prompt, d.mask_path, d.threshold, d.model_version_id) for d in detections] == [
        ("crack", "segment crack", str(a_result.detections[0].mask_path), 0.55, mv),
        ("taping", "segment taping area", str(a_result.detections[1].mask_path), 0.45, mv)]
    photo, job, detections = rows_of(store, b)
    assert (photo.processing_ms, photo.output_dir, photo.overlay_path) == (7.0, str(tmp_path / "out-b"), None)
    assert job.status == "done" and [d.mask_path for d in detections] == [str(tmp_path / "out-b" / "b.png")]


def test_a_job_retried_with_no_delay_is_due_at_once(store, tmp_path, monkeypatch):
    from daemon.store import queue as queue_module
    now = datetime(2030, 5, 6, 7, 8, 9)
    monkeypatch.setattr(queue_module, "utcnow", lambda: now)  # the clock stands still: due at exactly now
    store.queue.add_photo(identified(tmp_path / "a.jpg", "a"))
    [job] = store.queue.claim(8, "test")
    store.queue.retry_later(job, "a passing fault", delay_s=0)
    assert [j.job_id for j in store.queue.claim(8, "test")] == [job.job_id]


def test_jobs_are_claimed_in_the_order_their_photos_arrived_a_retried_one_included(store, tmp_path):
    ids = [store.queue.add_photo(identified(tmp_path / f"{n}.jpg", n)).photo_id for n in "abc"]
    [first] = store.queue.claim(1, "test")
    store.queue.retry_later(first, "a passing fault", delay_s=0)  # rewritten last (PostgreSQL: at the heap's end)
    assert [j.photo_id for j in store.queue.claim(8, "test")] == ids


def test_a_daemon_claims_past_the_rows_another_daemon_holds_without_waiting(pg_database, tmp_path):
    """On a shared server a job another daemon is claiming is skipped, not waited for; and a photo row
    locked by another writer (a file moving) does not hide its job."""
    import sqlalchemy as sa
    store = Store.open(pg_database)
    a, b, c = (store.queue.add_photo(identified(tmp_path / f"{n}.jpg", n)).photo_id for n in "abc")
    other = sa.create_engine(pg_database)
    claimed: list[int] = []
    with other.connect() as conn:
        conn.exec_driver_sql(f"SELECT id FROM jobs WHERE photo_id = {a} FOR UPDATE")
        conn.exec_driver_sql(f"SELECT id FROM photos WHERE id = {b} FOR UPDATE")
        worker = threading.Thread(target=lambda: claimed.extend(j.photo_id for j in store.queue.claim(8, "test")))
        worker.start()
        worker.join(timeout=20)
        waited = worker.is_alive()
        conn.rollback()  # lets a waiting claim finish
    worker.join()
    other.dispose()
    store.close()
    assert not waited, "the claim waited for another daemon's locks"
    assert claimed == [b, c]
