"""A tiny untrained model checkpoint: fast, and loaded through the product's own loader."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_SETTINGS = {"input_size": 128, "decoder_widths": [8, 8, 16, 16], "channels_last": False, "pretrained": False}
TINY_THRESHOLDS = {"crack": 0.5, "taping": 0.5}


def save_tiny(folder: Path, prompts: dict[str, list[str]] | None = None) -> Path:
    """An untrained compact model at 128 px, saved as a checkpoint in `folder` (its weights from the current
    torch random state)."""
    from model.backends import build
    from model.checkpoint import Card, save_checkpoint

    card = Card(backend="compact", settings=TINY_SETTINGS, thresholds=TINY_THRESHOLDS,
                **({"prompts": prompts} if prompts else {}))
    return save_checkpoint(build("compact", TINY_SETTINGS), folder, card)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """An untrained compact checkpoint at 128 px, the same in every run (and so the same masks)."""
    import torch

    torch.manual_seed(0)
    prompts = {"crack": ["segment crack"], "taping": ["segment taping area"]}
    return save_tiny(tmp_path_factory.mktemp("ckpt") / "tiny-v1", prompts)
