"""Security (#8, part 3), as users rely on it:

- nothing listens on the network: a running daemon holds no listening socket and no internet socket
  (reports are static files, there is no web server);
- the store URL's password never reaches a log, `status`, an error message, a report or the store itself;
- every path made of a file or folder name stays inside its folder, whatever the name (`..`, separators,
  control characters, newlines, very long and unicode names, leading dots);
- links in a watch root that point outside it are not followed.

Two real daemon processes (one on SQLite, one on the PostgreSQL test server) with the tiny model and
synthetic photos, so that nothing here needs the real datasets; the rest runs in-process.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

import psutil
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from daemon.config import TASKS, Config, OutputsConfig, WatchConfig
from daemon.intake import NotAPhoto, identify, image_ids
from daemon.paths import move_into, place, quarantine, safe_part
from daemon.store import Identified, Store, redact
from daemon.watcher import Watcher
from model.masks import mask_name
from reports.render import report_name
from tests.support.daemon import DaemonProcess, write_daemon_config
from tests.support.photos import write_photo
from tests.support.postgres import NO_SERVER, create_database
from tests.support.processor import queue

PASSWORD = "S3cret-pw-xyz"
DAY = "2026-11-24"
# derandomized: CI sees the same examples every run; raise max_examples locally to search wider
PROPS = settings(max_examples=60, deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.function_scoped_fixture])

# names people (and attackers) give files and folders
HOSTILE = [
    "..", ".", "...", " .. ", ". .", ".hidden", "~", "-rf", "*", "$HOME", "`id`", "$(touch pwned)",
    "../../etc/passwd", "/etc/passwd", "a/../../b", "..\\..\\windows", "C:\\Windows\\win.ini", "\\\\server\\share",
    "\x00", "nul\x00byte", "new\nline", "\r\n\t", "\x1b[31mred", "\x7f", "\u202egpj.exe", "\u2215etc\u2215passwd",
    "\uff0e\uff0e\uff0f", "%2e%2e%2f", "'; DROP TABLE photos; --", "<img src=x onerror=alert(1)>", "写真 ünïcødé",
    "a" * 255, "é" * 127, "写" * 85, "\U0001f4f7" * 63, "x" * 1000, "",
]
ANY_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300)
NAMES = st.one_of(st.sampled_from(HOSTILE), ANY_TEXT,
                  st.lists(st.sampled_from([*HOSTILE, "/", "\\", "x"]), max_size=6).map("".join))


def fit(name: str, limit: int = 255) -> str:
    """`name` cut to at most `limit` bytes of UTF-8 (a whole character at a time)."""
    return name.encode()[:limit].decode(errors="ignore")


def file_name(text: str, limit: int = 255) -> str:
    """`text` as one name the file system accepts: no '/' or NUL, not '.' or '..', at most `limit` bytes."""
    name = fit(text.replace("/", "_").replace("\x00", "_"), limit)
    return name if name not in ("", ".", "..") else f"{name}_"


FILE_NAMES = NAMES.map(file_name)  # hostile, yet names a real file or folder can have
# room for the `.error.txt` beside a quarantined file (the longest names: their own test, at the end)
SHORTER_FILE_NAMES = NAMES.map(lambda n: file_name(n, 245))


def within(path: Path | str, folder: Path) -> bool:
    """`path`, resolved with links followed, lies in `folder` (resolved too)."""
    return Path(path).resolve().is_relative_to(folder.resolve())


# ---- nothing listens; links and hostile names through a real daemon -----------------------------

# (site folder, location folder, file name) of the photos dropped in: hostile, yet legal on Linux
DROPPED = [
    ("a\\..\\..\\b", "new\nline", "x\\..\\..\\evil.jpg"),  # a leading '.' would make it hidden: ignored
    (" .. ", "-rf", "tab\there; 'quote\".jpg"),
    ("写真 ünïcødé", "$(touch pwned)", "<img src=x onerror=alert(1)>.jpg"),
    ("\u202egpj.exe", "\x1b[31mred", "%2e%2e%2f.jpg"),
]


def sqlite_daemon_home(home: Path, checkpoint: Path) -> DaemonProcess:
    """A daemon on SQLite, with an archive; a file link and a folder link in its watch root point outside it."""
    root, outside = home / "in", home / "outside"
    (root / "site" / "L1").mkdir(parents=True)
    write_photo(outside / "private.jpg", seed=100)
    (root / "site" / "L1" / "link.jpg").symlink_to(outside / "private.jpg")
    (root / "site" / "linked folder").symlink_to(outside, target_is_directory=True)
    config = write_daemon_config(home, {
        "model": {"checkpoint": str(checkpoint), "device": "cpu", "batch_size": 4},
        "watch": {"roots": ["in"], "settle_s": 0.3, "retry_backoff_s": 0.5, "max_attempts": 1, "heartbeat_s": 2},
        "store": {"url": "sqlite:///qa.sqlite3"},
        "outputs": {"archive": "archive"},
        "schedule": {"reports_dir": "reports"},
    })
    return DaemonProcess(home, config)


def postgresql_daemon_home(home: Path, checkpoint: Path, server_url: str) -> DaemonProcess:
    """A daemon on a new database of the PostgreSQL test server, its URL with a password (the server's trust
    authentication accepts any), with two photos and a file that is not one waiting in its watch root."""
    url = create_database(server_url).replace("://qa@", f"://qa:{PASSWORD}@")
    for i in range(2):
        write_photo(home / "in" / "tower-a" / "L1" / f"IMG_{i}.jpg", seed=i)
    (home / "in" / "tower-a" / "L1" / "notes.jpg").write_text("not a photo\n")  # a failure, with its error
    config = write_daemon_config(home, {
        "model": {"checkpoint": str(checkpoint), "device": "cpu"},
        "watch": {"roots": ["in"], "settle_s": 0.3, "heartbeat_s": 1},
        "store": {"url": url},
        "schedule": {"reports_dir": "reports"},
    })
    return DaemonProcess(home, config, server_url=url)


@pytest.fixture(scope="module")
def daemons(request, tmp_path_factory, tiny_checkpoint) -> dict[str, DaemonProcess]:
    """This file's two `qa-daemon run` processes, started together: each takes 10 to 25 s to start, and
    the two starts overlap. Without PostgreSQL's binaries there is only the SQLite one."""
    started = {"sqlite": sqlite_daemon_home(tmp_path_factory.mktemp("sqlite-daemon"), tiny_checkpoint)}
    with contextlib.suppress(pytest.skip.Exception):
        started["postgresql"] = postgresql_daemon_home(tmp_path_factory.mktemp("postgresql-daemon"), tiny_checkpoint,
                                                       request.getfixturevalue("postgres_url"))
    try:
        for d in started.values():
            d.start()
        yield started
    finally:
        for d in started.values():  # a test failed half-way: no daemon left behind
            d.close()


