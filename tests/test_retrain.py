"""Retraining: the inbox triggers a request, `qa-daemon retrain` promotes only through the metric gate,
and model versions can be listed, promoted and rolled back."""

from __future__ import annotations

import json

import pytest
import yaml

from daemon.config import load_config
from daemon.retrain import check, gate
from daemon.store import Store
from model.segmenter import read_card, weights_sha256
from tests.conftest import CRACK_CLASS, CRACKS, copy_pairs, stems_of


@pytest.fixture
def setup(tmp_path, small_exports, tiny_checkpoint):
    inbox = tmp_path / "inbox"
    copy_pairs(CRACKS / "valid", inbox / "batch-1", stems_of(CRACKS / "valid")[-3:], per_stem=1)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump({
        "datasets": [
            {"name": "cracks", "root": str(small_exports["cracks"]), "task": "crack", "classes": [CRACK_CLASS]},
            {"name": "drywall", "root": str(small_exports["drywall"]), "task": "taping",
             "classes": ["drywall-join"]}],
        "prep": {"out": "prepared"},
        "model": {"checkpoint": str(tiny_checkpoint), "device": "cpu", "batch_size": 4},
        "train": {"out": "runs", "batch_size": 2, "crop_size": 64, "num_workers": 0},
        "store": {"url": "sqlite:///qa.sqlite3"},
        "retrain": {"inbox": "inbox", "min_new_images": 3, "max_regression": 1.0, "steps": 2, "models_dir": "models"},
    }))
    config = load_config(config_path)
    store = Store.open(config.store.url)
    card = read_card(tiny_checkpoint)
    store.startup_model(tiny_checkpoint, card.backend, weights_sha256(tiny_checkpoint), {})
    yield config_path, config, store
    store.close()


def test_new_labeled_images_in_the_inbox_request_a_retrain_once(setup):
    _, config, store = setup
    request = check(config, store, spawn=False)
    assert request is not None
    assert check(config, store, spawn=False) is None  # the same images do not ask twice
    [req] = store.retrain_requests()
    assert (req.new_images, req.status) == (3, "requested")


def test_too_few_new_images_request_nothing(setup, tmp_path):
    config_path, config, store = setup
    strict = config.model_copy(update={"retrain": config.retrain.model_copy(update={"min_new_images": 50})})
    assert check(strict, store, spawn=False) is None


def test_retrain_promotes_through_the_gate_and_versions_can_be_rolled_back(setup, cli):
    config_path, config, store = setup
    check(config, store, spawn=False)
    result = cli("-c", config_path, "retrain", "--quiet")
    assert result.code == 0, result.stderr
    assert "promoted" in result.stdout
    versions = json.loads(cli("-c", config_path, "model", "list", "--json").stdout)
    assert [(v["status"], v["active"]) for v in versions] == [("retired", False), ("active", True)]
    assert "crack" in versions[1]["metrics"]  # each task with validation images is scored
    assert store.retrain_requests()[0].status == "promoted"
    assert store.new_labeled() == 0  # the promoted model has seen them

    rolled = cli("-c", config_path, "model", "rollback")
    assert rolled.code == 0 and versions[0]["name"] in rolled.stdout
    assert store.active_version().id == versions[0]["id"]
    assert cli("-c", config_path, "model", "promote", str(versions[1]["id"])).code == 0
    assert store.active_version().id == versions[1]["id"]
    missing = cli("-c", config_path, "model", "promote", "nope")
    assert missing.code == 2 and "model list" in missing.stderr


@pytest.mark.parametrize(("candidate", "active", "promoted"), [
    ({"crack": 0.50, "taping": 0.70}, {"crack": 0.51, "taping": 0.69}, True),
    ({"crack": 0.45, "taping": 0.75}, {"crack": 0.51, "taping": 0.69}, False),
    ({"crack": 0.60, "taping": 0.60}, {"crack": 0.51, "taping": 0.69}, False),
])
def test_a_candidate_worse_than_max_regression_on_either_task_is_not_promoted(candidate, active, promoted):
    scores = {t: {"candidate": candidate[t], "active": active[t]} for t in candidate}
    ok, reason = gate(scores, max_regression=0.02)
    assert ok is promoted
    assert ("would drop" in reason) is not promoted


def test_an_automatic_retrain_uses_the_daemons_store_without_showing_it_in_the_process_list(tmp_path, monkeypatch):
    from daemon import retrain
    from daemon.config import Config, StoreConfig, TrainConfig

    started = {}

    class Popen:
        def __init__(self, args, **kwargs):
            started.update(args=args, env=kwargs["env"])

    monkeypatch.setattr(retrain.subprocess, "Popen", Popen)
    url = "postgresql+psycopg://qa:S3cretX@db/qa"  # given with --store, not in the (absent) config file
    config = Config(source=tmp_path / "config.yaml", store=StoreConfig(url=url), train=TrainConfig(out=tmp_path))
    retrain.start_retrain(config, 7)
    assert started["env"]["QA_DAEMON_STORE"] == url
    assert "S3cretX" not in " ".join(started["args"]) and "--config" not in started["args"]
