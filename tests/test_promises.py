"""README promises that had no test of their own, each as a user meets it.

- a daemon run with `--polling` finds photos by polling alone (its rescans are hours apart), takes a 12
  megapixel photo and a 16-bit RGB PNG end to end, keeps file names from forging log lines, and ends with
  exit code 1 when one of its threads dies of a bug (a hook, tests/support/hooks.py, injects it);
- `qa-daemon report --date/--site/--weekly/--self-contained` on a store's data;
- `qa-daemon model promote NAME`, and `model rollback` after a version was rejected.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import cv2
import numpy as np
import pytest

from daemon.store import Store
from tests.support.daemon import DaemonProcess, write_daemon_config
from tests.support.hooks import CRASH_HEARTBEAT, install
from tests.support.photos import bad_mask, put, write_photo
from tests.support.store import fill

# ---- a daemon run with --polling ---------------------------------------------------------------------

# a name that carries a whole log line of its own (no "/": a file name cannot hold one), and names with a terminal
# escape and a carriage return
FORGED = "real.jpg\n2026-11-30 12:00:00 INFO    forged.jpg  site=tower-z  crack 99.00%  taping 0.00%  1 ms\nx.jpg"
ESCAPES = ["\x1b[2J\x1b[31mred.jpg", "carriage\rreturn.jpg"]


@pytest.fixture(scope="module")
def polling(tmp_path_factory, tiny_checkpoint) -> DaemonProcess:
    """A daemon started with `--polling` (the config says events), its rescans 10 hours apart."""
    home = tmp_path_factory.mktemp("polling")
    config = write_daemon_config(home, {
        "model": {"checkpoint": str(tiny_checkpoint), "device": "cpu", "batch_size": 4},
        "watch": {"roots": ["in"], "polling": False, "poll_interval_s": 0.5, "rescan_interval_s": 36000,
                  "settle_s": 0.5, "heartbeat_s": 1},
        "store": {"url": "sqlite:///qa.sqlite3"},
        "schedule": {"daily_report": None, "weekly_summary": None, "retrain_check_hours": None},
    })
    with DaemonProcess(home, config, args=("--polling",)) as d:
        install(d, CRASH_HEARTBEAT)  # idle until the last test creates its file
        (home / "in" / "tower-a" / "L1").mkdir(parents=True)
        d.start(wait=True)
        yield d


def done_names(d: DaemonProcess) -> set[str]:
    return {name for (name,) in d.query("SELECT name FROM photos JOIN jobs ON photo_id = photos.id "
                                        "WHERE status = 'done'")}


def test_with_polling_a_photo_is_found_by_polling_alone_when_rescans_are_hours_apart(polling):
    d = polling
    started = next(line for line in d.log_text().splitlines() if "qa-daemon started" in line)
    assert "(polling)" in started, "--polling overrides watch.polling"
    put(write_photo(d.home / "staging.jpg", (160, 120)).read_bytes(), d.home / "in" / "tower-a" / "L1" / "polled.jpg")
    d.wait_for("the photo found and processed", lambda: "polled.jpg" in done_names(d), timeout=60)
    assert "rescan:" not in d.log_text(), "found by a rescan, not by polling"


def test_a_12_megapixel_photo_and_a_16_bit_rgb_png_are_processed_end_to_end(polling):
    d = polling
    folder = d.home / "in" / "tower-a" / "L1"
    y, x = np.mgrid[0:3000, 0:4000]
    big = np.dstack([x * 255 // 4000, y * 255 // 3000, (x + y) * 255 // 7000]).astype(np.uint8)
    cv2.imwrite(str(d.home / "big.jpg"), big)
    deep = np.zeros((300, 400, 3), np.uint16)
    deep[..., 2], deep[..., 1], deep[..., 0] = 65535, 32768, 1000  # OpenCV writes BGR: red full, green half
    cv2.imwrite(str(d.home / "deep.png"), deep)
    for name in ("big.jpg", "deep.png"):
        put((d.home / name).read_bytes(), folder / name)
    d.wait_for("both photos done", lambda: {"big.jpg", "deep.png"} <= done_names(d), timeout=120)
    rows = d.query("SELECT name, width, height, output_dir, overlay_path FROM photos WHERE name IN "
                   "('big.jpg', 'deep.png')")
    assert sorted(r[:3] for r in rows) == [("big.jpg", 4000, 3000), ("deep.png", 400, 300)]
    for name, width, height, out_dir, overlay in rows:
        stem = Path(name).stem
        for prompt in ("segment_crack", "segment_taping_area"):
            assert bad_mask(Path(out_dir) / f"{stem}__{prompt}.png", width, height) is None
        shown = cv2.imread(overlay)
        assert shown is not None and max(shown.shape[:2]) <= 1600  # outputs.overlay_max_side
    assert d.count("SELECT count(*) FROM failures") == 0


def test_file_names_cannot_forge_or_garble_lines_of_the_log(polling):
    d = polling
    folder = d.home / "in" / "tower-a" / "L1"
    for i, name in enumerate([FORGED, *ESCAPES]):
        put(write_photo(d.home / f"s{i}.jpg", (160, 120), seed=i).read_bytes(), folder / name)
    d.wait_for("the three photos done", lambda: {FORGED, *ESCAPES} <= done_names(d), timeout=60)
    raw = d.log.read_bytes()
    assert b"\x1b" not in raw and b"\r" not in raw
    lines = raw.decode().splitlines()
    assert not any(line.startswith("2026-11-30 12:00:00 INFO    forged.jpg") for line in lines), "a forged line"
    mentions = [line for line in lines if "forged.jpg" in line]
    assert mentions and all("real.jpg\\n2026-11-30 12:00:00 INFO" in line for line in mentions)
    assert any("\\nx.jpg  site=tower-a/L1" in line for line in mentions), "its per-photo line, escaped"


def test_a_thread_that_dies_of_a_bug_ends_the_daemon_with_exit_code_1(polling):
    """Last in the file: it ends the daemon."""
    d = polling
    (d.home / "crash-heartbeat").touch()
    try:
        code = d.proc.wait(timeout=60)
    finally:
        (d.home / "crash-heartbeat").unlink()
    assert code == 1, "a supervisor restarts a daemon that exits non-zero"
    log = d.log_text()
    assert "thread heartbeat stopped unexpectedly" in log and "injected: a bug in the heartbeat" in log
    assert log.rstrip().endswith("stopped")


# ---- qa-daemon report on a store's data ----------------------------------------------------------------

PHOTOS = [("tower-a", "2026-11-02", 2.0, "fine"), ("tower-a", "2026-11-02", 0.0, None),
          ("tower-a", "2026-11-03", 4.0, "wide"), ("tower-b", "2026-11-03", 1.0, "fine"),
          ("tower-a", "2026-11-10", 0.0, None)]


@pytest.fixture
def store_url(tmp_path) -> str:
    """A SQLite store with PHOTOS processed, each with an overlay file (so reports show thumbnails)."""
    url = f"sqlite:///{tmp_path / 'qa.sqlite3'}"
    store = Store.open(url)
    fill(store, tmp_path, PHOTOS)
    store.close()
    con = sqlite3.connect(tmp_path / "qa.sqlite3")
    for (photo_id,) in con.execute("SELECT id FROM photos").fetchall():
        overlay = write_photo(tmp_path / "outputs" / f"{photo_id}__overlay.jpg", (320, 240), seed=photo_id)
        con.execute("UPDATE photos SET overlay_path = ? WHERE id = ?", (str(overlay), photo_id))
    con.commit()
    con.close()
    return url


def meta(html: str) -> dict[str, str]:
    """The report's `qa-report-*` meta tags."""
    return dict(re.findall(r'<meta name="qa-report-([a-z-]+)" content="([^"]*)">', html))


