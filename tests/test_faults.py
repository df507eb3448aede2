"""Faults a daemon meets in months unattended, injected into a real `qa-daemon run` process (tiny model).

Run them alone with `uv run pytest -m faults`. Each ends with the same check: every photo that arrived is
recorded once, processed once, with both masks on disk at the source's size, and nothing was quarantined.

- SIGKILL at random moments (start-up, intake, processing, commit) over several cycles while photos arrive;
- the outputs disk fills up (a small tmpfs): intake and processing pause, the pause is recorded and shown by
  `status`, and work resumes by itself when space returns;
- the store locked by another writer for seconds, and for longer than its busy timeout;
- the watch root unmounted while photos wait in the queue (a share going away), and mounted again;
- a damaged model promoted while the daemon runs (refused, the old one keeps working), or while it is down
  (the configured checkpoint runs instead); a missing or damaged configured model (exit 2, one message).

Mounting needs root (CI runs as root); those parts skip elsewhere, with the reason.
"""

from __future__ import annotations

import errno
import hashlib
import json
import random
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.support.daemon import DaemonProcess, write_daemon_config
from tests.support.datasets import CRACKS, DRYWALL, need_shared
from tests.support.faults import cannot_mount, fill, mount, write_lock
from tests.support.hooks import HOLD_BATCH, HOLD_CLAIMS, SHORT_BUSY_TIMEOUT, install
from tests.support.photos import bad_mask, put, unique_jpeg

pytestmark = [pytest.mark.faults, pytest.mark.realdata]


# ---- photos, mounts and the final check ---------------------------------------------------------

def sources() -> list[Path]:
    need_shared()
    return sorted((CRACKS / "valid").glob("*.jpg")) + sorted((DRYWALL / "valid").glob("*.jpg"))


def unique_photo(src: Path, n: int, side: int | None = None) -> bytes:
    """A real photo made unique in content (a JPEG comment with `n`), optionally upscaled to `side`."""
    data = src.read_bytes()
    if side is not None:
        im = cv2.resize(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), (side, side))
        data = cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    return unique_jpeg(data, f"qa-daemon fault test {n}")


def assert_each_photo_processed_once(d: DaemonProcess, shas: set[str]) -> None:
    rows = d.query("SELECT photos.id, sha256, width, height, status FROM photos JOIN jobs ON photo_id = photos.id")
    assert Counter(r[1] for r in rows) == Counter(shas), "every photo that arrived, recorded once"
    assert [r for r in rows if r[4] != "done"] == []
    assert d.query("SELECT photo_id, count(*) FROM detections GROUP BY photo_id HAVING count(*) != 2") == []
    assert d.count("SELECT count(*) FROM detections") == 2 * len(shas)
    assert d.count("SELECT count(*) FROM files WHERE duplicate") == 0
    assert d.query("SELECT path, error FROM failures WHERE final") == []
    size = {r[0]: (r[2], r[3]) for r in rows}
    bad = {path: why for photo_id, path in d.query("SELECT photo_id, mask_path FROM detections")
           if (why := bad_mask(path, *size[photo_id]))}
    assert bad == {}, "every mask a single-channel {0, 255} PNG of the source's size"


def config(home: Path, checkpoint: Path) -> Path:
    """The config of every daemon here (its watch root `in/` made)."""
    return write_daemon_config(home, {
        "model": {"checkpoint": str(checkpoint), "device": "cpu", "batch_size": 4},
        "watch": {"roots": ["in"], "settle_s": 0.5, "retry_backoff_s": 0.5, "max_attempts": 3, "heartbeat_s": 1,
                  "incomplete_after_s": 1.0},
        "store": {"url": "sqlite:///qa.sqlite3"},
        "outputs": {"dir": "out", "min_free_mb": 0},
        "schedule": {"daily_report": None, "weekly_summary": None, "retrain_check_hours": None},
    })


# ---- SIGKILL at random moments --------------------------------------------------------------------