@pytest.fixture(scope="module")
def sqlite_daemon(daemons) -> DaemonProcess:
    """The SQLite daemon, once it has processed (and archived) photos with hostile names and met the links
    pointing out of its watch root; its scheduler is running."""
    d = daemons["sqlite"]
    root, outside = d.home / "in", d.home / "outside"
    d.wait_started()
    for i, (site, location, name) in enumerate(DROPPED):
        write_photo(root / site / location / name, seed=i)
    write_photo(outside / "arrived later.jpg", seed=101)  # appears inside the linked folder, after the start
    d.wait_for("the photos to be processed and archived", lambda: d.done() == len(DROPPED) and d.count(
        f"SELECT count(*) FROM photos WHERE path LIKE '{d.home / 'archive'}/%'") == len(DROPPED))
    return d


def sockets(pid: int) -> tuple[list, list[int]]:
    """(internet sockets, inodes of listening Unix sockets) that process `pid` holds."""
    inet = psutil.Process(pid).net_connections(kind="inet")
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:["):
                inodes.add(int(link[8:-1]))
    listening = []
    with open(f"/proc/{pid}/net/unix") as table:  # Num RefCount Protocol Flags Type St Inode [Path]
        for row in list(table)[1:]:
            fields = row.split()
            if int(fields[3], 16) & 0x10000 and int(fields[6]) in inodes:  # __SO_ACCEPTCON: listening
                listening.append(int(fields[6]))
    return inet, listening


def test_a_running_daemon_listens_on_nothing_and_opens_no_internet_socket(sqlite_daemon):
    d = sqlite_daemon
    daemon = psutil.Process(d.proc.pid)
    for p in [daemon, *daemon.children(recursive=True)]:
        inet, listening_unix = sockets(p.pid)
        assert inet == [], f"{p.cmdline()} holds internet sockets"
        assert listening_unix == [], f"{p.cmdline()} listens on a Unix socket"
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=60) == 0


