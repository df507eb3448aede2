"""The daemon as users run it: a real `qa-daemon run` process on a temporary folder, with a tiny model.

One scenario, in order: 30 real photos (one as PNG) dropped at once with a slowly written file, a duplicate under
a new name, a zero-byte file, a truncated JPEG and a text file named .jpg; then 30 more photos and a
SIGKILL in the middle of processing them, a restart, and a SIGTERM.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from daemon.store import Store
from tests.conftest import CRACKS, DRYWALL, REPO, need_shared

pytestmark = pytest.mark.realdata
XSS = "<img src=x onerror=alert(1)>.jpg"  # a file name is user input; reports must show it as text


def photos(split: Path, n: int) -> list[Path]:
    return sorted(split.glob("*.jpg"))[:n]


def drop(files: list[Path], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copy(f, folder / f.name)


class Daemon:
    """A `qa-daemon run` child process and its store, read with plain sqlite3 as an analyst would."""

    def __init__(self, home: Path, config: Path):
        self.home, self.config, self.db = home, config, home / "qa.sqlite3"
        self.log = home / "daemon.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
        with self.log.open("a") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "daemon", "-c", str(self.config), "run"],
                                         cwd=self.home, env=env, stdout=log, stderr=subprocess.STDOUT)

    def query(self, sql: str) -> list[tuple]:
        if not self.db.exists():
            return []
        con = sqlite3.connect(self.db, timeout=30)
        try:
            return con.execute(sql).fetchall()
        except sqlite3.OperationalError:  # tables not created yet
            return []
        finally:
            con.close()

    def count(self, sql: str) -> int:
        rows = self.query(sql)
        return rows[0][0] if rows else 0

    def wait_for(self, what: str, check, timeout: float = 240) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if check():
                return
            assert self.proc.poll() is None, f"daemon exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}"
            time.sleep(0.05)
        pytest.fail(f"timed out waiting for {what}:\n{self.log.read_text()[-3000:]}")

    def done(self) -> int:
        return self.count("SELECT count(*) FROM jobs WHERE status = 'done'")


@pytest.fixture(scope="module")
def scenario(tmp_path_factory, tiny_checkpoint):
    need_shared()
    home = tmp_path_factory.mktemp("daemon")
    (home / "in").mkdir()
    config = home / "config.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"checkpoint": str(tiny_checkpoint), "device": "cpu", "batch_size": 4},
        "watch": {"roots": ["in"], "settle_s": 1.0, "retry_backoff_s": 0.5, "max_attempts": 2, "heartbeat_s": 2,
                  "incomplete_after_s": 1.0},
        "store": {"url": "sqlite:///qa.sqlite3"},
        "sites": {"tower-a": {"mm_per_pixel": 0.5}},
    }))
    daemon = Daemon(home, config)
    yield daemon
    if daemon.proc is not None and daemon.proc.poll() is None:  # a test failed half-way: no daemon left behind
        daemon.proc.kill()


def test_every_dropped_photo_is_processed_once_and_bad_files_are_quarantined(scenario, cli):
    d = scenario
    d.start()
    first = photos(CRACKS / "train", 15) + photos(DRYWALL / "train", 15)
    drop(first[:15], d.home / "in" / "tower-a" / "L1")
    drop(first[15:], d.home / "in" / "tower-b" / "L2")
    png = d.home / "in" / "tower-b" / "L2" / (first[-1].stem + ".png")
    cv2.imwrite(str(png), cv2.imread(str(first[-1])))
    (d.home / "in" / "tower-b" / "L2" / first[-1].name).unlink()
    bad = d.home / "in" / "tower-a" / "bad"
    bad.mkdir()
    (bad / "empty.jpg").write_bytes(b"")
    data = (CRACKS / "valid").glob("*.jpg").__next__().read_bytes()
    (bad / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (bad / XSS).write_text("not a photo at all\n")
    shutil.copy(first[0], d.home / "in" / "tower-b" / "copy of first.jpg")
    slow = d.home / "in" / "tower-b" / "L2" / "slow.jpg"
    payload = photos(DRYWALL / "valid", 1)[0].read_bytes()
    with slow.open("wb") as out:  # a phone sync writing a photo in pieces, slower than events arrive
        for i in range(0, len(payload), len(payload) // 6 + 1):
            out.write(payload[i: i + len(payload) // 6 + 1])
            out.flush()
            time.sleep(0.3)

    d.wait_for("31 photos done, 3 quarantined, 1 duplicate", lambda: d.done() == 31 and d.count(
        "SELECT count(*) FROM failures WHERE final") == 3 and d.count(
        "SELECT count(*) FROM files WHERE duplicate") == 1)

    assert d.count("SELECT count(*) FROM photos") == 31
    assert d.count("SELECT count(DISTINCT sha256) FROM photos") == 31
    assert d.count("SELECT count(*) FROM detections") == 62
    for name, size in [(first[0].name, (640, 640)), ("slow.jpg", Image_size(slow))]:
        stem = Path(name).stem
        [(out_dir,)] = d.query(f"SELECT output_dir FROM photos WHERE image_id = '{stem}'")
        for prompt in ("segment_crack", "segment_taping_area"):
            mask = cv2.imread(str(Path(out_dir) / f"{stem}__{prompt}.png"), cv2.IMREAD_UNCHANGED)
            assert mask.ndim == 2 and (mask.shape[1], mask.shape[0]) == size
            assert set(np.unique(mask)) <= {0, 255}
        assert (Path(out_dir) / f"{stem}__overlay.jpg").is_file()
    for path, in d.query("SELECT mask_path FROM detections"):
        assert Path(path).is_file()
    sites = dict(d.query("SELECT site, count(*) FROM photos GROUP BY site"))
    assert sites == {"tower-a": 15, "tower-b": 16}
    # tower-a has a scale, so its cracks have mm widths and a severity when found
    assert d.count("SELECT count(*) FROM detections JOIN photos ON photos.id = photo_id "
                   "WHERE site = 'tower-b' AND max_width_mm IS NOT NULL") == 0
    assert d.count("SELECT count(*) FROM detections JOIN photos ON photos.id = photo_id "
                   "WHERE site = 'tower-a' AND task = 'crack' AND max_width_mm IS NULL AND area_px > 0") == 0

    quarantine = d.home / "quarantine" / "tower-a" / "bad"
    assert sorted(p.name for p in quarantine.glob("*.jpg")) == sorted([XSS, "empty.jpg", "truncated.jpg"])
    assert "not a JPEG or PNG" in (quarantine / f"{XSS}.error.txt").read_text()
    assert not any(bad.iterdir())

    status = cli("-c", d.config, "status", "--json")
    assert status.code == 0, status.stderr
    state = json.loads(status.stdout)
    assert state["running"] is True
    assert {k: state[k] for k in ("processed", "pending", "failed", "duplicates", "processed_today")} == {
        "processed": 31, "pending": 0, "failed": 3, "duplicates": 1, "processed_today": 31}
    assert state["model"] == "tiny-v1"

    log = d.log.read_text()
    assert "site=tower-a/L1  crack" in log and "heartbeat:" in log and "quarantined" in log
    assert d.proc.poll() is None  # bad input never takes the daemon down


def test_sigkill_mid_batch_then_restart_processes_every_photo_exactly_once(scenario):
    d = scenario
    assert d.proc is not None and d.proc.poll() is None, "runs after the first scenario test"
    more = photos(CRACKS / "valid", 15) + photos(DRYWALL / "valid", 16)[1:]  # the first went in slowly
    drop(more[:15], d.home / "in" / "tower-a" / "L2")
    drop(more[15:], d.home / "in" / "tower-c" / "L1")
    d.wait_for("processing of the new photos to start", lambda: d.done() >= 33)
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait(timeout=30)
    done_at_kill = d.done()
    assert done_at_kill < 61, "the kill came too late to test anything"

    d.start()
    d.wait_for("all 61 photos done after the restart", lambda: d.done() == 61)
    time.sleep(1.5)  # nothing more may arrive: no photo is processed twice or recorded again
    assert d.count("SELECT count(*) FROM photos") == 61
    assert d.count("SELECT count(*) FROM jobs") == 61
    assert d.count("SELECT count(*) FROM detections") == 122
    assert d.count("SELECT count(*) FROM files WHERE duplicate") == 1  # a restart's rescan is not a duplicate
    assert d.count("SELECT count(*) FROM jobs WHERE status != 'done'") == 0
    for path, in d.query("SELECT mask_path FROM detections"):
        assert Path(path).is_file()


def test_a_promoted_model_is_picked_up_without_a_restart(scenario, tmp_path):
    from model.segmenter import Card, build, save_checkpoint, weights_sha256
    from tests.conftest import TINY_SETTINGS

    d = scenario
    assert d.proc is not None and d.proc.poll() is None, "runs after the restart test"
    v2 = save_checkpoint(build("compact", TINY_SETTINGS), tmp_path / "tiny-v2",
                         Card(backend="compact", settings=TINY_SETTINGS, thresholds={"crack": 0.5, "taping": 0.5}))
    store = Store.open(f"sqlite:///{d.db}")
    version = store.register_model("tiny-v2", v2, "compact", weights_sha256(v2), {})  # what a retrain promotes
    store.close()
    d.wait_for("the switch", lambda: "switched to model version tiny-v2" in d.log.read_text())
    drop(photos(DRYWALL / "valid", 20)[17:18], d.home / "in" / "tower-c" / "L2")
    d.wait_for("the new photo", lambda: d.done() == 62)
    assert d.query("SELECT detections.model_version_id FROM detections JOIN photos ON photos.id = photo_id "
                   "ORDER BY photos.id DESC LIMIT 1") == [(version,)]
    assert d.count("SELECT count(DISTINCT model_version_id) FROM detections") == 2


def test_the_daily_report_of_a_store_filled_by_the_daemon_opens_cleanly_in_chromium(scenario, cli, visit):
    d = scenario
    result = cli("-c", d.config, "report", "--out", d.home / "reports")
    assert result.code == 0, result.stderr
    page = visit(Path(result.stdout.split("report: ")[1].strip()))
    page.clean()
    text = page.page.inner_text("body")
    assert XSS in text  # the quarantined file's name, as text
    assert "62" in text and "tower-a" in text and "tower-c" in text and "tiny-v2" in text
    # thumbnails of the worst photos, when the (random) tiny model marked cracks, all load
    assert all(i["complete"] and i["width"] > 0 for i in page.images())


def test_sigterm_finishes_the_photos_in_hand_and_exits_cleanly(scenario):
    d = scenario
    assert d.proc is not None and d.proc.poll() is None, "runs after the restart test"
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=60) == 0
    assert d.log.read_text().rstrip().endswith("stopped")


def Image_size(path: Path) -> tuple[int, int]:  # noqa: N802 - reads like the PIL attribute it wraps
    from PIL import Image

    with Image.open(path) as im:
        return im.size
