"""The command line: every command explains itself; commands not built yet say so and exit 2."""

from __future__ import annotations

import pytest

COMMANDS = ["prep", "train", "eval", "predict", "run", "retrain", "report", "history", "status"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(cli, command):
    result = cli(command, "--help")
    assert result.code == 0
    assert "Example: qa-daemon" in result.stdout


@pytest.mark.parametrize(("args", "issue"), [
    (["run"], 5), (["status"], 5), (["retrain"], 6), (["report"], 6), (["history"], 6),
])
def test_commands_not_built_yet_say_so_and_exit_2(cli, args, issue):
    result = cli(*args)
    assert result.code == 2
    assert "is not available yet" in result.stderr and f"issue #{issue}" in result.stderr
    assert result.stdout == ""