def report(cli, url: str, out: Path, *options: str) -> tuple[Path, str]:
    result = cli("report", "--store", url, "--out", out, *options)
    assert result.code == 0, result.stderr
    path = Path(result.stdout.split("report: ")[1].strip())
    return path, path.read_text()


def test_report_of_a_day_for_one_site_from_the_store(cli, store_url, tmp_path):
    path, html = report(cli, store_url, tmp_path / "reports", "--date", "2026-11-03", "--site", "tower-b")
    assert path.name == "daily-2026-11-03-tower-b.html"
    m = meta(html)
    assert (m["kind"], m["date"], m["end"], m["site"], m["photos"]) == ("daily", "2026-11-03", "2026-11-03",
                                                                         "tower-b", "1")
    assert "Site: tower-b" in html and "Site: tower-a" not in html


def test_weekly_report_covers_monday_to_sunday_of_the_week_holding_the_date(cli, store_url, tmp_path):
    path, html = report(cli, store_url, tmp_path / "reports", "--weekly", "--date", "2026-11-05")
    assert path.name == "weekly-2026-11-02.html"
    m = meta(html)
    assert (m["kind"], m["date"], m["end"], m["photos"]) == ("weekly", "2026-11-02", "2026-11-08", "4")
    assert "Site: tower-a" in html and "Site: tower-b" in html
    index = (tmp_path / "reports" / "index.html").read_text()
    assert 'href="weekly-2026-11-02.html"' in index