def test_sigkill_at_random_moments_while_photos_arrive_loses_nothing_and_repeats_nothing(tmp_path, tiny_checkpoint):
    rng = random.Random(20261125)  # the same kill schedule in every run
    d = DaemonProcess(tmp_path, config(tmp_path, tiny_checkpoint))
    src = sources()
    shas: set[str] = set()
    done_dropping = threading.Event()

    def producer() -> None:  # about a minute of arrivals, two ways of writing, across four folders
        for n in range(80):
            data = unique_photo(src[n % len(src)], n)
            shas.add(hashlib.sha256(data).hexdigest())
            put(data, tmp_path / "in" / f"tower-{n % 2}" / f"L{n % 4}" / f"p{n:03d}.jpg",
                "rename" if n % 3 else "in place")
            time.sleep(rng.uniform(0.2, 0.9))
        done_dropping.set()

    arrivals = threading.Thread(target=producer, daemon=True)
    with d:  # killed at the end, whatever happens
        d.start()
        time.sleep(rng.uniform(1.0, 4.0))  # the first kill lands during start-up
        d.kill()
        arrivals.start()
        kills = 1
        while not done_dropping.is_set() or kills < 4:
            d.start()
            before = d.done()
            # after some progress, so that the photos in hand at one kill are not the ones in hand at the next:
            # a photo in hand at every one of watch.max_attempts crashes is taken for the crash's cause
            d.wait_for("progress after the restart", lambda b=before: d.done() > b or (
                done_dropping.is_set() and d.done() == len(shas)), timeout=120)
            time.sleep(rng.uniform(0.0, 1.2))
            d.kill()
            kills += 1
        # up before the SIGTERM below: every photo may be done already, and a SIGTERM during the imports,
        # before the daemon's handler exists, ends the process by the signal instead of a clean stop
        d.start(wait=True)
        d.wait_for("every photo done", lambda: d.done() == len(shas), timeout=180)
        time.sleep(1.5)  # nothing more may happen
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(timeout=60) == 0
    assert kills >= 4 and len(shas) == 80
    assert d.log_text().count("qa-daemon started") >= 4
    assert_each_photo_processed_once(d, shas)
    commits = d.commits()
    assert len(commits) >= 60 and max(commits.values()) == 1, "a photo's results were committed twice"


# ---- one daemon through a full disk, a locked store, an unmounted share and damaged models ---------

class Faulty(DaemonProcess):
    """The daemon of the scenario below, with the photos it was sent."""

    def __init__(self, home: Path, config: Path):
        super().__init__(home, config)
        self.shas: set[str] = set()
        self.sent = 0
        self.mounts: list[Path] = []

    def send(self, n: int, site: str = "tower-a", side: int | None = None) -> list[Path]:
        """`n` new photos, made first and then delivered in a burst, as a camera's upload arrives."""
        photos = [unique_photo(sources()[(self.sent + i) % 40], 1000 + self.sent + i, side) for i in range(n)]
        out = []
        for data in photos:
            self.shas.add(hashlib.sha256(data).hexdigest())
            out.append(put(data, self.home / "in" / site / "L1" / f"f{self.sent:03d}.jpg"))
            self.sent += 1
        return out

    def status(self, cli) -> dict:
        result = cli("-c", self.config, "status", "--json")
        assert result.code == 0, result.stderr
        return json.loads(result.stdout)


@pytest.fixture(scope="module")
def faulty(tmp_path_factory, tiny_checkpoint):
    home = tmp_path_factory.mktemp("faults")
    why = cannot_mount(home)
    d = Faulty(home, config(home, tiny_checkpoint))
    install(d, HOLD_BATCH)  # while the file `hold` exists the processor waits, so photos queue up
    (home / "out").mkdir()
    if why is None:  # outputs on a small disk of their own; the watch root a mount that can go away
        mount("-t", "tmpfs", "-o", "size=8m", "tmpfs", str(home / "out"))
        (home / "share").mkdir()
        mount("--bind", str(home / "share"), str(home / "in"))
        d.mounts = [home / "in", home / "out"]
    d.cannot_mount = why
    try:
        d.start(wait=True)
        yield d
    finally:
        d.close()
        for m in d.mounts:
            subprocess.run(["umount", "-l", str(m)], capture_output=True)


def need_mounts(d: Faulty) -> None:
    if d.cannot_mount:
        pytest.skip(d.cannot_mount)


