"""A throw-away PostgreSQL server, for the store on a real database server (Debian's binaries; no network:
a Unix socket in a temporary folder). Skips where the binaries are absent."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

NO_SERVER = "PostgreSQL server binaries not found (Debian: apt-get install postgresql)"


def pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else None


def create_database(server_url: str) -> str:
    """A new, empty database on the server at `server_url` (its `postgres` database); the new one's URL."""
    from sqlalchemy import create_engine, text

    name = f"qa_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return server_url.replace("/postgres?", f"/{name}?")


@pytest.fixture(scope="session")
def postgres_url():
    """A SQLAlchemy URL of a fresh PostgreSQL database on a private server (Unix socket, no network)."""
    initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip(NO_SERVER)
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
    return create_database(postgres_url)
