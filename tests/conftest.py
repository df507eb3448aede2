"""Shared fixtures: a small copy of the real datasets, a config writer, and the CLI runner."""

from __future__ import annotations

import shutil
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"
CRACKS = SHARED / "cracks.v1i.voc"
DRYWALL = SHARED / "Drywall-Join-Detect.v1i.voc"
CRACK_CLASS = "NewCracks - v2 2024-05-18 10-54pm"


def need_shared() -> None:
    if not CRACKS.is_dir() or not DRYWALL.is_dir():
        pytest.skip(f"real datasets not found at {SHARED} (they sit beside the repo in CI only)")


def copy_pairs(src_split: Path, dst_split: Path, stems: list[str], per_stem: int = 2) -> list[Path]:
    """Copy up to `per_stem` jpg+xml pairs of each stem; returns the copied images."""
    by_stem: dict[str, list[Path]] = defaultdict(list)
    for jpg in sorted(src_split.glob("*.jpg")):
        by_stem[jpg.name.split(".rf.")[0]].append(jpg)
    dst_split.mkdir(parents=True, exist_ok=True)
    copied = []
    for stem in stems:
        for jpg in by_stem[stem][:per_stem]:
            shutil.copy(jpg, dst_split / jpg.name)
            shutil.copy(jpg.with_suffix(".xml"), dst_split / jpg.with_suffix(".xml").name)
            copied.append(dst_split / jpg.name)
    return copied


def stems_of(split: Path) -> list[str]:
    return sorted({p.name.split(".rf.")[0] for p in split.glob("*.jpg")})


@pytest.fixture
def small_exports(tmp_path: Path) -> dict[str, Path]:
    """Two tiny exports in Roboflow's VOC layout, made of real files.

    Cracks: 3 train stems (2 copies each), 2 valid stems. Drywall: 3 stems whose
    copies sit in both train and valid (the real dataset's leak) plus one train-only stem.
    """
    need_shared()
    cracks, drywall = tmp_path / "cracks.v1i.voc", tmp_path / "Drywall-Join-Detect.v1i.voc"
    copy_pairs(CRACKS / "train", cracks / "train", stems_of(CRACKS / "train")[:3])
    valid_only = [s for s in stems_of(CRACKS / "valid") if s not in set(stems_of(CRACKS / "train"))]
    copy_pairs(CRACKS / "valid", cracks / "valid", valid_only[:2], per_stem=1)
    shared = sorted(set(stems_of(DRYWALL / "train")) & set(stems_of(DRYWALL / "valid")))
    train_only = sorted(set(stems_of(DRYWALL / "train")) - set(stems_of(DRYWALL / "valid")))
    copy_pairs(DRYWALL / "train", drywall / "train", shared[:3] + train_only[:1])
    copy_pairs(DRYWALL / "valid", drywall / "valid", shared[:3], per_stem=1)
    return {"cracks": cracks, "drywall": drywall}


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


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


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


TINY_SETTINGS = {"input_size": 128, "decoder_widths": [8, 8, 16, 16], "channels_last": False, "pretrained": False}


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """An untrained compact checkpoint at 128 px: fast, and loaded through the product's own loader."""
    from model.segmenter import Card, build, save_checkpoint

    settings = TINY_SETTINGS
    import torch

    torch.manual_seed(0)  # the same untrained model, and so the same masks, in every run
    model = build("compact", settings)
    prompts = {"crack": ["segment crack"], "taping": ["segment taping area"]}
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny-v1",
                           Card(backend="compact", settings=settings, thresholds={"crack": 0.5, "taping": 0.5},
                                prompts=prompts))


# ---- a real headless Chromium, for pages users open --------------------------------------------

CHROMIUM = shutil.which("chromium")

@dataclass
class Visit:
    page: object
    requests: list[str] = field(default_factory=list)  # anything that is not file:// or data:
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)  # alert() and friends: an XSS got through

    def clean(self) -> None:
        assert self.dialogs == [], "a dialog opened: markup from the summary ran as script"
        assert self.page_errors == []
        assert self.console_errors == []
        assert self.requests == [], "the page tried to reach the network"

    def images(self) -> list[dict]:
        return self.page.eval_on_selector_all(  # type: ignore[attr-defined]
            "img", "els => els.map(e => ({src: e.src, complete: e.complete, width: e.naturalWidth}))")


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("no `chromium` on PATH: the browser tests need Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture
def visit(browser):
    """Open a file in a fresh page that records errors, dialogs and every non-local request."""
    context = browser.new_context()
    pages = []

    def open_(path: Path) -> Visit:
        page = context.new_page()
        v = Visit(page)
        pages.append(page)

        def route(r):
            if r.request.url.startswith(("file:", "data:")):
                r.continue_()
            else:
                v.requests.append(r.request.url)
                r.abort()

        page.route("**/*", route)
        page.on("request", lambda req: None if req.url.startswith(("file:", "data:")) else v.requests.append(req.url))
        page.on("console", lambda m: v.console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: v.page_errors.append(str(e)))
        page.on("dialog", lambda d: (v.dialogs.append(d.message), d.dismiss()))
        page.goto(path.as_uri(), wait_until="load")
        return v

    yield open_
    context.close()


# ---- a throw-away PostgreSQL server, for the store on a real database server -------------------

def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else None


@pytest.fixture(scope="session")
def postgres_url():
    """A SQLAlchemy URL of a fresh PostgreSQL database on a private server (Unix socket, no network)."""
    import os
    import subprocess
    import tempfile

    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL server binaries not found (Debian: apt-get install postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="qa-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        shutil.chown(folder, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data = folder / "data"
    subprocess.run([*as_user, initdb, "-D", str(data), "-U", "qa", "--auth=trust", "-E", "UTF8"], check=True,
                   capture_output=True)
    subprocess.run([*as_user, pg_ctl, "-D", str(data), "-w", "-l", str(folder / "log"), "-o",
                    f"-k {folder} -c listen_addresses='' -p 5433", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://qa@/postgres?host={folder}&port=5433"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def pg_database(postgres_url):
    """A new, empty database on the test server; its URL."""
    import uuid

    from sqlalchemy import create_engine, text

    name = f"qa_{uuid.uuid4().hex[:10]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return postgres_url.replace("/postgres?", f"/{name}?")
