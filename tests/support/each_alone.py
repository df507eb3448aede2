"""Run each test in a pytest process of its own: every test must pass when it is the only one selected.

    uv run python -m tests.support.each_alone [FILES...] [--jobs N] [-- PYTEST_ARGS...]

Collects the test ids of FILES (default: the whole suite), runs `pytest ID` for each, one process per
test, and prints each failure (the end of its output) and a summary; exit code 1 when any failed.
A test that skips alone is not a failure. Slow: the whole suite takes hours this way.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

PASSED = 0  # pytest's exit code when every selected test passed or skipped


def collect(files: list[str], extra: list[str]) -> list[str]:
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", *extra, *files],
                         capture_output=True, text=True)
    ids = [line for line in out.stdout.splitlines() if "::" in line and not line.startswith(" ")]
    if out.returncode not in (0, 5) or not ids and files:
        sys.exit(f"collection failed:\n{out.stdout[-3000:]}{out.stderr[-3000:]}")
    return ids


def run(test_id: str, extra: list[str]) -> tuple[str, int, float, str]:
    begin = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra, test_id],
                         capture_output=True, text=True)
    return test_id, out.returncode, time.monotonic() - begin, out.stdout + out.stderr


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="*", help="test files or ids (default: the suite)")
    ap.add_argument("--jobs", type=int, default=1, help="tests run at once (default 1)")
    args = ap.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    ids = collect(args.files, extra)
    print(f"{len(ids)} tests, each alone", flush=True)
    failed = []
    with ThreadPoolExecutor(args.jobs) as pool:
        for test_id, code, seconds, output in pool.map(lambda i: run(i, extra), ids):
            verdict = "ok" if code == PASSED else "FAILED"
            if code == PASSED and "skipped" in output.splitlines()[-1]:
                verdict = "skipped"
            print(f"{verdict:<8} {seconds:6.1f} s  {test_id}", flush=True)
            if code != PASSED:
                failed.append(test_id)
                print("\n".join(f"    {line}" for line in output.strip().splitlines()[-40:]), flush=True)
    print(f"{len(ids) - len(failed)} of {len(ids)} passed alone" + (":" if failed else ""))
    for test_id in failed:
        print(f"  FAILED {test_id}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
