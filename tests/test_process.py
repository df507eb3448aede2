"""Processing queued photos in-process with a tiny model: masks, measures, and failures that stay contained."""

from __future__ import annotations

import time
from datetime import datetime

import cv2
import numpy as np
from PIL import Image

from daemon.app import pause_recorder
from daemon.intake import identify, record
from daemon.space import Space
from daemon.store import Store
from model.images import decode
from tests.support.orientation import misplaced, red_corner_photo, sees_red
from tests.support.photos import write_photo as photo
from tests.support.processor import queue


def test_masks_have_the_displayed_size_of_the_source_and_values_0_255(setup):
    root, store, processor = setup
    queue(store, root, photo(root / "tower-a" / "L1" / "rotated.jpg", (64, 48), orientation=6))
    processor.process(store.queue.claim(8, "t"))
    out = processor.config.outputs.dir / "tower-a" / datetime.now().strftime("%Y-%m-%d")
    for name in ("rotated__segment_crack.png", "rotated__segment_taping_area.png"):
        mask = cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (64, 48) and set(np.unique(mask)) <= {0, 255}
    assert store.queue.counts(datetime(2000, 1, 1))["processed"] == 1


def test_large_jpegs_are_decoded_small_without_losing_the_source_size(tmp_path):
    big = photo(tmp_path / "big.jpg", (4000, 3000))
    d = decode(big, 896)
    assert d.size == (4000, 3000) and max(d.rgb.shape[:2]) == 896 and d.rgb.shape[2] == 3


def test_a_photo_the_model_fails_on_fails_alone_and_the_rest_of_its_batch_is_done(setup, monkeypatch):
    root, store, processor = setup
    good = [photo(root / f"ok{i}.jpg") for i in range(3)]
    poison = photo(root / "poison.jpg", (90, 30))
    queue(store, root, *good, poison)
    real = processor.model.predict

    def predict(images, prompts):
        if any(im.shape[:2] == (30, 90) for im in images):
            raise RuntimeError("kernel failure")
        return real(images, prompts)

    monkeypatch.setattr(processor.model, "predict", predict)
    processor.process(store.queue.claim(8, "t"))
    counts = store.queue.counts(datetime(2000, 1, 1))
    assert (counts["processed"], counts["pending"]) == (3, 1)
    processor.process(store.queue.claim(8, "t"))  # the second and last attempt: quarantined
    assert store.queue.counts(datetime(2000, 1, 1))["failed"] == 1
    assert (processor.config.outputs.quarantine / "poison.jpg").is_file()


def test_photos_whose_share_is_unmounted_wait_without_using_up_their_attempts(setup, tmp_path):
    root, store, processor = setup
    queue(store, root, photo(root / "a.jpg"))
    root.rename(tmp_path / "unmounted")
    for _ in range(3):
        processor.process(store.queue.claim(8, "t"))
    counts = store.queue.counts(datetime(2000, 1, 1))
    assert (counts["pending"], counts["failed"]) == (1, 0)
    (tmp_path / "unmounted").rename(root)
    time.sleep(1.1)  # the retry is due a second later
    processor.process(store.queue.claim(8, "t"))
    assert store.queue.counts(datetime(2000, 1, 1))["processed"] == 1


def test_a_photo_that_vanishes_before_processing_waits_and_is_processed_when_it_reappears(setup, tmp_path):
    root, store, processor = setup
    queue(store, root, photo(root / "tower-a" / "a.jpg"))
    (root / "tower-a" / "a.jpg").rename(tmp_path / "away.jpg")  # deleted, or its share unmounted under it
    processor.process(store.queue.claim(8, "t"))
    counts = store.queue.counts(datetime(2000, 1, 1))
    assert (counts["missing"], counts["failed"], counts["pending"]) == (1, 0, 0)
    assert not processor.config.outputs.quarantine.exists()
    (tmp_path / "away.jpg").rename(root / "tower-a" / "a.jpg")  # the same file back: the rescan offers it
    assert str(root / "tower-a" / "a.jpg") not in {p for p, _, _ in store.queue.known_files()}
    assert record(store, identify(root / "tower-a" / "a.jpg", root, ["site", "location"])).kind == "new"
    processor.process(store.queue.claim(8, "t"))
    counts = store.queue.counts(datetime(2000, 1, 1))
    assert (counts["processed"], counts["missing"], counts["duplicates"]) == (1, 0, 0)


