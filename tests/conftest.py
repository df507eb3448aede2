"""Fixtures shared by the tests; they live in tests/support/, one module for each kind of thing:

- datasets: the real datasets beside the repo, and `small_exports` (a small copy of them);
- cli: `cli` (the command line in-process) and `write_config`;
- checkpoints: `tiny_checkpoint`, an untrained model that is fast;
- processor: `setup`, the processor in-process on a temporary folder;
- browser: `browser` and `visit`, a real headless Chromium;
- postgres: `postgres_url` and `pg_database`, a throw-away PostgreSQL server.

Helpers that are not fixtures (photo makers, the daemon process, faults) are imported from tests.support.
"""

pytest_plugins = [
    "tests.support.datasets",
    "tests.support.cli",
    "tests.support.checkpoints",
    "tests.support.processor",
    "tests.support.browser",
    "tests.support.postgres",
]
