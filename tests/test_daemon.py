"""The daemon as users run it: a real `qa-daemon run` process on a temporary folder, with a tiny model.

One daemon for the file, taken through stages, each a module-scoped fixture that needs the one before, so
that any test also runs alone (it sets up the stages it needs): 30 real photos (one as PNG) dropped at
once with a slowly written file, a duplicate under a new name, a zero-byte file, a truncated JPEG and a
text file named .jpg; then 30 more photos and a SIGKILL in the middle of processing them, and a restart;
then a new model version promoted while it runs. The last test stops it with SIGTERM while a batch is in hand
(the processor held by a hook, tests/support/hooks.py).
"""

from __future__ import annotations

import json
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from daemon.store import Store
from tests.support.daemon import DaemonProcess, write_daemon_config
from tests.support.datasets import CRACKS, DRYWALL, need_shared, real_photos
from tests.support.hooks import HOLD_BATCH, HOLD_CLAIMS, install
from tests.support.photos import drop, put, write_photo

pytestmark = pytest.mark.realdata
XSS = "<img src=x onerror=alert(1)>.jpg"  # a file name is user input; reports must show it as text


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, tiny_checkpoint):
    """The daemon, started and up."""
    need_shared()
    home = tmp_path_factory.mktemp("daemon")
    config = write_daemon_config(home, {
        "model": {"checkpoint": str(tiny_checkpoint), "device": "cpu", "batch_size": 4},
        "watch": {"roots": ["in"], "settle_s": 1.0, "retry_backoff_s": 0.5, "max_attempts": 2, "heartbeat_s": 2,
                  "incomplete_after_s": 1.0},
        "store": {"url": "sqlite:///qa.sqlite3"},
        "sites": {"tower-a": {"mm_per_pixel": 0.5}},
    })
    with DaemonProcess(home, config) as d:  # a test failed half-way: no daemon left behind
        install(d, HOLD_CLAIMS, HOLD_BATCH)  # idle until a test creates their files
        d.start(wait=True)
        yield d


@dataclass
class FirstDrop:
    first: list[Path]  # the 30 real photos, as dropped (the last one became a PNG)
    bad: Path  # the folder of the three files that are not photos
    slow: Path  # the photo written in pieces


@pytest.fixture(scope="module")
def first_drop(daemon) -> FirstDrop:
    """31 photos processed (one written slowly), 3 bad files quarantined, 1 duplicate recorded."""
    d = daemon
    first = real_photos(CRACKS / "train", 15) + real_photos(DRYWALL / "train", 15)
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
    shutil.copy(first[0], d.home / "in" / "tower-a" / "copy of first.jpg")  # a twin on the same site: either may
    # arrive first and be the photo, the other the duplicate
    slow = d.home / "in" / "tower-b" / "L2" / "slow.jpg"
    # a phone sync writing a photo in pieces, slower than events arrive
    put(real_photos(DRYWALL / "valid", 1)[0].read_bytes(), slow, "in place", pieces=6, pause_s=0.3)
    d.wait_for("31 photos done, 3 quarantined, 1 duplicate", lambda: d.done() == 31 and d.count(
        "SELECT count(*) FROM failures WHERE final") == 3 and d.count(
        "SELECT count(*) FROM files WHERE duplicate") == 1)
    return FirstDrop(first, bad, slow)


@pytest.fixture(scope="module")
def killed_and_restarted(first_drop, daemon) -> int:
    """30 more photos, a SIGKILL while they are processed, a restart, and all 61 done; the count done at the
    kill."""
    d = daemon
    more = real_photos(CRACKS / "valid", 15) + real_photos(DRYWALL / "valid", 16)[1:]  # the first went in slowly
    drop(more[:15], d.home / "in" / "tower-a" / "L2")
    drop(more[15:], d.home / "in" / "tower-c" / "L1")
    d.wait_for("processing of the new photos to start", lambda: d.done() >= 33)
    assert d.running()
    d.kill()
    done_at_kill = d.done()
    d.start()
    d.wait_for("all 61 photos done after the restart", lambda: d.done() == 61)
    time.sleep(1.5)  # nothing more may arrive: no photo is processed twice or recorded again
    return done_at_kill