def test_a_full_outputs_disk_pauses_the_daemon_records_it_and_work_resumes_when_space_returns(faulty, cli):
    d = faulty
    need_mounts(d)
    d.send(3)
    d.wait_for("3 photos done", lambda: d.done() == 3)
    ballast = d.home / "out" / "ballast"
    fill(ballast)  # to the last block
    with pytest.raises(OSError) as full:
        (d.home / "out" / "probe").write_bytes(b"\0" * 4096)
    assert full.value.errno == errno.ENOSPC

    waiting = d.send(4)
    d.wait_for("the pause", lambda: d.count("SELECT count(*) FROM failures WHERE stage = 'outputs'") >= 1)
    state = d.status(cli)
    assert state["paused"] and "No space left on device" in state["paused"]
    assert d.count("SELECT count(*) FROM failures WHERE stage = 'outputs'") == 1  # recorded once, not per photo
    assert all(p.exists() for p in waiting), "the photos wait where they are"
    assert "intake and processing are paused" in d.log_text()

    ballast.unlink()
    d.wait_for("the rest done", lambda: d.done() == 7, timeout=120)
    assert "resume" in d.log_text()
    assert d.status(cli)["paused"] is None
    assert [p.name for p in (d.home / "out").rglob("*.tmp")] == [], "no half-written files left behind"
    assert_each_photo_processed_once(d, d.shas)


def test_a_store_locked_by_another_writer_for_seconds_only_delays_the_work(faulty):
    d = faulty
    before, last_failure = d.done(), d.count("SELECT coalesce(max(id), 0) FROM failures")
    with write_lock(d.db):  # a backup tool, or an analyst's long write
        d.send(5)
        time.sleep(8)
        assert d.done() == before  # nothing could be written...
        assert d.proc.poll() is None  # ...and nothing broke
    d.wait_for("the 5 photos done", lambda: d.done() == before + 5)
    assert d.query(f"SELECT error FROM failures WHERE id > {last_failure}") == []
    assert_each_photo_processed_once(d, d.shas)


def test_a_store_locked_past_its_busy_timeout_delays_the_work_and_uses_up_no_attempts(tmp_path, tiny_checkpoint):
    """The busy timeout is 0.5 s here (a hook), so a lock of a few seconds outlasts it, as a minute-long backup
    outlasts the shipped 30 s: the batch in hand cannot be committed, nor its failure recorded."""
    d = Faulty(tmp_path, config(tmp_path, tiny_checkpoint))
    install(d, SHORT_BUSY_TIMEOUT, HOLD_CLAIMS, HOLD_BATCH)
    hold_claims, hold = tmp_path / "hold-claims", tmp_path / "hold"
    with d:
        d.start(wait=True)
        hold_claims.touch()
        hold.touch()
        try:
            d.send(4)
            d.wait_for("4 photos queued", lambda: d.count("SELECT count(*) FROM jobs WHERE status = 'pending'") == 4)
            hold_claims.unlink()
            d.wait_for("the 4 in hand", lambda: d.count("SELECT count(*) FROM jobs WHERE status = 'running'") == 4)
            with write_lock(d.db):  # a backup tool, or an analyst's long write
                hold.unlink()
                d.wait_for("the outcome to fail to be recorded", lambda: "could not be recorded" in d.log_text())
                assert d.count("SELECT count(*) FROM jobs WHERE status = 'running'") == 4
        finally:
            hold_claims.unlink(missing_ok=True)
            hold.unlink(missing_ok=True)
        d.wait_for("the 4 photos done", lambda: d.done() == 4, timeout=120)
        assert d.query("SELECT max(attempts) FROM jobs") == [(1,)], "the lock used up none of their attempts"
        assert d.query("SELECT path FROM failures WHERE final") == []
        assert set(d.commits().values()) == {1} and len(d.commits()) == 4
        assert d.terminate() == 0
    assert "database is locked" in d.log_text() and "Traceback" not in d.log_text()
    assert_each_photo_processed_once(d, d.shas)


