"""Finding and taking photos: names, folder layout, completeness, identity, capture time, watch roots, measures."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import pytest

from daemon.config import Config, SeverityConfig, WatchConfig
from daemon.intake import Incomplete, NotAPhoto, identify
from daemon.measure import measure
from daemon.paths import is_photo, move_into, place
from daemon.settle import Settler
from daemon.store import Store
from daemon.watcher import Watcher
from tests.support.photos import photo_bytes


@pytest.mark.parametrize(("name", "taken"), [
    ("IMG_1.jpg", True), ("IMG_1.JPEG", True), ("scan.PNG", True), ("IMG_1.jpg.part", False),
    (".IMG_1.jpg", False), ("~IMG_1.jpg", False), ("IMG_1.jpg~", False), ("IMG_1.tmp", False), ("notes.txt", False),
])
def test_only_jpeg_and_png_names_are_taken_and_temporary_files_are_ignored(name, taken):
    assert is_photo(Path("in") / name) is taken


def test_site_and_location_come_from_the_folder_layout(tmp_path):
    levels = WatchConfig(layout="{site}/{location}").levels
    assert place(tmp_path / "tower-a" / "L3" / "x.jpg", tmp_path, levels) == ("tower-a", "L3")
    assert place(tmp_path / "tower-a" / "x.jpg", tmp_path, levels) == ("tower-a", "unknown")
    assert place(tmp_path / "x.jpg", tmp_path, levels) == ("unknown", "unknown")
    skip = WatchConfig(layout="{_}/{site}").levels
    assert place(tmp_path / "2026" / "tower-b" / "x.jpg", tmp_path, skip) == ("tower-b", "unknown")


def test_a_layout_with_other_words_is_refused():
    with pytest.raises(ValueError, match="site"):
        WatchConfig(layout="{site}/{room}")


def test_identity_capture_time_and_displayed_size_of_a_good_photo(tmp_path):
    photo = tmp_path / "tower-a" / "L3" / "IMG_1.jpg"
    photo.parent.mkdir(parents=True)
    photo.write_bytes(photo_bytes((64, 48), exif_time="2026:11:24 09:30:05", orientation=6))
    found = identify(photo, tmp_path, ["site", "location"])
    assert (found.site, found.location) == ("tower-a", "L3")
    assert (found.captured_at, found.captured_from) == (datetime(2026, 11, 24, 9, 30, 5), "exif")
    assert (found.width, found.height) == (48, 64)  # rotated a quarter turn by its EXIF orientation
    import hashlib
    assert found.sha256 == hashlib.sha256(photo.read_bytes()).hexdigest()


def test_capture_time_falls_back_to_the_file_time(tmp_path):
    photo = tmp_path / "IMG_2.jpg"
    photo.write_bytes(photo_bytes())
    os.utime(photo, (1764000000, 1764000000))
    found = identify(photo, tmp_path, [])
    assert (found.captured_at, found.captured_from) == (datetime.fromtimestamp(1764000000), "mtime")


def test_png_photos_are_taken(tmp_path):
    (tmp_path / "scan.png").write_bytes(photo_bytes(fmt="PNG"))
    found = identify(tmp_path / "scan.png", tmp_path, [])
    assert (found.width, found.height, found.captured_from) == (64, 48, "mtime")


def test_incomplete_files_wait_and_files_that_are_not_photos_are_refused(tmp_path):
    good, png = photo_bytes((200, 200)), photo_bytes((200, 200), fmt="PNG")
    cases = {"empty.jpg": (b"", Incomplete), "half.jpg": (good[: len(good) // 2], Incomplete),
             "three.jpg": (good[:2], Incomplete), "text.jpg": (b"hello, not a photo", NotAPhoto),
             "reserved.jpg": (b"\0" * 4096, Incomplete), "half.png": (png[: len(png) - 20], Incomplete)}
    for name, (data, error) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(error):
            identify(tmp_path / name, tmp_path, [])


def test_links_pointing_outside_the_watch_root_are_not_followed(tmp_path):
    outside, root = tmp_path / "secret.jpg", tmp_path / "in"
    outside.write_bytes(photo_bytes())
    root.mkdir()
    (root / "link.jpg").symlink_to(outside)
    with pytest.raises(NotAPhoto, match="outside the watch root"):
        identify(root / "link.jpg", root, [])


def test_a_file_is_ready_only_after_holding_still_for_the_settle_time(tmp_path):
    f = tmp_path / "growing.jpg"
    f.write_bytes(b"\xff\xd8\xff")
    settler = Settler(settle_s=0.3, backoff_s=0.1, max_attempts=2)
    settler.offer(f, tmp_path)
    assert settler.ready() == []  # first look starts the clock
    time.sleep(0.35)
    with f.open("ab") as out:
        out.write(b"more")
    assert settler.ready() == []  # changed since the last look: the clock starts again
    time.sleep(0.35)
    assert settler.ready() == [(f, tmp_path, 0)]
    assert settler.retry(f, "incomplete") is False
    time.sleep(0.15)
    assert settler.ready() == [(f, tmp_path, 1)]
    assert settler.retry(f, "incomplete") is True  # max_attempts reached: give up


def test_a_stalled_copy_is_not_given_up_on_before_incomplete_after_s(tmp_path):
    f = tmp_path / "stalled.jpg"
    f.write_bytes(b"\xff\xd8\xff")
    settler = Settler(settle_s=0.0, backoff_s=0.0, max_attempts=1, give_up_after_s=60)
    settler.offer(f, tmp_path)
    settler.ready()
    assert settler.ready() == [(f, tmp_path, 0)]
    assert settler.retry(f, "incomplete") is False  # out of attempts, but it changed less than 60 s ago


def test_moves_keep_the_folders_under_the_root_and_never_overwrite(tmp_path):
    root, dest = tmp_path / "in", tmp_path / "archive"
    for _ in range(2):
        (root / "tower-a").mkdir(parents=True, exist_ok=True)
        (root / "tower-a" / "x.jpg").write_bytes(b"1")
        move_into(root / "tower-a" / "x.jpg", root, dest)
    assert sorted(p.name for p in (dest / "tower-a").iterdir()) == ["x-1.jpg", "x.jpg"]


class Collector:
    def __init__(self):
        self.offered: list[Path] = []

    def offer(self, path: Path, root: Path, complete: bool = False) -> None:
        self.offered.append(path)


def test_rescan_finds_photos_missed_while_down_and_skips_the_daemons_own_folders(tmp_path):
    root = tmp_path / "in"
    (root / "tower-a").mkdir(parents=True)
    (root / "tower-a" / "a.jpg").write_bytes(photo_bytes())
    (root / ".sync").mkdir()
    (root / ".sync" / "b.jpg").write_bytes(photo_bytes())
    (root / "outputs").mkdir()
    (root / "outputs" / "x__overlay.jpg").write_bytes(photo_bytes())
    config = Config(watch=WatchConfig(roots=[root]), outputs={"dir": root / "outputs"})
    store = Store.open(f"sqlite:///{tmp_path / 'qa.sqlite3'}")
    collector = Collector()
    watcher = Watcher(config, threading.Event(), store, collector)
    watcher.rescan()
    assert collector.offered == [root / "tower-a" / "a.jpg"]
    store.close()


def test_a_vanished_watch_root_is_reported_and_taken_up_again_when_it_returns(tmp_path, caplog):
    root = tmp_path / "share"
    root.mkdir()
    config = Config(watch=WatchConfig(roots=[root], polling=True, poll_interval_s=0.1))
    store = Store.open(f"sqlite:///{tmp_path / 'qa.sqlite3'}")
    collector = Collector()
    watcher = Watcher(config, threading.Event(), store, collector)
    watcher.observer.start()
    with caplog.at_level(logging.INFO, logger="qa-daemon"):
        assert watcher.check_roots() is False
        shutil.rmtree(root)  # the share is unmounted
        assert watcher.check_roots() is False
        assert "is missing" in caplog.text
        root.mkdir()
        (root / "a.jpg").write_bytes(photo_bytes())
        assert watcher.check_roots() is True  # back: the caller rescans it
        watcher.rescan()
    assert collector.offered[-1] == root / "a.jpg"
    watcher.stop()
    store.close()


def test_crack_length_width_and_severity_in_pixels_and_millimetres():
    mask = np.zeros((300, 400), bool)
    mask[100:107, 50:250] = True  # 7 px wide, 200 px long
    m = measure(mask, np.full(mask.shape, 0.8, np.float32), scale=2.0, task="crack", mm_per_pixel=0.25,
                severity=SeverityConfig(), min_component_px=16, area_px=4 * int(mask.sum()))
    assert m["length_px"] == pytest.approx(400, rel=0.05)
    assert m["max_width_px"] == pytest.approx(14, abs=0.5)
    assert m["max_width_mm"] == pytest.approx(3.5, abs=0.2) and m["severity"] == "medium"
    assert m["components"] == 1 and m["mean_confidence"] == pytest.approx(0.8)
    assert m["area_pct"] == pytest.approx(100 * mask.mean())


def test_cracks_measured_piece_by_piece_give_the_figures_of_the_whole_mask():
    """Each component is thinned inside its own box; the sum of lengths and the widest point must be what
    thinning the whole mask gives, for pieces that nearly touch, touch the border, or cross each other's box."""
    from skimage.morphology import skeletonize

    from daemon.measure import crack_lines, skeleton_length

    mask = np.zeros((200, 260), bool)
    mask[0:9, 0:120] = True  # on the top border, 9 px wide
    mask[11:14, 0:200] = True  # one background row below it
    line = cv2.line(np.zeros_like(mask, np.uint8), (20, 190), (250, 40), 1, thickness=5)  # diagonal
    mask |= line > 0
    mask[150:160, 200:212] = True  # a blob inside the diagonal's box, not touching it
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    assert n - 1 == 4
    whole = skeletonize(mask)
    dist = cv2.distanceTransform(np.pad(mask.astype(np.uint8), 1), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    length, width = crack_lines(labels, stats)
    assert length == pytest.approx(skeleton_length(whole), rel=1e-9)
    assert width == pytest.approx(2.0 * float(dist[whole].max()) - 1.0, rel=1e-5)


def test_no_crack_measures_zero_and_taping_reports_coverage():
    empty = np.zeros((50, 50), bool)
    m = measure(empty, np.zeros((50, 50), np.float32), 1.0, "crack", 0.5, SeverityConfig(), 16, 0)
    assert (m["length_px"], m["components"], m["severity"], m["mean_confidence"]) == (0.0, 0, None, None)
    tape = np.zeros((50, 50), bool)
    tape[:, :10] = True
    tape[0, 40] = True  # a speck below min_component_px is not a component
    t = measure(tape, np.ones((50, 50), np.float32), 1.0, "taping", None, SeverityConfig(), 16, int(tape.sum()))
    assert t["components"] == 1 and t["coverage_pct"] == pytest.approx(100 * tape.mean())
    assert t["length_px"] == pytest.approx(41.8, abs=1) and t["length_mm"] is None  # the band's length


@pytest.mark.parametrize(("width_mm", "severity"), [(0.05, "hairline"), (0.1, "fine"), (1.0, "fine"),
                                                    (1.01, "medium"), (5.0, "medium"), (5.5, "wide")])
def test_severity_classes_follow_the_configured_widths(width_mm, severity):
    assert SeverityConfig().classify(width_mm) == severity