def test_photos_with_hostile_names_leave_every_file_inside_its_folder(sqlite_daemon):
    d = sqlite_daemon
    outputs, archive = d.home / "outputs", d.home / "archive"
    for out_dir, overlay, path in d.query("SELECT output_dir, overlay_path, path FROM photos WHERE processed_at IS "
                                          "NOT NULL"):
        assert Path(out_dir).parent.parent == outputs and within(out_dir, outputs)
        assert Path(overlay).parent == Path(out_dir) and Path(overlay).is_file()
        assert within(path, archive) and Path(path).is_file()
    for (mask,) in d.query("SELECT mask_path FROM detections"):
        assert within(mask, outputs) and Path(mask).is_file()
    # nothing was written anywhere else: beside the config, log and database, every file is in a known folder
    allowed = [d.home / n for n in ("in", "outside", "outputs", "archive", "reports")]
    strays = [p for p in d.home.rglob("*") if not p.is_dir() and p.parent != d.home and
              not any(p.is_relative_to(a) for a in allowed)]
    assert strays == []
    assert not (d.home / "quarantine").exists(), "no photo failed"


def test_links_in_the_watch_root_pointing_outside_it_are_not_followed(sqlite_daemon):
    d = sqlite_daemon
    outside = d.home / "outside"
    # the photos outside are neither processed nor moved, through a file link or a folder link
    assert sorted(p.name for p in outside.iterdir()) == ["arrived later.jpg", "private.jpg"]
    outside_photos = {hashlib.sha256(p.read_bytes()).hexdigest() for p in outside.iterdir()}
    assert outside_photos.isdisjoint(sha for (sha,) in d.query("SELECT sha256 FROM photos"))
    assert (d.home / "in" / "site" / "L1" / "link.jpg").is_symlink()  # links are left alone
    assert (d.home / "in" / "site" / "linked folder").is_symlink()


# ---- links pointing outside, when polling (network shares) ---------------------------------------

def test_a_folder_link_pointing_outside_the_watch_root_is_not_followed_when_polling(tmp_path):
    root, outside = tmp_path / "in", tmp_path / "outside"
    (root / "site").mkdir(parents=True)
    outside.mkdir()
    (root / "site" / "linked folder").symlink_to(outside, target_is_directory=True)
    # rescans 10 hours apart: whatever is offered after the first one, polling found
    config = Config(watch=WatchConfig(roots=[root], polling=True, poll_interval_s=0.1, rescan_interval_s=36000),
                    outputs=OutputsConfig(dir=tmp_path / "out", quarantine=tmp_path / "quarantine"))
    store = Store.open(f"sqlite:///{tmp_path / 'qa.sqlite3'}")
    offered = []

    class Settler:  # records what the watcher hands on
        def offer(self, path: Path, root: Path, complete: bool = False) -> None:
            offered.append(path)

    def until(what, check) -> None:
        deadline = time.monotonic() + 10
        while not check():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.02)

    stop = threading.Event()
    watcher = Watcher(config, stop, store, Settler())
    watcher.start()
    try:
        until("the first rescan", lambda: watcher.last_rescan > 0)
        for i in range(50):  # until polling reports a new photo (one made before its first look is not new to it)
            write_photo(root / "site" / f"probe-{i}.jpg", seed=10 + i)
            deadline = time.monotonic() + 1
            while not offered and time.monotonic() < deadline:
                time.sleep(0.02)
            if offered:
                break
        assert offered, "polling never reported a new photo"
        write_photo(outside / "private.jpg")
        write_photo(root / "site" / "inside.jpg", seed=1)
        until("the photo inside", lambda: root / "site" / "inside.jpg" in offered)
        write_photo(root / "site" / "later.jpg", seed=2)  # a poll that began after private.jpg was there
        until("a later photo", lambda: root / "site" / "later.jpg" in offered)
    finally:
        stop.set()
        watcher.stop()
        watcher.join(timeout=10)
        store.close()
    assert watcher.last_rescan > 0 and watcher.is_alive() is False
    assert [p for p in offered if not within(p, root)] == [], "a photo outside the watch root was picked up"
    assert all(p.parent == root / "site" for p in offered), "nothing reached through the link"