def test_a_self_contained_report_inlines_its_thumbnails_and_an_ordinary_one_links_them(cli, store_url, tmp_path):
    _, linked = report(cli, store_url, tmp_path / "linked", "--date", "2026-11-02")
    thumbs = re.findall(r'<img src="([^"]+)"', linked)
    assert thumbs and all(not t.startswith("data:") and (tmp_path / "linked" / t).is_file() for t in thumbs)

    path, html = report(cli, store_url, tmp_path / "mailed", "--date", "2026-11-02", "--self-contained")
    inlined = re.findall(r'<img src="([^"]+)"', html)
    assert len(inlined) == len(thumbs) and all(t.startswith("data:image/jpeg;base64,") for t in inlined)
    assert [p for p in (tmp_path / "mailed").rglob("*") if p.is_file() and p.suffix == ".jpg"] == []


# ---- model versions through the CLI --------------------------------------------------------------------

def test_model_promote_by_name_and_rollback_passes_over_a_rejected_version(cli, tmp_path):
    url = f"sqlite:///{tmp_path / 'qa.sqlite3'}"
    store = Store.open(url)
    v1 = store.models.register("v1", tmp_path / "v1", "compact", "1" * 64, {})
    v2 = store.models.register("v2", tmp_path / "v2", "compact", "2" * 64, {})  # promoted after v1
    store.models.register("v3", tmp_path / "v3", "compact", "3" * 64, {}, activate=False)  # a candidate
    promoted = cli("model", "promote", "v3", "--store", url)
    assert promoted.code == 0, promoted.stderr
    assert "active model: v3" in promoted.stdout
    store.models.reject(v2)  # found unloadable since: never to be rolled back onto
    store.close()

    rolled = cli("model", "rollback", "--store", url)
    assert rolled.code == 0, rolled.stderr
    assert f"rolled back; active model: v1 (version {v1}," in rolled.stdout  # not v2, promoted later
    statuses = {v["name"]: (v["status"], v["active"]) for v in json.loads(
        cli("model", "list", "--json", "--store", url).stdout)}
    assert statuses == {"v1": ("active", True), "v2": ("rejected", False), "v3": ("retired", False)}
    unknown = cli("model", "promote", "v9", "--store", url)
    assert unknown.code == 2 and "model list" in unknown.stderr
