"""Test support: what more than one test file (or a benchmark) needs, one copy of each.

Fixture modules, loaded through `pytest_plugins` in tests/conftest.py:

- datasets: the real datasets beside the repo (`need_shared`, `real_photos`), the `small_exports` fixture;
- cli: the `cli` and `write_config` fixtures;
- checkpoints: the `tiny_checkpoint` fixture and `save_tiny`;
- processor: the `setup` fixture (the processor in-process) and `queue`;
- browser: the `browser` and `visit` fixtures (headless Chromium);
- postgres: the `postgres_url` and `pg_database` fixtures, `create_database`.

Helpers, imported where used (bench/ uses them too):

- daemon: `DaemonProcess`, a real `qa-daemon run` child process and its store;
- hooks: `install` and the hooks it puts into a daemon process (hold the processor, crash a thread, a short busy
  timeout), switched by files in its home;
- photos: photo makers, delivery into a watched folder, the mask check;
- orientation: photos with each EXIF orientation and a stand-in model that finds their red corner;
- faults: mounts, full disks, a held store lock;
- models: model fixtures (`write_random_base`);
- store: `fill`, a store with processed photos in it;
- results: stores and report summaries with chosen figures and real result files (`add_results`, a
  2,000-photo day);
- old_stores: a store built at any migration revision and filled as that version's code wrote it;
- hooks: processing hooks loaded into a daemon child process;
- each_alone: `python -m tests.support.each_alone [FILES]` runs each test in a process of its own.
"""