def test_a_photo_reached_through_a_folder_link_pointing_outside_is_refused(tmp_path):
    root, outside = tmp_path / "in", tmp_path / "outside"
    write_photo(outside / "private.jpg")
    root.mkdir()
    (root / "linked folder").symlink_to(outside, target_is_directory=True)
    with pytest.raises(NotAPhoto, match="outside the watch root"):
        identify(root / "linked folder" / "private.jpg", root, [])


# ---- the store's password ------------------------------------------------------------------------

def test_the_store_password_reaches_no_log_status_report_or_table(daemons, cli):
    if "postgresql" not in daemons:
        pytest.skip(NO_SERVER)
    d = daemons["postgresql"]
    config, home = d.config, d.home
    url = yaml.safe_load(config.read_text())["store"]["url"]
    assert PASSWORD in url
    d.wait_for("2 photos done, 1 quarantined", lambda: d.done() == 2 and d.count(
        "SELECT count(*) FROM failures WHERE final") == 1)
    d.wait_for("a heartbeat", lambda: "heartbeat:" in d.log.read_text())
    assert sockets(d.proc.pid) == ([], [])  # nothing listens here either (the test server is on a Unix socket)
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=60) == 0
    log = d.log.read_text()
    assert "qa:***@" in log  # the URL is shown, redacted
    assert PASSWORD not in log

    shown = [cli("-c", config, "status"), cli("-c", config, "status", "--json"),
             cli("-c", config, "report", "--out", home / "reports"), cli("-c", config, "history")]
    for result in shown:
        assert result.code == 0, result.stderr
        assert PASSWORD not in result.stdout + result.stderr
    assert json.loads(shown[1].stdout)["store"] == redact(url) != url

    # no file the daemon or the commands wrote holds it: outputs, quarantine notes, reports
    written = [p for p in home.rglob("*") if p.is_file() and p != config]
    assert any(p.suffix == ".html" for p in written) and any(p.name.endswith(".error.txt") for p in written)
    assert [p for p in written if PASSWORD.encode() in p.read_bytes()] == []

    # nor does any text in any table of the store
    with d.engine.connect() as conn:
        columns = conn.execute(text(
            "SELECT c.table_name, c.column_name FROM information_schema.columns c JOIN information_schema.tables t"
            " ON t.table_schema = c.table_schema AND t.table_name = c.table_name WHERE c.table_schema = 'public'"
            " AND t.table_type = 'BASE TABLE' AND c.data_type IN ('text', 'character varying', 'character',"
            " 'json', 'jsonb')")).all()
        assert len({t for t, _ in columns}) >= 10  # photos, jobs, failures, model_versions, schedule_runs...
        leaks = [(t, c) for t, c in columns if conn.execute(text(
            f'SELECT count(*) FROM "{t}" WHERE CAST("{c}" AS text) LIKE :p'), {"p": f"%{PASSWORD}%"}).scalar()]
    assert leaks == []


UNREACHABLE = [  # a server that is not there, the password written in either place PostgreSQL URLs allow
    pytest.param(f"postgresql+psycopg://qa:{PASSWORD}@/nodb?host=/nonexistent", id="password-in-user-part"),
    pytest.param(f"postgresql+psycopg://qa@/nodb?host=/nonexistent&password={PASSWORD}", id="password-in-query"),
]