def test_a_photo_moved_inside_the_root_before_processing_is_processed_at_its_new_place_not_as_a_copy(setup):
    root, store, processor = setup
    queue(store, root, photo(root / "tower-a" / "a.jpg"))
    jobs = store.queue.claim(8, "t")  # in hand when the crew moves it
    (root / "tower-b").mkdir()
    (root / "tower-a" / "a.jpg").rename(root / "tower-b" / "a.jpg")
    assert record(store, identify(root / "tower-b" / "a.jpg", root, ["site", "location"])).kind == "known"
    processor.process(jobs)  # the old path is gone: queued again at the new one, no attempt used
    processor.process(store.queue.claim(8, "t"))
    counts = store.queue.counts(datetime(2000, 1, 1))
    assert (counts["processed"], counts["missing"], counts["duplicates"], counts["failed"]) == (1, 0, 0, 0)


def test_a_full_outputs_disk_pauses_work_records_it_and_uses_no_attempts(setup, monkeypatch):
    import errno

    from sqlalchemy import select

    from daemon.store import Failure
    from model import masks

    root, store, processor = setup
    queue(store, root, photo(root / "a.jpg"))

    def full(path, *_):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(masks, "write_png", full)
    for _ in range(3):  # more failures than max_attempts
        processor.process(store.queue.claim(8, "t"))
        time.sleep(1.1)
    assert processor.space.paused and "No space left" in processor.space.paused
    counts = store.queue.counts(datetime(2000, 1, 1))
    assert (counts["pending"], counts["failed"]) == (1, 0)
    with store.reader() as s:
        assert [f.stage for f in s.scalars(select(Failure).where(Failure.stage == "outputs"))] == ["outputs"]


def test_the_pause_ends_by_itself_when_space_returns(tmp_path, monkeypatch):
    from collections import namedtuple

    from daemon import space as space_module

    store = Store.open(f"sqlite:///{tmp_path / 'qa.sqlite3'}")
    free = {"mb": 50}
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(space_module.shutil, "disk_usage", lambda _: usage(0, 0, free["mb"] * 2**20))
    space = Space(tmp_path / "out", 100, pause_recorder(store, "t", tmp_path / "out"), check_s=0)
    assert not space.ok() and "below outputs.min_free_mb" in space.paused
    free["mb"] = 500
    assert space.ok() and space.paused is None
    space.full("No space left on device")  # a quota or a reserve: free space said yes, the write said no
    assert not space.ok()
    free["mb"] = 502
    assert space.ok()
    assert store.runs.daemons_seen(60) == [("t", None)]
    store.close()


def test_a_photo_whose_failure_could_not_be_recorded_is_queued_again_before_the_next_batch(setup, monkeypatch):
    from sqlalchemy.exc import OperationalError

    root, store, processor = setup
    queue(store, root, photo(root / "a.jpg"))
    [job] = store.queue.claim(8, processor.worker)

    def locked(*args, **kwargs):
        raise OperationalError("UPDATE jobs", {}, Exception("database is locked"))

    monkeypatch.setattr(store.queue, "retry_later", locked)
    processor.failed(job, "writing the results failed: disk trouble", count=False)
    assert store.queue.counts(datetime(2000, 1, 1))["pending"] == 1 and processor.stranded  # still `running`
    monkeypatch.undo()
    processor.start()  # the daemon's loop: the stranded job goes back to the queue and is processed
    deadline = time.monotonic() + 30
    while store.queue.counts(datetime(2000, 1, 1))["processed"] < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    processor.stop_event.set()
    processor.join(timeout=30)
    assert store.queue.counts(datetime(2000, 1, 1))["processed"] == 1


