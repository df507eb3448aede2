"""Several daemons on one PostgreSQL server and one watch folder: every photo is processed exactly once, and
the work is shared."""

from __future__ import annotations

import contextlib
import re
import signal
import time
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


def test_a_killed_daemon_shows_in_status_until_its_heartbeats_stop_and_another_takes_over_its_photos(
        tmp_path, pg_database, tiny_checkpoint, cli):
    """On PostgreSQL there is no lock file: `status` knows a daemon runs from its heartbeats, so a killed one
    shows as running until it has been silent for `stale_after` (30 s); the photos it held `running` are
    then taken by the next daemon to start, each processed and logged once."""
    import json

    from tests.support.hooks import HOLD_BATCH
    from tests.support.photos import write_photo

    settings = {"model": {"checkpoint": str(tiny_checkpoint), "device": "cpu", "batch_size": 4},
                "watch": {"roots": [str(tmp_path / "in")], "settle_s": 0.5, "heartbeat_s": 1},
                "store": {"url": pg_database}}
    homes = [tmp_path / "a", tmp_path / "b"]
    for home in homes:
        home.mkdir()
    config = write_daemon_config(homes[0], settings)

    def running() -> bool:
        result = cli("--config", config, "status", "--json")
        assert result.code == 0, result.stderr
        return json.loads(result.stdout)["running"]

    with DaemonProcess(homes[0], config, server_url=pg_database) as first, \
            DaemonProcess(homes[1], write_daemon_config(homes[1], settings), server_url=pg_database) as second:
        install(first, HOLD_CLAIMS, HOLD_BATCH)
        (homes[0] / "hold-claims").touch()  # the photos queue up, then the first daemon claims them all
        (homes[0] / "hold").touch()  # and keeps them in hand
        first.start(wait=True)
        assert running()
        for n in range(3):
            write_photo(tmp_path / "in" / "tower-a" / "L1" / f"p{n}.jpg")
        first.wait_for("3 photos queued", lambda: first.count("SELECT count(*) FROM jobs") == 3)
        (homes[0] / "hold-claims").unlink()
        first.wait_for("3 photos in hand", lambda: first.count("SELECT count(*) FROM jobs WHERE status = 'running'")
                       == 3)
        first.kill()
        killed = time.monotonic()
        assert running(), "status forgot a daemon whose last heartbeat is a second old"
        deadline = killed + 60
        while running():
            assert time.monotonic() < deadline, "status still shows a daemon silent for a minute"
            time.sleep(0.5)
        assert time.monotonic() - killed > 25  # not before it had been silent for about stale_after (30 s)

        second.start(wait=True)
        second.wait_for("the 3 photos done", lambda: second.done() == 3)
        # by its take-over thread or by its start-up recovery, whichever comes first
        assert re.search(r"3 photos (in hand of a daemon silent for 30 s|left in progress by an earlier run) are "
                         "queued again", second.log_text())
        assert running()
        assert second.terminate() == 0
        assert not running(), "a daemon that stopped cleanly still shows as running"
    commits = second.commits()
    assert len(commits) == 3 and set(commits.values()) == {1}
    assert not first.commits()
