"""The commands a site manager runs to look (status, history, report, model list, --help) answer without
loading the deep-learning stack: each runs in a fresh interpreter and must leave torch, torchvision, timm,
transformers and OpenCV unimported. They print their answer and nothing else: no library's log lines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.store import Store
from tests.support.store import fill

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "torchvision", "timm", "transformers", "cv2", "onnxruntime", "onnx")

# `python -c PROBE ARGS HEAVY`: runs the real entry point with ARGS, then prints its exit code and which
# of HEAVY it imported
PROBE = """
import json, sys
args, heavy = json.loads(sys.argv[1]), json.loads(sys.argv[2])
sys.argv = ["qa-daemon", *args]
code = 0
try:
    from daemon.cli import main
    main()
except SystemExit as exc:
    code = exc.code or 0
print("PROBE", json.dumps({"code": code, "heavy": [m for m in heavy if m in sys.modules]}))
"""


@pytest.fixture(scope="module")
def store_url(tmp_path_factory):
    folder = tmp_path_factory.mktemp("instant")
    url = f"sqlite:///{folder / 'qa.sqlite3'}"
    store = Store.open(url)
    fill(store, folder, [("tower-a", "2026-11-24", 1.5, "fine"), ("tower-b", "2026-11-24", 0.0, None)])
    store.close()
    return url


@pytest.mark.parametrize("args", [
    ["--help"], ["status"], ["status", "--json"], ["history"], ["model", "list"],
    ["report", "--date", "2026-11-24", "--out", "{tmp}/reports"], ["backup", "--out", "{tmp}/b.sqlite3"],
    ["scrub"],
], ids=lambda a: " ".join(a))
def test_looking_at_the_store_never_loads_the_model_stack_nor_prints_library_logs(args, store_url, tmp_path):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if args != ["--help"]:
        args += ["--store", store_url]
    out = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args), json.dumps(HEAVY)], cwd=REPO,
                         capture_output=True, text=True, timeout=120,
                         env={"COLUMNS": "120", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("PROBE ")), None)
    assert line is not None, out.stdout[-2000:] + out.stderr[-2000:]
    result = json.loads(line.removeprefix("PROBE "))
    assert result["code"] == 0, out.stderr[-2000:]
    assert result["heavy"] == []
    assert out.stderr == ""  # the answer is on stdout; no Alembic, SQLAlchemy or Jinja2 line on stderr
