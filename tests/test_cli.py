"""The command line: every command explains itself; errors a user can fix are one line and exit code 2."""

from __future__ import annotations

import pytest

COMMANDS = ["prep", "train", "eval", "predict", "run", "retrain", "report", "history", "status", "model list",
            "model promote", "model rollback", "model export", "model quantize"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(cli, command):
    result = cli(*command.split(), "--help")
    assert result.code == 0
    assert "Example: qa-daemon" in result.stdout


def test_run_with_no_existing_watch_folder_names_it_and_exits_2(cli, tmp_path):
    result = cli("run", "--watch", tmp_path / "nowhere", "--store", f"sqlite:///{tmp_path / 'qa.sqlite3'}")
    assert result.code == 2
    assert "watch.roots" in result.stderr and "nowhere" in result.stderr and "Traceback" not in result.stderr


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
    import json

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


def test_without_a_config_file_the_prompts_are_those_of_the_shipped_config():
    from pathlib import Path

    from daemon.config import Config, load_config

    shipped = load_config(Path(__file__).resolve().parents[1] / "config.yaml").prompts
    assert Config().prompts == shipped


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
