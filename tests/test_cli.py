"""The command line: every command explains itself; errors a user can fix are one line and exit code 2."""

from __future__ import annotations

import json

import pytest

COMMANDS = ["prep", "train", "eval", "predict", "run", "retrain", "report", "history", "status", "backup", "scrub",
            "model list", "model promote", "model rollback", "model export", "model quantize"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(cli, command):
    result = cli(*command.split(), "--help")
    assert result.code == 0
    assert "Example: qa-daemon" in result.stdout


def test_run_with_no_existing_watch_folder_names_it_and_exits_2(cli, tmp_path):
    result = cli("run", "--watch", tmp_path / "nowhere", "--store", f"sqlite:///{tmp_path / 'qa.sqlite3'}")
    assert result.code == 2
    assert "watch.roots" in result.stderr and "nowhere" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("root", ["{tmp}/share", "mnt/share"], ids=["absolute", "relative"])
def test_run_never_makes_a_missing_watch_root_other_than_the_default_one(cli, write_config, tmp_path, root):
    """Only `incoming` beside the config is made on a first run (tests/test_first_run.py); any other missing
    root may be a share not mounted yet, and a folder made in its place would hide that."""
    root = root.replace("{tmp}", str(tmp_path))
    config = write_config({"watch": {"roots": [root]}, "store": {"url": "sqlite:///qa.sqlite3"}})
    result = cli("-c", config, "run")
    assert result.code == 2
    assert "watch.roots" in result.stderr and "share" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / root).exists() and not (tmp_path / "incoming").exists()


def test_status_counts_and_lists_the_files_the_running_daemons_have_not_taken_yet(cli, tmp_path):
    from daemon.settle import Settler
    from daemon.store import Store, StoreLock

    url = f"sqlite:///{tmp_path / 'qa.sqlite3'}"
    store = Store.open(url)
    copying, broken = Settler(2.0, 30.0, 3), Settler(2.0, 30.0, 3)  # two daemons' (a shared store's)
    for i in range(25):
        copying.offer(tmp_path / "in" / f"IMG_{i:02d}.jpg", tmp_path / "in")
    broken.offer(tmp_path / "in" / "empty.jpg", tmp_path / "in")
    broken.retry(tmp_path / "in" / "empty.jpg", "empty file (0 bytes)")
    store.runs.publish_waiting("host-a:1", copying.snapshot())
    store.runs.publish_waiting("host-b:2", broken.snapshot())
    store.close()
    running = StoreLock(url)  # SQLite: a daemon runs while it holds the lock
    running.acquire()
    try:
        state = json.loads(cli("status", "--store", url, "--json").stdout)
        table = cli("status", "--store", url).stdout.splitlines()
    finally:
        running.release()
    assert (state["settling"], state["waiting"], len(state["waiting_files"])) == (25, 1, 26)
    assert state["waiting_files"][0]["path"] == str(tmp_path / "in" / "empty.jpg")
    heading = table.index("files not taken yet:")
    assert table[heading - 1] == "" and table[heading - 2].startswith("└")
    assert table[heading + 1].startswith(f"  {tmp_path / 'in' / 'empty.jpg'}: waiting: empty file (0 bytes) (1 ")
    assert table[heading + 2].startswith(f"  {tmp_path / 'in' / 'IMG_00.jpg'}: settling (since ")
    assert table[heading + 21] == "  ... and 6 more (26 listed by `qa-daemon status --json`)"
    stopped = json.loads(cli("status", "--store", url, "--json").stdout)  # its rows outlive a killed daemon
    assert (stopped["settling"], stopped["waiting"], stopped["waiting_files"]) == (0, 0, [])


def test_a_second_daemon_on_one_store_is_refused_with_one_line(cli, tmp_path):
    from daemon.store import StoreLock

    url = f"sqlite:///{tmp_path / 'qa.sqlite3'}"
    running = StoreLock(url)
    running.acquire()
    try:
        result = cli("run", "--watch", tmp_path, "--store", url)
    finally:
        running.release()
    assert result.code == 2
    assert "another qa-daemon is running on this store" in result.stderr


def test_status_before_the_first_run_says_how_to_start(cli, tmp_path):
    result = cli("status", "--store", f"sqlite:///{tmp_path / 'qa.sqlite3'}")
    assert result.code == 2
    assert "qa-daemon run" in result.stderr