# ---- what users see: orientation, overlays; a GPU's out-of-memory; a photo that crashes the daemon ----

def test_masks_follow_the_exif_orientation_of_each_photo_as_viewers_show_it(setup, monkeypatch):
    root, store, processor = setup
    monkeypatch.setattr(processor.model, "predict_logits", sees_red)
    photos = [red_corner_photo(root / "tower-a" / "L1" / f"o{o}.jpg", o) for o in range(1, 9)]
    queue(store, root, *photos)
    processor.process(store.queue.claim(8, "t"))
    out = processor.config.outputs.dir / "tower-a" / datetime.now().strftime("%Y-%m-%d")
    for path in photos:  # a few pixels along the corner's edges may differ (JPEG)
        assert misplaced(out / f"{path.stem}__segment_crack.png", path) < 0.02, f"{path.name}: not where it is red"


def test_overlays_are_no_larger_than_outputs_overlay_max_side_and_masks_keep_the_full_size(setup):
    root, store, processor = setup
    outputs = processor.config.outputs
    processor.config = processor.config.model_copy(update={"outputs": outputs.model_copy(
        update={"overlay_max_side": 64})})
    queue(store, root, photo(root / "tower-a" / "L1" / "wide.jpg", (400, 300)))
    processor.process(store.queue.claim(8, "t"))
    out = outputs.dir / "tower-a" / datetime.now().strftime("%Y-%m-%d")
    with Image.open(out / "wide__overlay.jpg") as im:
        assert im.size == (64, 48)
    with Image.open(out / "wide__segment_crack.png") as im:
        assert im.size == (400, 300)


def test_a_gpu_out_of_memory_halves_the_batch_until_it_fits_and_every_photo_is_done(setup, monkeypatch, caplog):
    import logging

    import torch

    from daemon.process import Processor

    root, store, processor = setup
    monkeypatch.setattr(Processor, "infer_batch", property(lambda self: self.batch_size))  # as on a GPU
    processor.batch_size = 8
    real, calls = processor.model.predict, []

    def predict(images, prompts):  # room for two photos at a time
        calls.append(len(images))
        if len(images) > 2:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory with {len(images)} photos (simulated)")
        return real(images, prompts)

    monkeypatch.setattr(processor.model, "predict", predict)
    queue(store, root, *[photo(root / f"p{i}.jpg", seed=i) for i in range(8)])
    with caplog.at_level(logging.WARNING, logger="qa-daemon"):
        processor.process(store.queue.claim(8, "t"))
    counts = store.queue.counts(datetime(2000, 1, 1))
    assert (counts["processed"], counts["failed"], counts["pending"]) == (8, 0, 0)
    assert calls == [8, 4, 2, 2, 4, 2, 2] and processor.batch_size == 2  # halved until it fits, for good
    assert "CUDA out of memory with 8 photos; batch size now 4" in caplog.text
    queue(store, root, *[photo(root / f"q{i}.jpg", seed=10 + i) for i in range(3)])
    calls.clear()
    processor.process(store.queue.claim(processor.batch_size, "t"))
    assert calls == [2]  # the next batches are claimed at the size that fits


def test_a_photo_in_hand_at_every_crash_is_quarantined_at_the_next_start_with_a_note(setup):
    root, store, processor = setup  # watch.max_attempts: 2
    poison = photo(root / "tower-a" / "L1" / "poison.jpg")
    queue(store, root, poison)
    for _ in range(2):  # claimed, then the daemon dies before any outcome is recorded; twice
        processor.recover()
        assert [j.path for j in store.queue.claim(8, "t")] == [poison]
    processor.recover()  # the next start
    moved = processor.config.outputs.quarantine / "tower-a" / "L1" / "poison.jpg"
    assert moved.is_file() and not poison.exists()
    assert "stopped 2 times while processing this photo" in (moved.parent / "poison.jpg.error.txt").read_text()
    counts = store.queue.counts(datetime(2000, 1, 1))
    assert (counts["failed"], counts["pending"]) == (1, 0)
    assert store.queue.claim(8, "t") == []
