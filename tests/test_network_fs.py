"""A SQLite store on a network filesystem (NFS, SMB/CIFS, sshfs/FUSE), where SQLite's locking is unsafe, is
refused with one line naming the path and the fix, unless `store.allow_network_fs` says it is wanted. The
filesystem's statfs(2) answer is faked here."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from daemon.store import Store, StoreError
from daemon.store import fs as store_fs
from tests.support.opened import StoreOpened, stop_once_the_store_is_open

NFS, CIFS, FUSE, EXT4 = 0x6969, 0xFF534D42, 0x65735546, 0xEF53


@pytest.fixture
def on_filesystem(monkeypatch):
    """`on_filesystem(magic)`: every folder is on the filesystem with that statfs `f_type`."""
    return lambda magic: monkeypatch.setattr(store_fs, "filesystem_magic", lambda _folder: magic)


@pytest.mark.parametrize(("magic", "name"), [(NFS, "NFS"), (CIFS, "SMB/CIFS"), (FUSE, "FUSE")])
def test_a_store_on_a_network_filesystem_is_refused_naming_the_path_and_the_fix(tmp_path, on_filesystem, magic,
                                                                               name):
    on_filesystem(magic)
    db = tmp_path / "qa.sqlite3"
    with pytest.raises(StoreError) as refused:
        Store.open(f"sqlite:///{db}", allow_network_fs=False)
    message = str(refused.value)
    assert "\n" not in message
    assert str(db) in message and name in message
    assert "local path or PostgreSQL" in message and "store.allow_network_fs: true" in message
    assert not db.exists()  # refused before SQLite touched it


def test_store_allow_network_fs_opens_a_store_on_a_network_filesystem(tmp_path, on_filesystem):
    on_filesystem(NFS)
    Store.open(f"sqlite:///{tmp_path / 'qa.sqlite3'}", allow_network_fs=True).close()


def test_a_store_opened_without_a_word_on_the_filesystem_is_refused_on_a_network_one(tmp_path, on_filesystem):
    """Safe by default: code that opens a store by URL alone (a bench, a script) gets the same refusal."""
    on_filesystem(NFS)
    db = tmp_path / "qa.sqlite3"
    for opening in (lambda: Store.open(f"sqlite:///{db}"), lambda: Store.open_existing(f"sqlite:///{db}")):
        db.touch()  # open_existing wants a file; the refusal must come before SQLite reads it
        with pytest.raises(StoreError, match="network filesystem"):
            opening()


def test_a_store_on_a_local_disk_opens(tmp_path, on_filesystem):
    on_filesystem(EXT4)
    Store.open(f"sqlite:///{tmp_path / 'qa.sqlite3'}", allow_network_fs=False).close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="statfs f_type is read on Linux only")
def test_the_filesystem_of_a_local_folder_is_read_from_the_kernel_and_is_not_network(tmp_path):
    magic = store_fs.filesystem_magic(tmp_path)
    if shutil.which("stat"):  # coreutils asks statfs(2) too: the same number
        assert magic == int(subprocess.run(["stat", "-f", "-c", "%t", str(tmp_path)], capture_output=True,
                                           text=True, check=True).stdout, 16)
    assert magic is not None and magic != 0
    if magic in store_fs.NETWORK_FS:
        pytest.skip(f"the temporary folder is on {store_fs.NETWORK_FS[magic]} here")
    assert store_fs.network_fs(tmp_path) is None
    assert store_fs.filesystem_magic(tmp_path / "not-there") is None


@pytest.fixture
def daemon_config(write_config, tmp_path, monkeypatch):
    """`daemon_config(**store)`: a config (`store` keys over the shipped ones) whose daemon stops with
    StoreOpened once its store is open."""
    from model import SHIPPED_CHECKPOINT

    stop_once_the_store_is_open(monkeypatch)
    return lambda **store: write_config({"store": {"url": f"sqlite:///{tmp_path / 'qa.sqlite3'}", **store},
                                         "model": {"checkpoint": str(SHIPPED_CHECKPOINT)}})


def test_the_daemon_refuses_a_store_on_a_network_filesystem_in_one_line(cli, daemon_config, on_filesystem, tmp_path):
    on_filesystem(NFS)
    result = cli("--config", daemon_config(), "run", "--watch", tmp_path)
    assert result.code == 2
    assert f"{tmp_path / 'qa.sqlite3'} is on a network filesystem (NFS)" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "qa.sqlite3").exists()


def test_the_daemon_opens_a_store_on_a_network_filesystem_when_the_config_allows_it(cli, daemon_config,
                                                                                  on_filesystem, tmp_path):
    on_filesystem(NFS)
    with pytest.raises(StoreOpened):
        cli("--config", daemon_config(allow_network_fs=True), "run", "--watch", tmp_path)


@pytest.mark.parametrize("command", [["status"], ["history"], ["report"], ["scrub"], ["model", "list"]])
def test_every_command_that_opens_the_store_refuses_it_on_a_network_filesystem_as_the_daemon_does(
        cli, write_config, on_filesystem, tmp_path, command):
    db = tmp_path / "qa.sqlite3"
    Store.open(f"sqlite:///{db}").close()  # made on a local disk, then the share "mounted" under it
    on_filesystem(NFS)
    result = cli("--config", write_config({"store": {"url": f"sqlite:///{db}"}}), *command)
    assert result.code == 2, result.stdout
    assert f"{db} is on a network filesystem (NFS)" in result.stderr and "Traceback" not in result.stderr
    allowed = write_config({"store": {"url": f"sqlite:///{db}", "allow_network_fs": True}})
    assert cli("--config", allowed, *command).code == 0


def test_backup_copies_a_store_off_a_network_filesystem(cli, write_config, on_filesystem, tmp_path):
    db = tmp_path / "qa.sqlite3"
    Store.open(f"sqlite:///{db}").close()
    on_filesystem(NFS)
    result = cli("--config", write_config({"store": {"url": f"sqlite:///{db}"}}), "backup", "--out",
                 tmp_path / "copy.sqlite3")
    assert result.code == 0, result.stderr
    assert (tmp_path / "copy.sqlite3").is_file()
