"""Prompts users type: configured prompts and clear paraphrases are understood, anything else is refused in one line.

The sentence encoder is the real all-MiniLM-L6-v2, so the accuracy checks here are real.
"""

from __future__ import annotations

import json
import shutil
from itertools import combinations
from pathlib import Path

import cv2
import numpy as np
import pytest

from model.errors import PromptError
from model.prompt_phrasings import CALIBRATION, TEST, UNRELATED_TEST
from model.prompts import MARGIN, REFERENCES, THRESHOLD, PromptResolver, choose, shipped_prompts, subject, teach
from tests.support.datasets import CRACKS, need_shared

KNOWN = shipped_prompts()  # what THRESHOLD and MARGIN were chosen against (config.yaml's prompts)
LISTED = ("use one of: segment crack, segment wall crack, segment cracks (crack) | segment taping area, "
          "segment joint/tape, segment drywall seam, segment taping (taping)")
# Refused, never mis-mapped: all-MiniLM-L6-v2 puts "fissure" far from "crack" (similarity 0.43-0.47).
REFUSED_PARAPHRASES = {"highlight the fissures", "segment fissure"}


@pytest.fixture(scope="module")
def resolver() -> PromptResolver:
    return PromptResolver(KNOWN)


def task_or_refused(resolver: PromptResolver, prompt: str) -> str | None:
    try:
        return resolver.resolve(prompt).task
    except PromptError:
        return None


def test_configured_prompts_map_to_their_task_exactly_whatever_the_case_and_spacing():
    def no_encoder(texts):
        raise AssertionError(f"a configured prompt needed the sentence encoder: {texts}")

    resolver = PromptResolver(KNOWN, embed=no_encoder)
    for task, prompts in KNOWN.items():
        for prompt in prompts:
            typed = "  " + prompt.upper().replace(" ", "   ") + " "
            r = resolver.resolve(typed)
            assert (r.task, r.runs_as, r.prompt, r.similarity) == (task, prompt, typed, None)


@pytest.mark.parametrize("task", ["crack", "taping"])
def test_unseen_paraphrases_map_to_their_task(resolver, task):
    got = {p: task_or_refused(resolver, p) for p in TEST[task]}
    assert sum(t == task for t in got.values()) >= 10, got
    assert {p for p, t in got.items() if t != task} <= REFUSED_PARAPHRASES, got
    assert all(t in (task, None) for t in got.values()), "a paraphrase was mapped to the other task"


def test_a_paraphrase_runs_as_its_task_s_canonical_prompt_and_keeps_the_user_s_words(resolver):
    r = resolver.resolve("show me the drywall tape")
    assert (r.prompt, r.task, r.runs_as) == ("show me the drywall tape", "taping", "segment taping area")
    assert THRESHOLD <= r.similarity <= 1


@pytest.mark.parametrize("prompt", UNRELATED_TEST)
def test_unrelated_prompts_are_refused_naming_the_prompt_and_the_known_ones(resolver, prompt):
    with pytest.raises(PromptError) as refused:
        resolver.resolve(prompt)
    assert str(refused.value) == f"prompt {prompt!r} is not a known task; {LISTED}"


def test_phrasings_for_choosing_and_for_testing_are_kept_apart():
    sets = {"calibration": [p for ps in CALIBRATION.values() for p in ps],
            "test": [p for ps in TEST.values() for p in ps], "unrelated test": UNRELATED_TEST,
            "known and references": [p for d in (KNOWN, REFERENCES) for ps in d.values() for p in ps]}
    assert len(TEST["crack"]) >= 10 and len(TEST["taping"]) >= 10 and len(UNRELATED_TEST) >= 10
    for (a, one), (b, other) in combinations(sets.items(), 2):
        shared = {subject(p) for p in one} & {subject(p) for p in other}
        assert not shared, f"{a} and {b} share {shared}"


def test_threshold_and_margin_are_those_the_calibration_phrasings_choose(resolver):
    texts = [p for t in KNOWN for p in CALIBRATION[t]] + CALIBRATION["unrelated"]
    expected = [t for t in KNOWN for _ in CALIBRATION[t]] + [None] * len(CALIBRATION["unrelated"])
    assert choose(resolver.scores(texts), expected) == (THRESHOLD, MARGIN)