@pytest.fixture(scope="module")
def promoted(killed_and_restarted, daemon, tmp_path_factory) -> int:
    """tiny-v2 registered as the active model while the daemon runs, and one more photo processed with it;
    its model version id."""
    from model.checkpoint import weights_sha256
    from tests.support.checkpoints import save_tiny

    d = daemon
    v2 = save_tiny(tmp_path_factory.mktemp("v2") / "tiny-v2")
    store = Store.open(f"sqlite:///{d.db}")
    version = store.models.register("tiny-v2", v2, "compact", weights_sha256(v2), {})  # what a retrain promotes
    store.close()
    d.wait_for("the switch", lambda: "switched to model version tiny-v2" in d.log_text())
    drop(real_photos(DRYWALL / "valid", 20)[17:18], d.home / "in" / "tower-c" / "L2")
    d.wait_for("the new photo", lambda: d.done() == 62)
    return version


def test_every_dropped_photo_is_processed_once_and_bad_files_are_quarantined(daemon, first_drop, cli):
    d, first, bad = daemon, first_drop.first, first_drop.bad
    assert d.count("SELECT count(*) FROM photos") == 31
    assert d.count("SELECT count(DISTINCT sha256) FROM photos") == 31
    assert d.count("SELECT count(*) FROM detections") == 62
    for name, size in [(first[1].name, (640, 640)), ("slow.jpg", image_size(first_drop.slow))]:  # first[0] has a twin
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

    log = d.log_text()
    assert "site=tower-a/L1  crack" in log and "heartbeat:" in log and "quarantined" in log
    assert d.proc.poll() is None  # bad input never takes the daemon down


def test_sigkill_mid_batch_then_restart_processes_every_photo_exactly_once(daemon, killed_and_restarted):
    d = daemon
    assert d.running(), "the restarted daemon runs on"
    assert killed_and_restarted < 61, "the kill came too late to test anything"
    assert d.count("SELECT count(*) FROM photos") == 61
    assert d.count("SELECT count(*) FROM jobs") == 61
    assert d.count("SELECT count(*) FROM detections") == 122
    assert d.count("SELECT count(*) FROM files WHERE duplicate") == 1  # a restart's rescan is not a duplicate
    assert d.count("SELECT count(*) FROM jobs WHERE status != 'done'") == 0
    for path, in d.query("SELECT mask_path FROM detections"):
        assert Path(path).is_file()


def test_a_promoted_model_is_picked_up_without_a_restart(daemon, promoted):
    d = daemon
    assert d.running(), "it switched without a restart"
    assert d.query("SELECT detections.model_version_id FROM detections JOIN photos ON photos.id = photo_id "
                   "ORDER BY photos.id DESC LIMIT 1") == [(promoted,)]
    assert d.count("SELECT count(DISTINCT model_version_id) FROM detections") == 2


def test_the_daily_report_of_a_store_filled_by_the_daemon_shows_its_figures_and_opens_cleanly_in_chromium(
        daemon, promoted, cli, visit):
    d = daemon
    result = cli("-c", d.config, "report", "--out", d.home / "reports")
    assert result.code == 0, result.stderr
    page = visit(Path(result.stdout.split("report: ")[1].strip()))
    page.clean()
    text = page.page.inner_text("body")
    assert XSS in text  # the quarantined file's name, as text
    assert "tiny-v2" in text
    # the figures an analyst gets from the store's tables (every photo here was captured today)
    cracked = {name: pct for name, site, pct in crack_pcts(d) if pct > 0}
    totals = figures(page.page, "section.totals")
    assert totals["Photos processed"] == "62" == str(d.done())
    assert totals["Photos with cracks"] == str(len(cracked))
    assert totals["Failed photos"] == "3" == str(d.count("SELECT count(*) FROM failures WHERE final"))
    failed = page.page.inner_text("section.failures")
    assert all(name in failed for name in ("empty.jpg", "truncated.jpg", XSS))
    sections = page.page.eval_on_selector_all("section.site", """els => els.map(e => ({
        site: e.querySelector('h2').innerText.replace('Site: ', ''),
        figures: Object.fromEntries([...e.querySelectorAll('dl.figures > div')].map(f => [
            f.querySelector('dt').textContent.trim(), f.querySelector('dd').textContent])),
        worst: [...[...e.querySelectorAll('h3, h4')].find(h => h.textContent.trim() == 'Worst photos')
            .nextElementSibling.querySelectorAll('.shot .name')].map(n => n.textContent)}))""")
    by_site = dict(d.query("SELECT site, count(*) FROM photos JOIN jobs ON photo_id = photos.id "
                           "WHERE status = 'done' GROUP BY site"))
    assert [s["site"] for s in sections] == sorted(by_site) == ["tower-a", "tower-b", "tower-c"]
    for s in sections:
        assert s["figures"]["Photos processed"].split()[0] == str(by_site[s["site"]])
        # the worst photos: some of the site's photos with cracks, when it has any, most crack first, and no
        # photo left out has more crack than one shown
        mine = [(name, pct) for name, site, pct in crack_pcts(d) if site == s["site"] and pct > 0]
        shown = [cracked[name] for name in s["worst"]]
        assert bool(shown) == bool(mine) and shown == sorted(shown, reverse=True)
        assert all(pct <= min(shown) for name, pct in mine if name not in s["worst"])
    # thumbnails of the worst photos, when the (random) tiny model marked cracks, all load
    assert all(i["complete"] and i["width"] > 0 for i in page.images())


