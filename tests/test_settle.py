"""When a found file is complete: after holding still for `watch.settle_s`, or at once when the OS reports its
writer done (it closed the file, or the file was renamed into place), as long as it has not changed since.

The Settler runs on a clock the tests move; the watcher on real OS events and on polling; the daemon as users
run it, with a settle time far longer than the test.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from daemon.config import Config, WatchConfig
from daemon.settle import Settler
from daemon.store import Store
from daemon.watcher import Watcher
from tests.support.daemon import DaemonProcess, write_daemon_config
from tests.support.photos import photo_bytes, put, write_photo


class Clock:
    """Monotonic seconds that move only when told."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def settler(clock: Clock, settle_s: float = 30.0, backoff_s: float = 5.0) -> Settler:
    return Settler(settle_s=settle_s, backoff_s=backoff_s, max_attempts=3, clock=clock)


def test_a_file_its_writer_closed_is_ready_at_once(tmp_path):
    f = write_photo(tmp_path / "closed.jpg")
    s = settler(Clock())
    s.offer(f, tmp_path, complete=True)
    assert s.ready() == [(f, tmp_path, 0)]


def test_a_close_reported_after_the_file_was_first_looked_at_makes_it_ready_at_once(tmp_path):
    f = write_photo(tmp_path / "closed.jpg")
    s = settler(Clock())
    s.offer(f, tmp_path)  # "created": the first look starts the settle clock
    assert s.ready() == []
    s.offer(f, tmp_path, complete=True)  # "closed", delivered after that look
    assert s.ready() == [(f, tmp_path, 0)]


def test_a_file_that_changes_after_its_close_waits_the_settle_time(tmp_path):
    f = write_photo(tmp_path / "reopened.jpg")
    clock = Clock()
    s = settler(clock)
    s.offer(f, tmp_path, complete=True)
    with f.open("ab") as out:  # its writer opens it again
        out.write(b"more")
    assert_ready_after_exactly_the_settle_time(s, clock, f, tmp_path)


def test_a_plain_sighting_waits_the_settle_time(tmp_path):
    f = write_photo(tmp_path / "seen.jpg")  # found by "created"/"modified" events, a rescan or polling
    clock = Clock()
    s = settler(clock)
    s.offer(f, tmp_path)
    assert_ready_after_exactly_the_settle_time(s, clock, f, tmp_path)


def assert_ready_after_exactly_the_settle_time(s: Settler, clock: Clock, f: Path, root: Path) -> None:
    assert s.ready() == []
    clock.now += 29.9
    assert s.ready() == []
    clock.now += 0.1
    assert s.ready() == [(f, root, 0)]


def test_a_closed_file_intake_found_incomplete_keeps_its_backoff_until_its_writer_changes_it(tmp_path):
    f = write_photo(tmp_path / "cut-short.jpg")
    clock = Clock()
    s = settler(clock)
    s.offer(f, tmp_path, complete=True)
    assert s.ready() == [(f, tmp_path, 0)]
    assert s.retry(f, "does not decode to the end") is False
    s.offer(f, tmp_path, complete=True)  # closed again without a change: no reason to read it again now
    assert s.ready() == []
    with f.open("ab") as out:  # the rest arrives, and the writer closes it
        out.write(b"rest")
    s.offer(f, tmp_path, complete=True)
    assert s.ready() == [(f, tmp_path, 0)]


class Offers:
    """A settler that records what the watcher offers: (file name, complete)."""

    def __init__(self):
        self.offered: list[tuple[str, bool]] = []

    def offer(self, path: Path, root: Path, complete: bool = False) -> None:
        self.offered.append((path.name, complete))


def offers_for_deliveries(tmp_path: Path, polling: bool) -> list[tuple[str, bool]]:
    """What a watcher (OS events, or polling) offers while photos are delivered the usual ways: written in place,
    written under a temporary name and renamed, copied into a folder outside the root and renamed in."""
    root, staging = tmp_path / "in", tmp_path / "staging"
    (root / "tower-a").mkdir(parents=True)
    staging.mkdir()
    store = Store.open(f"sqlite:///{tmp_path / 'qa.sqlite3'}")
    offers = Offers()
    watcher = Watcher(Config(watch=WatchConfig(roots=[root], polling=polling, poll_interval_s=0.1)),
                      threading.Event(), store, offers)
    watcher.observer.start()
    try:
        watcher.check_roots()
        time.sleep(0.3)  # the polling observer's first snapshot
        write_photo(root / "tower-a" / "in-place.jpg")
        put(photo_bytes(seed=1), root / "tower-a" / "renamed.jpg", "rename")
        put(photo_bytes(seed=2), staging / "uploaded.jpg", "rename")
        (staging / "uploaded.jpg").rename(root / "tower-a" / "uploaded.jpg")
        end = time.monotonic() + 5
        while time.monotonic() < end and {n for n, _ in offers.offered} != {"in-place.jpg", "renamed.jpg",
                                                                             "uploaded.jpg"}:
            time.sleep(0.05)
        time.sleep(0.3)  # the events that follow
    finally:
        watcher.stop()
        store.close()
    return offers.offered


def test_with_os_events_closed_and_renamed_photos_are_offered_complete(tmp_path):
    offered = offers_for_deliveries(tmp_path, polling=False)
    assert {n for n, complete in offered if complete} == {"in-place.jpg", "renamed.jpg", "uploaded.jpg"}


