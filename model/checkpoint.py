"""A checkpoint is a folder: `model.safetensors` and `card.json`. Never pickle.

    card = read_card(Path("model/weights/compact-v2"))          # what it is, without loading it
    seg, card = load_checkpoint(Path("model/weights/compact-v2"), "auto")
    save_checkpoint(seg, Path("runs/x/best"), card)

`model.safetensors` holds only the weights that training changes (frozen pretrained
parts come from the backend's base); `card.json` holds backend, settings, thresholds,
per-task inference, prompts, data, metrics, seed and command.

Reading a card or hashing the weights needs neither torch nor OpenCV, so commands that
only look at checkpoints stay quick to start: those imports sit inside the functions
that use them.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model.errors import CheckpointError
from model.files import write_atomic

if TYPE_CHECKING:
    import torch

    from model.segmenter import Predictor, Segmenter

WEIGHTS = "model.safetensors"
CARD = "card.json"


@dataclass
class Card:
    """What a checkpoint is and how it was made; `card.json` in the checkpoint folder."""

    backend: str
    settings: dict[str, Any]  # the backend's constructor settings (input size, widths, base...)
    thresholds: dict[str, float] = field(default_factory=dict)  # per task, chosen on validation
    inference: dict[str, dict[str, Any]] = field(default_factory=dict)  # per task: TaskInference fields
    prompts: dict[str, list[str]] = field(default_factory=dict)  # per task: canonical first, then synonyms
    data: dict[str, Any] = field(default_factory=dict)  # datasets and split counts trained on
    metrics: dict[str, Any] = field(default_factory=dict)  # validation metrics per prompt
    seed: int | None = None
    command: str = ""
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    step: int = 0
    epoch: int = 0
    best_score: float | None = None
    dtype: str = "float32"
    int8: dict[str, Any] = field(default_factory=dict)  # INT8 graphs beside the weights: what they cost (quantize.py)


def save_checkpoint(model: Segmenter, folder: Path, card: Card, dtype: torch.dtype | None = None) -> Path:
    """Write `folder/model.safetensors` (in `dtype`, default float32) and `folder/card.json`, atomically per file."""
    import torch
    from safetensors.torch import save_file

    dtype = dtype or torch.float32
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", dtype=dtype if v.is_floating_point() else v.dtype).contiguous()
             for k, v in model.trainable_state().items()}
    card = Card(**{**asdict(card), "backend": model.backend, "settings": model.settings,
                   "thresholds": dict(card.thresholds or model.thresholds),
                   "inference": dict(card.inference or {t: i.as_dict() for t, i in model.inference.items()}),
                   "prompts": dict(card.prompts or model.prompts), "dtype": str(dtype).removeprefix("torch.")})
    tmp = folder / f".{WEIGHTS}.tmp"
    save_file(state, str(tmp), metadata={"backend": model.backend})
    tmp.replace(folder / WEIGHTS)
    write_atomic(folder / CARD, json.dumps(asdict(card), indent=2, default=str) + "\n")
    return folder


def weights_sha256(folder: Path) -> str:
    """The sha256 of a checkpoint's weights file: which model version this is."""
    with open(folder / WEIGHTS, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def read_card(folder: Path) -> Card:
    """The card of a checkpoint folder, with a clear error when there is none."""
    path = folder / CARD
    if not folder.is_dir() or not path.is_file() or not (folder / WEIGHTS).is_file():
        raise CheckpointError(f"{folder}: no checkpoint here (expected {CARD} and {WEIGHTS}); "
                              "train one with `qa-daemon train`, or set model.checkpoint / --checkpoint")
    try:
        raw = json.loads(path.read_text())
        return Card(**raw)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint card ({exc}); re-export the checkpoint") from None


def load_checkpoint(folder: Path, device: str | torch.device = "cpu", runtime: str = "eager",
                    cache: Path | None = None) -> tuple[Segmenter, Card]:
    """The model of a checkpoint folder, on `device`, in eval mode, and its card. On a CPU, `runtime` "auto"
    or "onnx" compiles it (model/runtime.py; exports cached in `cache`) for every input side its tasks run at."""
    import torch
    from safetensors.torch import load_file

    from model.backends import build
    from model.device import resolve_device

    card = read_card(folder)
    # "pretrained" means: load pretrained weights into the parts a checkpoint stores; here the checkpoint does
    model = build(card.backend, {**card.settings, **({"pretrained": False} if "pretrained" in card.settings else {})})
    try:
        state = load_file(str(folder / WEIGHTS))
    except Exception as exc:  # safetensors raises its own types for truncated or foreign files
        raise CheckpointError(f"{folder / WEIGHTS}: cannot read the weights ({exc}); "
                              "the file is damaged, copy it again") from None
    expected = model.trainable_state()
    missing, unexpected = set(expected) - set(state), set(state) - set(expected)
    bad_shape = [k for k in set(expected) & set(state) if expected[k].shape != state[k].shape]
    if missing or unexpected or bad_shape:
        raise CheckpointError(f"{folder / WEIGHTS}: weights do not fit a {card.backend} model with these settings "
                              f"({len(missing)} missing, {len(unexpected)} unexpected, {len(bad_shape)} "
                              "of another shape); the card and weights do not belong together")
    with torch.no_grad():
        for k, v in expected.items():
            v.copy_(state[k].to(v.dtype))
    apply_card(model, card, folder)
    model = model.to(resolve_device(device) if isinstance(device, str) else device).eval()
    if runtime != "eager":
        from model.runtime import compiled_key, use_runtime

        use_runtime(model, runtime, cache, compiled_key(card, weights_sha256(folder)), folder, card)
    return model, card


def apply_card(model: Predictor, card: Card, folder: Path | None = None) -> None:
    """Give `model` the card's thresholds, prompts and per-task inference settings."""
    from model.postprocess import TaskInference

    model.thresholds, model.prompts = dict(card.thresholds), {k: list(v) for k, v in card.prompts.items()}
    try:
        model.inference = {t: TaskInference(**v) for t, v in card.inference.items()}
    except TypeError as exc:
        raise CheckpointError(f"{(folder or Path('checkpoint')) / CARD}: inference: {exc}; re-export the checkpoint") \
            from None
