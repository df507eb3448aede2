"""Several daemons on one PostgreSQL server and one watch folder: every photo is processed exactly once, and
the work is shared."""

from __future__ import annotations

import contextlib
import signal
from collections import Counter

import pytest

from tests.support.daemon import DaemonProcess, write_daemon_config
from tests.support.datasets import CRACKS, DRYWALL, need_shared, real_photos
from tests.support.hooks import HOLD_CLAIMS, install
from tests.support.photos import drop

pytestmark = pytest.mark.realdata
PASSWORD = "Sh4red-secret"


def test_two_daemons_sharing_a_server_and_a_folder_share_the_work_and_process_every_photo_once(
        tmp_path, pg_database, tiny_checkpoint):
    need_shared()
    url = pg_database.replace("://qa@", f"://qa:{PASSWORD}@")  # the server's trust authentication accepts any
    assert PASSWORD in url
    config = write_daemon_config(tmp_path, {
        "model": {"checkpoint": str(tiny_checkpoint), "device": "cpu", "batch_size": 2},
        "watch": {"roots": ["in"], "settle_s": 1.0, "heartbeat_s": 2},
        "store": {"url": url},
    })
    with contextlib.ExitStack() as stack:  # no daemon left behind when the test fails half-way
        daemons = [stack.enter_context(DaemonProcess(tmp_path, config, f"daemon-{i}.log", server_url=url))
                   for i in range(2)]
        for d in daemons:
            install(d, HOLD_CLAIMS)
        hold_claims = tmp_path / "hold-claims"
        hold_claims.touch()  # neither claims until the whole burst is queued: both then take from it
        for d in daemons:
            d.start()  # at the same moment: one creates the schema, the other waits for it
        try:
            run_both(daemons, tmp_path, hold_claims)
        finally:
            hold_claims.unlink(missing_ok=True)


def run_both(daemons: list[DaemonProcess], tmp_path, hold_claims) -> None:
    first = daemons[0]

    def both_waiting_to_claim() -> bool:
        for d in daemons:
            assert d.running(), f"{d.log.name} exited:\n{d.log_text()[-3000:]}"
        return all((tmp_path / f"claims-held.{d.proc.pid}").exists() for d in daemons)

    first.wait_for("both daemons up and waiting to claim", both_waiting_to_claim)
    drop(real_photos(CRACKS / "train", 12), tmp_path / "in" / "tower-a" / "L1")
    drop(real_photos(DRYWALL / "train", 12), tmp_path / "in" / "tower-b" / "L1")
    first.wait_for("24 photos queued", lambda: first.count("SELECT count(*) FROM jobs") == 24)
    hold_claims.unlink()
    first.wait_for("24 photos done", lambda: first.done() == 24)
    for d in daemons:  # both still running: nothing more may happen
        assert d.running()
    assert first.count("SELECT count(*) FROM photos") == 24
    assert first.count("SELECT count(*) FROM detections") == 48
    assert first.count("SELECT count(*) FROM files WHERE duplicate") == 0  # the same file seen twice is not a copy
    assert first.count("SELECT count(*) FROM failures") == 0
    for d in daemons:
        d.proc.send_signal(signal.SIGTERM)
    for d in daemons:
        assert d.proc.wait(timeout=60) == 0
        assert "Traceback" not in d.log_text()
    commits = [d.commits() for d in daemons]
    assert all(sum(c.values()) > 0 for c in commits), f"a daemon did no work: {[sum(c.values()) for c in commits]}"
    together = sum(commits, Counter())
    assert len(together) == 24 and set(together.values()) == {1}, "a photo was logged twice, or not at all"
    workers = first.query("SELECT count(DISTINCT worker) FROM jobs")
    assert workers == [(2,)], "the store records both daemons as workers"
    for d in daemons:
        assert PASSWORD not in d.log_text()