@contextlib.contextmanager
def logging_kept():
    """`qa-daemon run` in-process sets up the root logger for itself; give the test's back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def one_clear_error(result) -> str:
    assert result.code == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("error:") == 1 and result.stderr.startswith("error: ")
    assert PASSWORD not in result.stdout + result.stderr
    return result.stderr


@pytest.mark.parametrize("url", UNREACHABLE)
def test_status_on_an_unreachable_server_exits_2_with_one_message_and_no_password(tmp_path, cli, url):
    config = tmp_path / "config.yaml"
    config.write_text("{}\n")
    assert "store" in one_clear_error(cli("-c", config, "status", "--store", url))


@pytest.mark.parametrize("url", UNREACHABLE)
def test_run_on_an_unreachable_server_exits_2_with_one_message_and_no_password(tmp_path, cli, url, tiny_checkpoint):
    (tmp_path / "in").mkdir()
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"model": {"checkpoint": str(tiny_checkpoint)}, "watch": {"roots": ["in"]}}))
    with logging_kept():
        message = one_clear_error(cli("-c", config, "run", "--store", url))
    assert "store.url" in message


@pytest.mark.parametrize("url", [
    pytest.param(f"postgresql+psycopg://qa:{PASSWORD}@db.example.internal/qa?sslmode=require", id="user-part"),
    pytest.param("postgresql+psycopg://qa:S3cret%40%2F%3A%3F%23pw@db.example.internal:5432/qa", id="percent-encoded"),
    pytest.param(f"postgresql+psycopg://qa@db.example.internal/qa?password={PASSWORD}", id="query"),
    pytest.param(f"postgresql+psycopg://qa@db.example.internal/qa?sslmode=require&sslpassword={PASSWORD}",
                 id="query-ssl-key-passphrase"),
])
def test_store_urls_are_shown_without_their_secrets(url):
    shown = redact(url)
    assert PASSWORD not in shown and "S3cret" not in shown
    assert "db.example.internal" in shown and "qa" in shown  # still says which server and database


# ---- paths made of names stay in their folders ----------------------------------------------------

@PROPS
@given(name=NAMES)
def test_a_name_made_safe_is_one_path_component_inside_its_folder(tmp_path, name):
    part = safe_part(name)
    assert part not in ("", ".", "..") and not part.startswith(".")
    assert not any(c in "/\\\x7f" or ord(c) < 32 for c in part)  # no separator, NUL, newline or other control
    assert (tmp_path / part).parent == tmp_path and within(tmp_path / part, tmp_path)


@PROPS
@given(folders=st.lists(NAMES, max_size=4), name=NAMES, layout=st.sampled_from(
    [["site", "location"], ["_", "site"], ["site"], ["location", "site", "_"]]))
def test_sites_and_locations_name_output_folders_inside_outputs(tmp_path, folders, name, layout):
    root, outputs = tmp_path / "in", tmp_path / "outputs"
    path = root.joinpath(*[file_name(f) for f in folders], file_name(name))  # as a file system can hold
    site, location = place(path, root, layout)
    names = path.relative_to(root).parts[:-1]
    assert site in ("unknown", *names) and location in ("unknown", *names)
    out_dir = outputs / safe_part(site) / DAY  # where the processor writes the photo's results
    assert out_dir.parent.parent == outputs and within(out_dir, outputs)


@pytest.fixture
def store(tmp_path):
    s = Store.open(f"sqlite:///{tmp_path / 'qa.sqlite3'}")
    yield s
    s.close()


def queued(store: Store, root: Path, site: str, name: str, seed: str) -> None:
    """Record a photo named `name` (bytes told apart by `seed`) as intake does."""
    sha = hashlib.sha256(seed.encode()).hexdigest()
    path = root / site / name
    store.queue.add_photo(Identified(path=path, sha256=sha, image_ids=image_ids(path, sha), size=1, mtime_ns=1,
                                     site=site, location="L1",
                               captured_at=datetime(2026, 11, 24), captured_from="mtime", width=8, height=8))


ALL_PROMPTS = [p for t in TASKS for p in Config().prompts.for_task(t).all]


@PROPS
@given(site=FILE_NAMES, stem=NAMES)
def test_mask_and_overlay_paths_of_any_photo_stay_in_its_output_folder(tmp_path, store, site, stem):
    outputs = tmp_path / "outputs"
    name = file_name(stem, 251) + ".jpg"
    for copy in range(2):  # the second photo of that name at the site gets the sha256 in its image_id
        queued(store, tmp_path / "in", site, name, f"{site}/{name}/{copy}/{uuid.uuid4()}")
    for job in store.queue.claim(8, "test"):
        out_dir = outputs / safe_part(job.site) / DAY
        for result in [mask_name(job.image_id, p) for p in ALL_PROMPTS] + [f"{job.image_id}__overlay.jpg"]:
            path = out_dir / result
            assert path.parent == out_dir and within(path, out_dir), result


@PROPS
@given(site=NAMES, kind=st.sampled_from(["daily", "weekly"]))
def test_report_files_of_any_site_stay_in_the_reports_folder(tmp_path, site, kind):
    path = tmp_path / report_name(kind, DAY, site)
    assert path.parent == tmp_path and within(path, tmp_path) and not path.name.startswith(".")


@PROPS
@given(folders=st.lists(FILE_NAMES, max_size=3), name=SHORTER_FILE_NAMES, elsewhere=st.booleans())
def test_quarantined_and_archived_files_stay_inside_their_folder(tmp_path, folders, name, elsewhere):
    base = tmp_path / uuid.uuid4().hex
    root = base / "in"
    path = root.joinpath(*folders, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"photo")
    given_root = base / "another root" if elsewhere else root  # a file not under the root it is said to be under
    archived = move_into(path, given_root, base / "archive")
    assert within(archived, base / "archive") and archived.read_bytes() == b"photo"
    again = archived.rename(path)
    moved = quarantine(again, given_root, base / "quarantine", "error\nwith a newline")
    assert within(moved, base / "quarantine") and moved.read_bytes() == b"photo" and not path.exists()


@pytest.mark.parametrize("path", ["a/../../x.jpg", "../x.jpg", "a/b/../../../x.jpg"])
def test_dot_dot_in_a_path_under_the_root_stays_in_the_destination(tmp_path, path):
    root = tmp_path / "deep" / "in"
    (root / "a" / "b").mkdir(parents=True)
    source = root / path
    source.write_bytes(b"photo")  # really outside the root, reached through '..'
    moved = move_into(source, root, tmp_path / "quarantine")
    assert within(moved, tmp_path / "quarantine") and moved.read_bytes() == b"photo"


# ---- very long names ------------------------------------------------------------------------------

LONGEST = [  # file names of 255 and 254 bytes, the most a Linux file system allows
    pytest.param("a" * 251 + ".jpg", id="ascii"),
    pytest.param("é" * 125 + ".jpg", id="unicode"),
]


@pytest.mark.parametrize("name", LONGEST)
def test_a_photo_with_the_longest_file_name_is_processed(setup, name):
    root, store, processor = setup
    queue(store, root, write_photo(root / "site" / "L1" / name))
    processor.process(store.queue.claim(8, "test"))
    assert store.queue.counts(datetime(2000, 1, 1))["processed"] == 1, "its masks could not be written"
    for path in processor.config.outputs.dir.rglob("*"):
        assert within(path, processor.config.outputs.dir)


@pytest.mark.parametrize("name", LONGEST)
def test_a_quarantined_file_with_the_longest_name_gets_its_error_note(tmp_path, name):
    root = tmp_path / "in"
    bad = root / "site" / name
    bad.parent.mkdir(parents=True)
    bad.write_text("not a photo")
    try:
        moved = quarantine(bad, root, tmp_path / "quarantine", "not a JPEG or PNG image")
    except OSError as exc:
        pytest.fail(f"quarantine failed after moving the file: {exc}")
    assert within(moved, tmp_path / "quarantine")
    notes = [p for p in moved.parent.iterdir() if p != moved]
    assert len(notes) == 1 and "not a JPEG or PNG image" in notes[0].read_text()