def test_with_polling_no_photo_is_offered_complete(tmp_path):
    offered = offers_for_deliveries(tmp_path, polling=True)
    assert {n for n, _ in offered} == {"in-place.jpg", "renamed.jpg", "uploaded.jpg"}
    assert not any(complete for _, complete in offered)


def test_photos_closed_by_their_writer_or_renamed_into_place_are_processed_long_before_the_settle_time(
        tmp_path, tiny_checkpoint):
    """settle_s is 120 s: the photos dropped while the daemon runs are done within seconds, while the one found by
    the start-up rescan (no close reported) is still settling. The polling half is the watcher test above: a
    second daemon start would cost 10 to 30 s on a 2-core machine."""
    settle_s = 120
    waiting = write_photo(tmp_path / "in" / "tower-a" / "L1" / "waiting.jpg", (160, 120))
    for folder in ("tower-a/L2", "tower-b/L1"):  # watched from the start: in a folder made a moment before the
        (tmp_path / "in" / folder).mkdir(parents=True)  # photo, its events may come before the folder's watch
    config = write_daemon_config(tmp_path, {
        "model": {"checkpoint": str(tiny_checkpoint), "device": "cpu", "batch_size": 4},
        "watch": {"roots": ["in"], "settle_s": settle_s, "heartbeat_s": 1},
        "store": {"url": "sqlite:///qa.sqlite3"},
        "schedule": {"daily_report": None, "weekly_summary": None, "retrain_check_hours": None},
    })
    with DaemonProcess(tmp_path, config) as d:
        d.start(wait=True)
        dropped = time.monotonic()
        write_photo(tmp_path / "in" / "tower-a" / "L2" / "closed.jpg", (160, 120))  # open, write, close
        put(photo_bytes((160, 120), seed=1), tmp_path / "in" / "tower-b" / "L1" / "renamed.jpg", "rename")
        uploaded = write_photo(tmp_path / "staging" / "uploaded.jpg", (160, 120), seed=2)  # outside the root
        uploaded.rename(tmp_path / "in" / "tower-b" / "L1" / "uploaded.jpg")
        d.wait_for("the three dropped photos done", lambda: d.done() == 3, timeout=settle_s / 4)
        assert time.monotonic() - dropped < settle_s / 4
        assert sorted(d.commits()) == ["closed.jpg", "renamed.jpg", "uploaded.jpg"]
        d.wait_for("a heartbeat with the photo found at start still settling", lambda: any(
            "heartbeat: 3 processed" in line and "0 pending, 1 settling" in line for line in d.tail(5)))
        assert d.query(f"SELECT id FROM files WHERE path = '{waiting}'") == [], "found by the rescan: waits settle_s"
        assert d.terminate() == 0
    assert "Traceback" not in d.log_text()


def test_a_file_not_taken_yet_shows_as_settling_then_as_waiting_with_its_error_until_it_is_taken(tmp_path):
    f = tmp_path / "empty.jpg"
    f.write_bytes(b"")
    clock = Clock()
    s = settler(clock)
    versions = [s.version]
    s.offer(f, tmp_path, complete=True)
    versions.append(s.version)
    snap = s.snapshot()
    assert (snap["settling"], snap["waiting"]) == (1, 0)
    assert {k: v for k, v in snap["files"][0].items() if k != "since"} == {
        "path": str(f), "state": "settling", "attempts": 0, "error": ""}
    assert s.ready() == [(f, tmp_path, 0)]
    s.retry(f, "empty file (0 bytes)")
    versions.append(s.version)
    [shown] = s.snapshot()["files"]
    assert (s.snapshot()["waiting"], shown["state"], shown["attempts"], shown["error"]) == (
        1, "waiting", 1, "empty file (0 bytes)")
    s.forget(f)  # taken, or quarantined
    versions.append(s.version)
    assert s.snapshot() == {"settling": 0, "waiting": 0, "files": []}
    assert versions == sorted(set(versions)), "each change moves the version, so the heartbeat publishes it"


def test_a_huge_copy_is_counted_in_full_and_listed_in_part_waiting_files_first(tmp_path):
    s = settler(Clock())
    files = [tmp_path / f"IMG_{i:04d}.jpg" for i in range(300)]
    for f in files:
        s.offer(f, tmp_path)
    s.retry(files[-1], "does not decode to the end")  # the newest, yet listed first: it needs a look
    snap = s.snapshot(limit=200)
    assert (snap["settling"], snap["waiting"], len(snap["files"])) == (299, 1, 200)
    assert snap["files"][0]["path"] == str(files[-1]) and snap["files"][1]["path"] == str(files[0])


def test_a_watcher_stopped_before_it_began_watching_stops_cleanly(tmp_path):
    """A start that fails at once (a refused store, a missing model) stops the watcher before its thread has
    started the OS observer: the stop must not fail, hiding the error the user needs to see."""
    (tmp_path / "in").mkdir()
    store = Store.open(f"sqlite:///{tmp_path / 'qa.sqlite3'}")
    try:
        watcher = Watcher(Config(watch=WatchConfig(roots=[tmp_path / "in"])), threading.Event(), store, Offers())
        watcher.stop()
        assert not watcher.observer.is_alive()
    finally:
        store.close()
