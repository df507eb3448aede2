"""A first run as on a fresh clone: the shipped config.yaml, no `incoming/` folder yet, `qa-daemon run`; then
what a user sees of the files dropped in, in `qa-daemon status` and in the daemon's log.

One daemon for the module (a start costs 10 to 30 s on a 2-core machine), with the tiny model and the shipped
heartbeat (60 s), so that what `status` shows of a file just dropped cannot come from a heartbeat.
"""

from __future__ import annotations

import json
import re
import time

import pytest
import yaml

from tests.support.daemon import DaemonProcess
from tests.support.datasets import REPO
from tests.support.photos import photo_bytes, write_photo

LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (INFO|WARNING|ERROR) +\S")
# what Alembic, APScheduler, watchdog, transformers and PIL say at INFO when nobody quiets them
CHATTER = ("alembic", "Context impl", "Will assume", "Running upgrade", "apscheduler", "Added job", "Scheduler started",
           "inotify", "transformers", "huggingface", "PIL", "STREAM")


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, tiny_checkpoint):
    """The daemon started in a folder holding only the shipped config (its model the tiny one)."""
    home = tmp_path_factory.mktemp("clone")
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["model"].update(checkpoint=str(tiny_checkpoint), device="cpu", batch_size=4)
    # an incomplete file is retried within seconds and given up on after 10 s unchanged (shipped: 30 s, 600 s)
    config["watch"].update(retry_backoff_s=1, max_attempts=2, incomplete_after_s=10)
    (home / "config.yaml").write_text(yaml.safe_dump(config))
    assert config["watch"]["roots"] == ["incoming"] and config["watch"]["heartbeat_s"] == 60
    with DaemonProcess(home, home / "config.yaml") as d:
        d.start(wait=True)
        yield d


def test_a_first_run_makes_the_default_watch_folder_beside_the_config(first_run):
    assert (first_run.home / "incoming").is_dir()
    assert f"made the watch folder {first_run.home / 'incoming'}" in first_run.log_text()


def test_status_lists_an_empty_and_a_truncated_file_as_waiting_until_they_are_quarantined(first_run, cli):
    d = first_run  # its store is the shipped config's qa-daemon.sqlite3: read through `status`
    folder = d.home / "incoming" / "tower-a" / "L1"
    folder.mkdir(parents=True)
    (folder / "empty.jpg").write_bytes(b"")
    data = photo_bytes((320, 240))
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    write_photo(folder / "good.jpg", (160, 120))

    def status() -> dict:
        result = cli("-c", d.config, "status", "--json")
        assert result.code == 0, result.stderr
        return json.loads(result.stdout)

    deadline, state = time.monotonic() + 60, {}
    while time.monotonic() < deadline and not (state.get("waiting") == 2 and state["processed"] == 1):
        state = status()
        time.sleep(0.2)
    assert (state["waiting"], state["settling"], state["processed"]) == (2, 0, 1), state
    files = {f["path"]: f for f in state["waiting_files"]}
    assert set(files) == {str(folder / "empty.jpg"), str(folder / "truncated.jpg")}
    assert "empty file" in files[str(folder / "empty.jpg")]["error"]
    assert "does not decode" in files[str(folder / "truncated.jpg")]["error"]
    assert all(f["state"] == "waiting" and f["attempts"] >= 1 for f in files.values())

    table = cli("-c", d.config, "status")
    assert table.code == 0, table.stderr
    lines = table.stdout.splitlines()
    heading = lines.index("files not taken yet:")
    assert lines[heading - 1] == "" and lines[heading - 2].startswith("└")
    assert {ln.split(": waiting: ")[0].strip() for ln in lines[heading + 1: heading + 3]} == set(files)

    d.wait_for("both quarantined", lambda: len(list((d.home / "quarantine").rglob("*.jpg"))) == 2, timeout=90)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (state["waiting"], state["failed"]) != (0, 2):
        state = status()
        time.sleep(0.2)
    assert (state["waiting"], state["settling"], state["failed"], state["waiting_files"]) == (0, 0, 2, [])


def test_the_daemon_log_holds_its_own_lines_only_no_library_chatter(first_run):
    lines = first_run.log_text().splitlines()
    assert lines and [ln for ln in lines if not LOG_LINE.match(ln)] == []
    assert [ln for ln in lines if any(word in ln for word in CHATTER)] == []