def test_photos_queued_when_their_share_is_unmounted_are_processed_once_it_is_back(faulty, cli):
    d = faulty
    need_mounts(d)
    before = d.done()
    hold = d.home / "hold"
    hold.touch()  # the processor waits; the photos queue up
    try:
        d.send(12, site="tower-b", side=1600)
        d.wait_for("the photos recorded", lambda: d.count("SELECT count(*) FROM photos") == len(d.shas), timeout=60)
        subprocess.run(["umount", "-l", str(d.home / "in")], check=True)  # the share goes away under the daemon
    finally:
        hold.unlink()
    d.wait_for("the processor to notice", lambda: "vanished before it was processed" in d.log_text() or
               d.done() == before + 12, timeout=60)
    assert d.done() < before + 12, "the unmount came too late to test anything"
    assert d.status(cli)["missing"] > 0
    assert d.count("SELECT count(*) FROM failures WHERE final") == 0
    time.sleep(2)
    assert d.proc.poll() is None

    mount("--bind", str(d.home / "share"), str(d.home / "in"))  # back
    d.send(2, site="tower-c")  # and watched again
    d.wait_for("every photo done", lambda: d.done() == len(d.shas), timeout=120)
    assert d.status(cli)["missing"] == 0
    assert_each_photo_processed_once(d, d.shas)


def damaged(tmp_path: Path, tiny_checkpoint: Path, name: str) -> Path:
    bad = tmp_path / name
    shutil.copytree(tiny_checkpoint, bad)
    weights = bad / "model.safetensors"
    cut = weights.stat().st_size // 2 - len(name)  # a copy cut short (somewhere else for each name)
    weights.write_bytes(weights.read_bytes()[:cut])
    return bad


def test_a_damaged_model_promoted_while_running_is_refused_and_the_old_one_keeps_working(faulty, cli, tmp_path,
                                                                                         tiny_checkpoint):
    d = faulty
    bad = damaged(tmp_path, tiny_checkpoint, "tiny-broken")
    from daemon.store import Store
    from model.checkpoint import weights_sha256

    store = Store.open(f"sqlite:///{d.db}")
    store.models.register("tiny-broken", bad, "compact", weights_sha256(bad), {})  # what a promote does
    store.close()
    d.wait_for("the refusal", lambda: "model version tiny-broken cannot be loaded" in d.log_text())
    d.send(2)
    d.wait_for("the new photos", lambda: d.done() == len(d.shas))
    listing = cli("-c", d.config, "model", "list", "--json")
    versions = {v["name"]: v for v in json.loads(listing.stdout)}
    assert versions["tiny-broken"]["status"] == "rejected" and not versions["tiny-broken"]["active"]
    assert versions["tiny-v1"]["active"]
    assert d.count("SELECT count(DISTINCT model_version_id) FROM detections") == 1


def test_a_damaged_model_promoted_while_the_daemon_was_down_gives_way_to_the_configured_one(faulty, cli, tmp_path,
                                                                                             tiny_checkpoint):
    d = faulty
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=60) == 0
    bad = damaged(tmp_path, tiny_checkpoint, "tiny-broken-2")
    from daemon.store import Store
    from model.checkpoint import weights_sha256

    store = Store.open(f"sqlite:///{d.db}")
    store.models.register("tiny-broken-2", bad, "compact", weights_sha256(bad), {})
    store.close()
    d.start()
    d.send(1)
    d.wait_for("the new photo", lambda: d.done() == len(d.shas))
    log = d.log_text()
    assert "model version tiny-broken-2 cannot be loaded" in log and "runs instead" in log
    assert cli("-c", d.config, "status", "--json").stdout.count('"model": "tiny-v1"') == 1
    assert_each_photo_processed_once(d, d.shas)
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=60) == 0
    assert "Traceback" not in d.log_text()


@pytest.mark.parametrize("problem", ["missing", "damaged"])
def test_a_missing_or_damaged_configured_model_stops_the_start_with_one_clear_message(problem, tmp_path, cli,
                                                                                       tiny_checkpoint):
    (tmp_path / "in").mkdir()
    checkpoint = tmp_path / "nothing-here" if problem == "missing" else damaged(tmp_path, tiny_checkpoint, "cut")
    result = cli("-c", config(tmp_path, checkpoint), "run")
    assert result.code == 2
    message = result.stderr.strip()
    assert str(checkpoint) in message.replace("\n", "") and "Traceback" not in message
    assert ("no checkpoint here" if problem == "missing" else "damaged") in message