def crack_pcts(d: DaemonProcess) -> list[tuple[str, str, float]]:
    """(name, site, crack area %) of every processed photo, from the store's tables."""
    return d.query("SELECT name, site, area_pct FROM photos JOIN detections ON photo_id = photos.id "
                   "WHERE task = 'crack'")


def figures(page, section: str) -> dict[str, str]:
    """The headline figures of a report section by their label: the first word of each (its number)."""
    pairs = page.eval_on_selector_all(f"{section} dl.figures > div", """els => els.map(e => [
        e.querySelector('dt').textContent, e.querySelector('dd').textContent])""")
    return {label.strip(): value.split()[0] for label, value in pairs}


def test_sigterm_finishes_the_photos_in_hand_and_exits_cleanly(daemon):
    """Last in the file: after the other tests, the daemon they used; alone, a daemon just up. SIGTERM lands
    while a batch is claimed (`running`) and held; every photo of it is done before the exit, the rest wait."""
    d = daemon
    assert d.running()
    hold_claims, hold = d.home / "hold-claims", d.home / "hold"
    (d.home / "in" / "tower-d" / "L1").mkdir(parents=True, exist_ok=True)  # watched before its photos arrive
    hold_claims.touch()
    hold.touch()
    try:
        d.wait_for("the processor to wait before claiming", lambda: any(d.home.glob("claims-held.*")))
        pending_before = d.count("SELECT count(*) FROM jobs WHERE status = 'pending'")
        for i in range(6):
            write_photo(d.home / "in" / "tower-d" / "L1" / f"term-{i}.jpg", (160, 120))
        d.wait_for("6 photos queued", lambda: d.count(
            "SELECT count(*) FROM jobs WHERE status = 'pending'") == pending_before + 6)
        hold_claims.unlink()
        d.wait_for("a batch of 4 in hand", lambda: d.count("SELECT count(*) FROM jobs WHERE status = 'running'") == 4)
        in_hand = d.query("SELECT photo_id FROM jobs WHERE status = 'running' ORDER BY photo_id")
        d.proc.send_signal(signal.SIGTERM)
        d.wait_for("the stop to begin", lambda: "stopping: finishing the photos in hand" in d.log_text())
        assert d.query("SELECT photo_id FROM jobs WHERE status = 'running' ORDER BY photo_id") == in_hand, \
            "nothing finished before the batch was let go"
        hold.unlink()  # the batch goes on, with the stop already requested
        code = d.proc.wait(timeout=60)
    finally:
        hold_claims.unlink(missing_ok=True)
        hold.unlink(missing_ok=True)
    assert code == 0
    ids = ", ".join(str(i) for (i,) in in_hand)
    assert d.query(f"SELECT DISTINCT status FROM jobs WHERE photo_id IN ({ids})") == [("done",)]
    assert d.count(f"SELECT count(*) FROM detections WHERE photo_id IN ({ids})") == 8
    assert d.count("SELECT count(*) FROM jobs WHERE status = 'running'") == 0
    assert d.count("SELECT count(*) FROM jobs WHERE status = 'pending'") == pending_before + 2  # taken at next start
    finished = [name for (name,) in d.query(f"SELECT name FROM photos WHERE id IN ({ids})")]
    assert all(d.commits()[name] == 1 for name in finished)
    assert d.log_text().rstrip().endswith("stopped")


def image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size
