"""The config file: validated once, clear one-line errors naming the file and key, exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.config import ConfigError, load_config
from tests.support.datasets import REPO


def test_shipped_config_validates_and_resolves_paths_against_its_folder():
    config = load_config(REPO / "config.yaml")
    assert config.prompts.canonical == {"crack": "segment crack", "taping": "segment taping area"}
    assert config.datasets[0].root == REPO / "data" / "cracks.v1i.voc"
    assert config.store.url == f"sqlite:///{REPO / 'qa-daemon.sqlite3'}"
    assert config.task_of_prompt("segment drywall seam") == "taping"
    assert config.task_of_prompt("segment wall crack") == "crack"


@pytest.mark.parametrize(("overrides", "expected"), [
    ({"watc": {}}, "watc: unknown key"),
    ({"model": {"device": "tpu"}}, "model.device: Input should be 'auto', 'cpu' or 'cuda'"),
    ({"model": {"batch_size": "many"}}, "model.batch_size: Input should be a valid integer"),
    ({"prep": {"valid_fraction": 1.5}}, "prep.valid_fraction: Input should be less than 1"),
    ({"datasets": [{"name": "a", "root": "x", "task": "paint", "classes": ["c"]}]}, "datasets.0.task"),
])
def test_bad_config_gives_one_line_naming_file_and_key_and_exit_2(cli, write_config, overrides, expected):
    path = write_config(overrides)
    result = cli("--config", path, "prep")
    assert result.code == 2
    assert result.stderr.startswith(f"error: {path}: ")
    assert expected in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) == 1


def test_yaml_syntax_error_names_the_line(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("model:\n  device: [cpu\n")
    with pytest.raises(ConfigError, match=r"c.yaml: not valid YAML at line \d"):
        load_config(bad)


def test_missing_dataset_folder_names_the_key(cli, write_config):
    path = write_config()
    result = cli("--config", path, "prep")
    assert result.code == 2
    assert f"{path}: datasets[0].root: " in result.stderr
    assert "does not exist" in result.stderr


def test_missing_config_file_says_how_to_pick_another(cli, tmp_path):
    result = cli("--config", tmp_path / "nope.yaml", "prep")
    assert result.code == 2
    assert "config file not found; pass --config or set QA_DAEMON_CONFIG" in result.stderr


def test_env_var_picks_the_config_file(cli, write_config, monkeypatch):
    path = write_config({"watc": {}}, name="other.yaml")
    monkeypatch.setenv("QA_DAEMON_CONFIG", str(path))
    result = cli("prep")
    assert result.code == 2 and "other.yaml: watc: unknown key" in result.stderr


def test_a_prompt_may_not_belong_to_both_tasks(write_config):
    path = write_config({"prompts": {"crack": {"canonical": "segment crack", "synonyms": ["segment seam"]},
                                     "taping": {"canonical": "segment taping area", "synonyms": ["segment seam"]}}})
    with pytest.raises(ConfigError, match="'segment seam' is listed for both crack and taping"):
        load_config(path)


def test_absolute_paths_stay_as_given(write_config, tmp_path):
    path = write_config({"outputs": {"dir": str(tmp_path / "out")}})
    assert load_config(Path(path)).outputs.dir == tmp_path / "out"


def test_train_overrides_are_validated_and_name_the_key(write_config):
    from daemon.config import ConfigError, load_config

    config = load_config(write_config())
    changed = config.with_train_overrides(["ema_decay=0", "scale.crack=[0.5, 1.0]", "architecture.output_stride=4"])
    assert changed.train.ema_decay == 0 and changed.train.scale["crack"] == (0.5, 1.0)
    assert changed.train.architecture["output_stride"] == 4 and config.train.ema_decay == 0.998
    settings = changed.train_settings()
    assert settings.augment.scale["crack"] == (0.5, 1.0) and settings.model["output_stride"] == 4
    for item, message in [("ema_dekay=0.9", "train.ema_dekay: unknown key"), ("lr=-1", "train.lr:"),
                          ("scale.crack=[2, 1]", "train.scale:"), ("ema_decay", "expected KEY=VALUE")]:
        with pytest.raises(ConfigError, match=message):
            config.with_train_overrides([item])
