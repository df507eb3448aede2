"""The command line in-process (`cli`), and config files written from the shipped one (`write_config`)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.support.datasets import REPO


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


@pytest.fixture
def write_config(tmp_path: Path):
    """Write a config.yaml (the shipped one, with overrides) and return its path."""

    def write(overrides: dict | None = None, name: str = "config.yaml") -> Path:
        config = yaml.safe_load((REPO / "config.yaml").read_text())
        for key, value in (overrides or {}).items():
            config[key] = value
        path = tmp_path / name
        path.write_text(yaml.safe_dump(config))
        return path

    return write


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run `qa-daemon ARGS...` through its real entry point, in-process; returns a CliResult."""
    from daemon.cli import main

    monkeypatch.setenv("COLUMNS", "200")  # rich wraps at the terminal width; keep messages on one line

    def run(*args: str | Path) -> CliResult:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["qa-daemon", *map(str, args)])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run
