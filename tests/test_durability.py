"""Results that survive a power cut: each result file, then its folder, is flushed to disk before the
transaction that records the photo done commits; the store's commits are as durable as configured."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import event

from daemon.store import Store
from model.files import durable, write_atomic
from tests.support.opened import StoreOpened, stop_once_the_store_is_open
from tests.support.photos import write_photo as photo
from tests.support.processor import queue


class Recorder(list):
    """The order of `os.fsync` (the path flushed), `os.replace` (source, target) and, once `watch(engine)`
    is called, the store's commits."""

    def watch(self, engine) -> None:
        event.listen(engine, "commit", lambda _conn: self.append(("commit",)))


@pytest.fixture
def recorded(monkeypatch) -> Recorder:
    events = Recorder()
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", Path(os.readlink(f"/proc/self/fd/{fd}"))))
        real_fsync(fd)

    def replace(src, dst, **kw):
        events.append(("rename", Path(src), Path(dst)))
        real_replace(src, dst, **kw)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads which file an fd is from /proc")
def test_result_files_then_their_folder_are_on_disk_before_the_photo_is_recorded_done(setup, recorded):
    root, store, processor = setup
    queue(store, root, photo(root / "tower-a" / "L1" / "wall.jpg"))
    jobs = store.queue.claim(8, "t")
    recorded.watch(store.engine)
    processor.process(jobs)

    assert store.queue.counts(datetime(2000, 1, 1))["processed"] == 1
    out_dir = processor.config.outputs.dir / "tower-a" / datetime.now().strftime("%Y-%m-%d")
    results = sorted(p for p in out_dir.iterdir())
    assert [p.name for p in results] == ["wall__overlay.jpg", "wall__segment_crack.png",
                                         "wall__segment_taping_area.png"]
    commits = [i for i, e in enumerate(recorded) if e == ("commit",)]
    assert len(commits) == 1  # the one transaction that stores the detections and marks the job done
    folder_syncs = [i for i, e in enumerate(recorded) if e == ("fsync", out_dir)]
    assert len(folder_syncs) == 1, "one flush of the folder for the photo, not one per file"
    for result in results:
        [renamed] = [i for i, e in enumerate(recorded) if e[0] == "rename" and e[2] == result]
        tmp = recorded[renamed][1]
        [flushed] = [i for i, e in enumerate(recorded) if e == ("fsync", tmp)]
        assert flushed < renamed < folder_syncs[0] < commits[0], f"{result.name}: {recorded}"
    # the new day folder's entry in the site folder (and the site's in the outputs folder) too
    for created in (out_dir, out_dir.parent):
        assert any(i < commits[0] for i, e in enumerate(recorded) if e == ("fsync", created.parent)), created


def test_with_outputs_fsync_off_results_are_written_without_flushing(setup, recorded):
    root, store, processor = setup
    processor.config = processor.config.model_copy(
        update={"outputs": processor.config.outputs.model_copy(update={"fsync": False})})
    queue(store, root, photo(root / "tower-a" / "L1" / "wall.jpg"))
    processor.process(store.queue.claim(8, "t"))
    assert store.queue.counts(datetime(2000, 1, 1))["processed"] == 1
    assert [e for e in recorded if e[0] == "fsync"] == []
    assert len([e for e in recorded if e[0] == "rename"]) == 3  # still atomic


def test_a_durable_block_that_fails_leaves_no_half_file_and_flushes_nothing_more(tmp_path, recorded):
    with pytest.raises(RuntimeError), durable():
        write_atomic(tmp_path / "a.png", b"a")
        raise RuntimeError("the encoder failed")
    assert [e for e in recorded if e == ("fsync", tmp_path)] == []  # the folder flush is for finished writes
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]


@pytest.mark.parametrize(("level", "value"), [("off", 0), ("normal", 1), ("full", 2), ("extra", 3)])
def test_the_configured_synchronous_level_is_set_on_every_store_connection(tmp_path, level, value):
    store = Store.open(f"sqlite:///{tmp_path / 'qa.sqlite3'}", synchronous=level)
    try:
        with store.engine.connect() as first, store.engine.connect() as second:  # two pooled connections
            assert [c.exec_driver_sql("PRAGMA synchronous").scalar() for c in (first, second)] == [value, value]
    finally:
        store.close()


def test_a_store_commits_with_synchronous_full_unless_told_otherwise(tmp_path):
    store = Store.open(f"sqlite:///{tmp_path / 'qa.sqlite3'}")
    try:
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2
    finally:
        store.close()


def test_the_daemon_opens_its_store_with_the_configured_synchronous_level(cli, write_config, tmp_path, monkeypatch):
    from model import SHIPPED_CHECKPOINT

    stop_once_the_store_is_open(monkeypatch)
    config = write_config({"store": {"url": f"sqlite:///{tmp_path / 'qa.sqlite3'}", "synchronous": "extra"},
                           "model": {"checkpoint": str(SHIPPED_CHECKPOINT)}})
    with pytest.raises(StoreOpened) as opened:
        cli("--config", config, "run", "--watch", tmp_path)
    with opened.value.store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 3
    opened.value.store.close()
