"""The scrub: result files deleted, truncated or corrupted after the fact are found, re-made from their
sources, or reported lost; nothing else is touched, and what retention removed on purpose is skipped."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from daemon.schedule import clean_outputs
from daemon.scrub import scrub
from daemon.store import Store
from daemon.store.schema import Failure, JobStatus, Photo, utcnow
from tests.support.photos import write_photo
from tests.support.processor import queue

EPOCH = datetime(2000, 1, 1)


def processed(setup, n: int) -> tuple[object, object, dict[str, Photo]]:
    """`n` photos processed by the in-process processor: (store, processor, photo row by file name)."""
    root, store, processor = setup
    files = [write_photo(root / "tower-a" / "L1" / f"p{i}.jpg", (64, 48), seed=i) for i in range(n)]
    queue(store, root, *files)
    processor.process(store.queue.claim(n, "t"))
    return store, processor, photos(store)


def photos(store) -> dict[str, Photo]:
    with store.reader() as s:
        return {p.name: p for p in s.scalars(select(Photo))}


def statuses(store) -> dict[str, str]:
    from daemon.store.schema import Job

    with store.reader() as s:
        return {name: status for name, status in s.execute(select(Photo.name, Job.status)
                                                           .join(Job, Job.photo_id == Photo.id))}


def masks_of(photo: Photo) -> list[Path]:
    out = Path(photo.output_dir)
    return sorted(out.glob(f"{photo.image_id}__segment_*.png"))


def damage(rows: dict[str, Photo]) -> None:
    """p0: a mask deleted; p1: a mask cut short; p2: the overlay's header overwritten; p3: a mask deleted and
    its source gone."""
    masks_of(rows["p0.jpg"])[0].unlink()
    truncated = masks_of(rows["p1.jpg"])[1]
    truncated.write_bytes(truncated.read_bytes()[:-20])  # the header reads; the pixels end early
    overlay = Path(rows["p2.jpg"].overlay_path)
    overlay.write_bytes(b"\0" * 64 + overlay.read_bytes()[64:])
    masks_of(rows["p3.jpg"])[0].unlink()
    Path(rows["p3.jpg"].path).unlink()


def test_a_scrub_without_fix_reports_damaged_results_and_changes_nothing(setup):
    store, _, rows = processed(setup, 5)
    damage(rows)
    found = scrub(store, fix=False)
    assert found.checked == 5 and (found.remade, found.lost) == (0, 0)
    assert sorted(Path(d.source).name for d in found.damaged) == ["p0.jpg", "p1.jpg", "p2.jpg", "p3.jpg"]
    assert {d.action for d in found.damaged} == {"found"}
    reasons = {Path(d.source).name: d.reason for d in found.damaged}
    assert "missing" in reasons["p0.jpg"] and "unreadable" in reasons["p1.jpg"]
    assert "overlay" in reasons["p2.jpg"] and "unreadable" in reasons["p2.jpg"]
    assert set(statuses(store).values()) == {JobStatus.done}


def test_damaged_results_are_remade_from_their_sources_and_nothing_else_is_reprocessed(setup):
    store, processor, rows = processed(setup, 5)
    damage(rows)
    found = scrub(store, fix=True)
    assert (found.checked, found.remade, found.lost) == (5, 3, 1)
    assert statuses(store) == {"p0.jpg": "pending", "p1.jpg": "pending", "p2.jpg": "pending", "p3.jpg": "lost",
                               "p4.jpg": "done"}
    jobs = store.queue.claim(10, "t")
    assert sorted(j.path.name for j in jobs) == ["p0.jpg", "p1.jpg", "p2.jpg"]
    processor.process(jobs)
    assert statuses(store)["p0.jpg"] == statuses(store)["p2.jpg"] == "done"
    again = photos(store)
    assert again["p4.jpg"].processed_at == rows["p4.jpg"].processed_at  # untouched
    assert all(again[n].processed_at > rows[n].processed_at for n in ("p0.jpg", "p1.jpg", "p2.jpg"))
    assert scrub(store, fix=True).damaged == []  # re-made files are whole; the lost photo is no longer checked


def test_a_photo_whose_source_is_gone_is_recorded_lost_with_the_reason(setup):
    store, _, rows = processed(setup, 4)
    masks_of(rows["p3.jpg"])[0].unlink()
    Path(rows["p3.jpg"].path).unlink()
    scrub(store, fix=True)
    with store.reader() as s:
        lost = s.scalars(select(Failure).where(Failure.stage == "results_lost")).all()
    assert [Path(f.path).name for f in lost] == ["p3.jpg"]
    assert lost[0].final and "is gone" in lost[0].error and "missing" in lost[0].error
    counts = store.queue.counts(EPOCH)
    assert counts["lost"] == 1 and counts["processed"] == 3  # the trends no longer count it


def test_a_lost_photo_dropped_in_again_is_processed_again(setup):
    store, processor, rows = processed(setup, 4)
    damage(rows)
    scrub(store, fix=True)
    root = setup[0]
    queue(store, root, write_photo(root / "tower-a" / "L1" / "p3.jpg", (64, 48), seed=3))
    processor.process(store.queue.claim(10, "t"))
    assert statuses(store)["p3.jpg"] == "done"


def test_results_retention_deleted_on_purpose_are_not_reported(setup):
    store, processor, rows = processed(setup, 2)
    day = Path(rows["p0.jpg"].output_dir).name
    config = processor.config.model_copy(update={"schedule": processor.config.schedule.model_copy(
        update={"retention_days": 1})})
    assert clean_outputs(config, date.fromisoformat(day) + timedelta(days=5), store) == 1
    assert not Path(rows["p0.jpg"].output_dir).exists()
    found = scrub(store, fix=True)
    assert found.checked == 0 and found.damaged == []
    assert set(statuses(store).values()) == {JobStatus.done}


def test_the_start_up_pass_checks_only_recent_results(setup):
    store, _, rows = processed(setup, 3)
    masks_of(rows["p0.jpg"])[0].unlink()
    assert scrub(store, fix=False, since=utcnow() + timedelta(minutes=1)).checked == 0
    recent = scrub(store, fix=False, since=utcnow() - timedelta(days=2))
    assert recent.checked == 3 and [Path(d.source).name for d in recent.damaged] == ["p0.jpg"]


def test_the_weekly_scrub_fixes_results_and_status_shows_what_it_found(setup):
    from daemon.schedule import Scheduler
    from daemon.status import status

    store, processor, rows = processed(setup, 3)
    masks_of(rows["p2.jpg"])[0].unlink()
    Path(rows["p2.jpg"].path).unlink()
    config = processor.config.model_copy(update={"store": processor.config.store.model_copy(
        update={"url": str(store.engine.url)})})
    Scheduler(config, store).weekly_scrub()
    state = status(config)
    assert state["lost"] == 1 and state["processed"] == 2
    assert state["last_scrub"]["outcome"].startswith("3 photos checked") and "1 lost" in state["last_scrub"]["outcome"]


def test_the_start_up_scrub_remakes_what_was_damaged_while_the_daemon_was_down(setup):
    from daemon.schedule import Scheduler

    store, processor, rows = processed(setup, 2)
    masks_of(rows["p1.jpg"])[1].unlink()
    Scheduler(processor.config, store).startup_scrub()
    assert statuses(store) == {"p0.jpg": "done", "p1.jpg": "pending"}


def test_a_scrub_while_the_daemon_runs_remakes_exactly_the_damaged_photos(tmp_path, tiny_checkpoint, cli):
    from tests.support.daemon import DaemonProcess, write_daemon_config

    config = write_daemon_config(tmp_path, {
        "model": {"checkpoint": str(tiny_checkpoint), "device": "cpu", "batch_size": 4},
        "watch": {"roots": ["in"], "settle_s": 0.2, "heartbeat_s": 2},
        "store": {"url": "sqlite:///qa.sqlite3"}, "outputs": {"dir": "out"},
        "schedule": {"scrub_startup_days": 0, "retrain_check_hours": None}})
    with DaemonProcess(tmp_path, config) as d:
        d.start(wait=True)
        folder = tmp_path / "in" / "tower-a" / "L1"
        folder.mkdir(parents=True)
        for i in range(5):
            write_photo(folder / f"p{i}.jpg", (64, 48), seed=i)
        d.wait_for("5 photos done", lambda: d.done() == 5)
        store = Store.open_existing(f"sqlite:///{d.db}")
        try:
            damage(photos(store))
        finally:
            store.close()
        result = cli("-c", config, "scrub", "--fix")
        assert result.code == 0, result.stderr
        assert "5 photos checked" in result.stdout and "(3 queued again, 1 lost)" in result.stdout
        d.wait_for("the 3 damaged photos re-made", lambda: d.done() == 4)
        assert d.commits() == {"p0.jpg": 2, "p1.jpg": 2, "p2.jpg": 2, "p3.jpg": 1, "p4.jpg": 1}
        assert d.count("SELECT count(*) FROM jobs WHERE status = 'lost'") == 1
    store = Store.open_existing(f"sqlite:///{d.db}")
    try:
        again = scrub(store, fix=False)
    finally:
        store.close()
    assert again.checked == 4 and again.damaged == []  # the re-made files are whole


def test_an_archived_photo_is_remade_from_the_archive_and_stays_where_it_lies(setup):
    root, store, processor = setup
    processor.config = processor.config.model_copy(update={"outputs": processor.config.outputs.model_copy(
        update={"archive": root.parent / "archive"})})
    store, processor, rows = processed(setup, 2)
    archived = Path(rows["p0.jpg"].path)
    assert archived.is_relative_to(root.parent / "archive") and archived.is_file()
    masks_of(rows["p0.jpg"])[0].unlink()
    assert scrub(store, fix=True).remade == 1
    processor.process(store.queue.claim(10, "t"))
    assert statuses(store)["p0.jpg"] == "done" and photos(store)["p0.jpg"].path == str(archived)
    assert sorted(p.name for p in archived.parent.iterdir()) == ["p0.jpg", "p1.jpg"]


def test_the_days_report_counts_what_the_scrub_remade_and_lists_what_was_lost(setup, tmp_path):
    from daemon.summary import write_report

    store, _, rows = processed(setup, 3)
    masks_of(rows["p0.jpg"])[0].unlink()
    masks_of(rows["p1.jpg"])[0].unlink()
    Path(rows["p1.jpg"].path).unlink()
    scrub(store, fix=True)
    today = datetime.now().date()
    page = write_report(store, "daily", today, today, tmp_path / "reports").read_text()
    assert "re-made from their sources" in page and "1 lost" in page
    assert page.count("results_lost") == 2  # the sentence, and the lost photo's row in the failures table