def test_status_reports_the_queue_as_json(cli, tmp_path):
    from daemon.store import Store

    url = f"sqlite:///{tmp_path / 'qa.sqlite3'}"
    Store.open(url).close()
    result = cli("status", "--store", url, "--json")
    assert result.code == 0, result.stderr
    state = json.loads(result.stdout)
    assert {k: state[k] for k in ("running", "processed", "pending", "failed", "duplicates", "processed_today")} == {
        "running": False, "processed": 0, "pending": 0, "failed": 0, "duplicates": 0, "processed_today": 0}
    assert state["store"] == url


def test_without_a_config_file_the_defaults_apply(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no config.yaml here
    result = cli("status")
    assert result.code == 2
    assert "config file not found" not in result.stderr
    assert "qa-daemon.sqlite3 does not exist yet" in result.stderr  # the default store.url


def test_the_store_url_can_come_from_the_environment_so_that_no_process_list_shows_its_password(cli, tmp_path,
                                                                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QA_DAEMON_STORE", "postgresql+psycopg://qa:S3cretX@/qa?host=/nonexistent")
    result = cli("status")
    assert result.code == 2 and "cannot open postgresql+psycopg://qa:***@" in result.stderr
    assert "S3cretX" not in result.stderr


def test_help_names_the_config_key_an_option_overrides(cli):
    result = cli("prep", "--help")
    assert result.code == 0
    assert "Prepared folder [config prep.out]." in result.stdout


def test_no_help_text_has_a_bracket_that_rich_would_swallow_as_markup():
    """Typer renders help as Rich markup: an unescaped `[config x]` is a style tag and vanishes; write `\\[`."""
    import re

    import typer

    from daemon.cli import app

    tag = re.compile(r"(?<!\\)\[[a-z#/@][^\[]*?\]")

    def texts(command, name):
        yield name, command.help or ""
        for param in command.params:
            yield f"{name} {param.name}", getattr(param, "help", None) or ""
        for sub, child in getattr(command, "commands", {}).items():
            yield from texts(child, f"{name} {sub}")

    assert [(where, text) for where, text in texts(typer.main.get_command(app), "qa-daemon") if tag.search(text)] \
        == []


def test_status_lists_recent_failures_under_a_heading_of_their_own_below_the_table(cli, tmp_path):
    from daemon.store import FailureStage, Store

    url = f"sqlite:///{tmp_path / 'qa.sqlite3'}"
    store = Store.open(url)
    store.queue.record_failure(tmp_path / "in" / "bad.jpg", FailureStage.intake, "not a JPEG or PNG", attempt=1,
                               final=True, quarantined_to=tmp_path / "quarantine" / "bad.jpg")
    store.close()
    result = cli("status", "--store", url)
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    heading = lines.index("recent failures:")
    assert lines[heading - 1] == "" and lines[heading - 2].startswith("└")  # a blank line after the table
    assert "bad.jpg: not a JPEG or PNG -> " in lines[heading + 1]


def test_without_a_config_file_the_defaults_are_those_of_the_shipped_config(monkeypatch):
    from pathlib import Path

    from daemon.config import load_config

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(repo)  # without a file, relative paths are relative to the current folder
    shipped = load_config(repo / "config.yaml").model_dump()
    defaults = load_config(repo / "no-such-config.yaml", missing_ok=True).model_dump()
    assert {k: v for k, v in defaults.items() if v != shipped[k]} == {}


def test_history_rows_stay_whole_in_an_80_column_terminal(tmp_path):
    from rich.console import Console

    from daemon.cli.reports import history_table
    from daemon.store import Store
    from daemon.summary import history
    from tests.support.store import fill

    store = Store.open(f"sqlite:///{tmp_path / 'qa.sqlite3'}")
    fill(store, tmp_path, [("tower-a", "2026-11-24", 1.25, "fine"), ("tower-b-east", "2026-11-24", 0.5, "medium")])
    rows = history(store, None, None, None)
    store.close()
    console = Console(width=80, record=True)
    console.print(history_table(rows, list(rows[0]), "history by day"))
    text = console.export_text()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    assert "2026-11-24" in text and "tower-b-east" in text and "0/1/0/0" in text and "0/0/1/0" in text