def test_a_taught_model_answers_a_paraphrase_exactly_as_the_canonical_prompt(tiny_checkpoint):
    import torch

    from model.checkpoint import load_checkpoint

    image = [np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)]
    model, _ = load_checkpoint(tiny_checkpoint)
    torch.manual_seed(0)
    with torch.no_grad():  # the untrained FiLM layers are the identity: make the prompt matter
        for v in model.trainable_state().values():
            if v.is_floating_point():
                v.add_(torch.randn_like(v) * 0.05)
    untaught = model.predict(image, ["find hairline cracks"])[0][0]
    teach(model, PromptResolver(model.prompts).resolve_all(["find hairline cracks"]))
    probs = model.predict(image, ["segment crack", "find hairline cracks"])[0]
    np.testing.assert_array_equal(probs[0], probs[1])
    assert not np.array_equal(untaught, probs[1]), "the paraphrase ran with its own embedding"
    assert model.task_of("find hairline cracks") == "crack"


@pytest.fixture
def photo_and_config(tmp_path: Path, write_config, tiny_checkpoint) -> tuple[Path, Path]:
    photo = tmp_path / "photos" / "IMG_0001.jpg"
    photo.parent.mkdir()
    cv2.imwrite(str(photo), np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    return photo, write_config({"model": {"checkpoint": str(tiny_checkpoint), "device": "cpu", "batch_size": 2}})


def test_predict_with_an_unknown_prompt_exits_2_with_one_line_naming_it(cli, photo_and_config, tmp_path):
    photo, config = photo_and_config
    result = cli("--config", config, "predict", photo, "--out", tmp_path / "out", "--prompt", "segment window")
    assert result.code == 2
    assert result.stderr.strip().splitlines() == [f"error: prompt 'segment window' is not a known task; {LISTED}"]
    assert not (tmp_path / "out").exists()


def test_predict_with_a_paraphrase_names_its_mask_after_it_and_draws_the_canonical_mask(cli, photo_and_config,
                                                                                       tmp_path):
    photo, config = photo_and_config
    result = cli("--config", config, "predict", photo, "--out", tmp_path / "out",
                 "--prompt", "find hairline cracks", "--prompt", "segment crack")
    assert result.code == 0, result.stderr
    paraphrase = tmp_path / "out" / "IMG_0001__find_hairline_cracks.png"
    assert paraphrase.read_bytes() == (tmp_path / "out" / "IMG_0001__segment_crack.png").read_bytes()


def test_eval_scores_a_paraphrase_under_its_own_name_and_refuses_an_unknown_prompt(cli, write_config,
                                                                                  tiny_checkpoint, tmp_path):
    need_shared()
    first = sorted((CRACKS / "valid").glob("*.jpg"))[0]
    data = tmp_path / "labeled"
    data.mkdir()
    shutil.copy(first, data)
    shutil.copy(first.with_suffix(".xml"), data)
    config = write_config({"model": {"checkpoint": str(tiny_checkpoint), "device": "cpu", "batch_size": 2}})
    result = cli("--config", config, "eval", "--data", data, "--task", "crack", "--json",
                 "--prompt", "fractures in the wall", "--prompt", "segment crack")
    assert result.code == 0, result.stderr
    paraphrase, canonical = json.loads(result.stdout)["results"]
    assert paraphrase["prompt"] == "fractures in the wall"
    assert {k: v for k, v in paraphrase.items() if k not in ("prompt", "ms_per_image")} == \
        {k: v for k, v in canonical.items() if k not in ("prompt", "ms_per_image")}
    refused = cli("--config", config, "eval", "--data", data, "--task", "crack", "--prompt", "find the door")
    assert refused.code == 2 and refused.stderr.startswith("error: prompt 'find the door' is not a known task;")


def test_a_configured_synonym_the_checkpoint_never_saw_runs_as_the_canonical_prompt():
    from model.prompts import resolve_prompts

    trained = {"crack": ["segment crack"], "taping": ["segment taping area"]}
    configured = {"crack": ["segment crack", "segment wall crack"], "taping": ["segment taping area"]}
    (r,) = resolve_prompts(["Segment Wall Crack"], trained, configured)
    assert (r.task, r.runs_as) == ("crack", "segment crack")
    (r,) = resolve_prompts(["segment crack"], trained, configured)
    assert r.runs_as == "segment crack" and r.similarity is None
