"""The one interface every segmentation backend implements, its factory, and its checkpoints.

    seg = build("compact", {"input_size": 640})           # a fresh model
    seg = load_checkpoint(Path("model/weights/default"))  # a trained one
    probs = seg.predict([rgb_image], ["segment crack", "segment taping area"])
    probs[0].shape == (2, H, W)                           # per prompt, at the image's own size

A `Segmenter` is an encoder, a conditioning step and a decoder: `encode_image`
runs once per image, `embed_prompts` once per prompt (cached: text encoders are
frozen), and `decode` once per (image, prompt). So two prompts cost one image
encoding and two light decodes.

A checkpoint is a folder: `model.safetensors` (only the weights that training
changes; frozen pretrained parts come from `card.base`) and `card.json`
(backend, base, settings, thresholds, data, metrics, seed, command). Never pickle.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from model.errors import CheckpointError
from model.files import write_atomic
from model.postprocess import TaskInference, to_mask

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


class Segmenter(nn.Module):
    """Images and prompts in, per-prompt probability maps at each image's own size out."""

    backend: ClassVar[str]
    default_settings: ClassVar[dict[str, Any]] = {}

    def __init__(self, settings: dict[str, Any]):
        super().__init__()
        unknown = set(settings) - set(self.default_settings)
        if unknown:
            raise CheckpointError(f"{self.backend}: unknown settings {sorted(unknown)}; "
                                  f"valid: {sorted(self.default_settings)}")
        self.settings = {**self.default_settings, **settings}
        self.input_size = int(self.settings["input_size"])
        self.thresholds: dict[str, float] = {}
        self.inference: dict[str, TaskInference] = {}  # per task: input size and mask clean-up
        self.prompts: dict[str, list[str]] = {}
        self._prompt_cache: dict[str, torch.Tensor] = {}

    # --- what each backend provides -----------------------------------------------------------
    def encode_image(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        """Features of a batch of images, `pixels` (B, 3, S, S) float in [0, 255]."""
        raise NotImplementedError

    def _embed_prompts(self, prompts: list[str]) -> torch.Tensor:
        """(P, D) embeddings of prompts from the frozen text encoder."""
        raise NotImplementedError

    def decode(self, features: list[torch.Tensor], prompt_emb: torch.Tensor) -> torch.Tensor:
        """Logits (B, 1, h, w) of one prompt per image, `prompt_emb` (B, D)."""
        raise NotImplementedError

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The weights a checkpoint stores: everything that is not a frozen pretrained part."""
        raise NotImplementedError

    def decode_levels(self, features: list[torch.Tensor], prompt_emb: torch.Tensor) -> list[torch.Tensor]:
        """The main logits first, then any auxiliary (deep-supervision) logits that training uses."""
        return [self.decode(features, prompt_emb)]

    # --- shared behaviour ---------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def embed_prompts(self, prompts: list[str]) -> torch.Tensor:
        """(P, D) prompt embeddings, each prompt encoded once per model and then served from a cache."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self._prompt_cache]
        if missing:
            with torch.no_grad():
                emb = self._embed_prompts(missing).detach()
            self._prompt_cache.update(zip(missing, emb, strict=True))
        return torch.stack([self._prompt_cache[p] for p in prompts]).to(self.device)

    def alias(self, prompt: str, runs_as: str) -> None:
        """Answer `prompt` with the embedding of `runs_as` (a paraphrase runs as its task's trained prompt).

        Moving the model to another device forgets aliases: set them after `.to(device)`.
        """
        self._prompt_cache[prompt] = self.embed_prompts([runs_as])[0]

    def _apply(self, fn, recurse=True):  # noqa: D401 - keep the prompt cache on the model's device
        self._prompt_cache.clear()
        return super()._apply(fn, recurse)

    def forward(self, pixels: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """Training entry: logits (B, 1, S, S) for image i under prompts[i]."""
        if len(prompts) != pixels.shape[0]:
            raise ValueError(f"got {pixels.shape[0]} images and {len(prompts)} prompts; give one prompt per image")
        logits = self.decode(self.encode_image(pixels), self.embed_prompts(prompts))
        return nn.functional.interpolate(logits, size=pixels.shape[-2:], mode="bilinear", align_corners=False)

    def forward_levels(self, pixels: torch.Tensor, prompts: list[str]) -> list[torch.Tensor]:
        """Like `forward`, with the auxiliary logits after the main ones; the main ones at the input's size."""
        if len(prompts) != pixels.shape[0]:
            raise ValueError(f"got {pixels.shape[0]} images and {len(prompts)} prompts; give one prompt per image")
        levels = self.decode_levels(self.encode_image(pixels), self.embed_prompts(prompts))
        main = nn.functional.interpolate(levels[0], size=pixels.shape[-2:], mode="bilinear", align_corners=False)
        return [main, *levels[1:]]

    def preprocess(self, images: list[np.ndarray], size: int | None = None) -> torch.Tensor:
        """RGB uint8 (H, W, 3) images -> (B, 3, S, S) float pixels, stretched to the square input side S."""
        s = size or self.input_size
        batch = []
        for im in images:
            if im.ndim != 3 or im.shape[2] != 3:
                raise ValueError(f"expected an RGB image of shape (H, W, 3), got {im.shape}")
            interp = cv2.INTER_AREA if im.shape[0] > s or im.shape[1] > s else cv2.INTER_LINEAR
            batch.append(cv2.resize(im, (s, s), interpolation=interp) if im.shape[:2] != (s, s) else im)
        x = torch.from_numpy(np.stack(batch)).to(self.device)
        return x.permute(0, 3, 1, 2).float()

    @torch.inference_mode()
    def predict_logits(self, pixels: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """(B, P, h, w) logits: each image encoded once, each prompt decoded against it."""
        # on a GPU, half precision (bf16 where supported): about twice the images per second and memory
        half = torch.bfloat16 if pixels.is_cuda and torch.cuda.is_bf16_supported() else torch.float16
        with torch.autocast(device_type="cuda", dtype=half, enabled=pixels.is_cuda):
            features = self.encode_image(pixels)
            emb = self.embed_prompts(prompts)
            b = pixels.shape[0]
            return torch.cat([self.decode(features, emb[i].expand(b, -1)) for i in range(len(prompts))], dim=1)

    @torch.inference_mode()
    def predict(self, images: list[np.ndarray], prompts: list[str]) -> list[np.ndarray]:
        """Per image, a (P, H, W) float32 array of probabilities at the image's own size.

        Prompts whose tasks run at the same input side share one image encoding.
        """
        if not images:
            return []
        out = [np.empty((len(prompts), *im.shape[:2]), np.float32) for im in images]
        groups: dict[tuple[int, bool], list[int]] = {}
        for i, p in enumerate(prompts):
            settings = self.task_inference(p)
            groups.setdefault((settings.input_size or self.input_size, settings.flip_tta), []).append(i)
        for (size, flip), idx in groups.items():
            pixels = self.preprocess(images, size)
            chosen = [prompts[i] for i in idx]
            probs = torch.sigmoid(self.predict_logits(pixels, chosen).float())
            if flip:  # test-time augmentation: the mirrored photo's prediction, mirrored back
                probs = (probs + torch.sigmoid(self.predict_logits(pixels.flip(-1), chosen).float()).flip(-1)) / 2
            probs = probs.cpu().numpy()
            for im, p, o in zip(images, probs, out, strict=True):
                h, w = im.shape[:2]
                for j, m in zip(idx, p, strict=True):
                    o[j] = cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR) if m.shape != (h, w) else m
        return out

    def task_inference(self, prompt: str) -> TaskInference:
        """How the prompt's task is run and cleaned up (defaults for a free prompt)."""
        return self.inference.get(self.task_of(prompt) or "", TaskInference())

    def mask(self, prob: np.ndarray, prompt: str) -> np.ndarray:
        """The uint8 {0, 255} mask of one prompt's probability map: its task's threshold and clean-up."""
        return to_mask(prob, self.threshold(prompt), self.task_inference(prompt))

    @property
    def largest_input_size(self) -> int:
        """The largest side any task runs at: the working resolution a caller should decode to."""
        return max([self.inference.get(t, TaskInference()).input_size or self.input_size for t in self.prompts]
                   or [self.input_size])

    def set_input_size(self, size: int) -> None:
        """Run every task at `size` (clean-up settings kept)."""
        self.input_size = size
        self.inference = {t: replace(i, input_size=None) for t, i in self.inference.items()}

    def param_groups(self, lr: float) -> list[dict]:
        """Optimizer groups; backends with pretrained parts may train them slower."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]

    def task_of(self, prompt: str) -> str | None:
        return next((t for t, ps in self.prompts.items() if prompt in ps), None)

    def threshold(self, prompt: str) -> float:
        """The probability above which a pixel is in the mask: the prompt's task's, else 0.5."""
        return self.thresholds.get(self.task_of(prompt) or "", 0.5)


BACKENDS: dict[str, type[Segmenter]] = {}


def register(cls: type[Segmenter]) -> type[Segmenter]:
    BACKENDS[cls.backend] = cls
    return cls


def _backends() -> dict[str, type[Segmenter]]:
    from model import clipseg, compact  # noqa: F401 - importing registers them

    return BACKENDS


def build(backend: str, settings: dict[str, Any] | None = None) -> Segmenter:
    """A new model of `backend` ("compact" or "clipseg") with pretrained parts loaded.

    >>> build("compact", {"input_size": 512})
    >>> build("clipseg", {"base": "CIDAS/clipseg-rd64-refined", "input_size": 352})
    """
    backends = _backends()
    if backend not in backends:
        raise CheckpointError(f"unknown backend {backend!r}; valid backends: {', '.join(sorted(backends))}")
    return backends[backend](settings or {})


def resolve_device(device: str) -> torch.device:
    """'auto' is the GPU when there is one; 'cuda' without one is an error the user can fix."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise CheckpointError("device cuda asked for, but no CUDA GPU is visible; use --device cpu or auto")
    return torch.device(device)


def save_checkpoint(model: Segmenter, folder: Path, card: Card, dtype: torch.dtype = torch.float32) -> Path:
    """Write `folder/model.safetensors` and `folder/card.json`, atomically per file."""
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
    import hashlib

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


def load_checkpoint(folder: Path, device: str | torch.device = "cpu") -> tuple[Segmenter, Card]:
    """The model of a checkpoint folder, on `device`, in eval mode, and its card."""
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
    model.thresholds, model.prompts = dict(card.thresholds), {k: list(v) for k, v in card.prompts.items()}
    try:
        model.inference = {t: TaskInference(**v) for t, v in card.inference.items()}
    except TypeError as exc:
        raise CheckpointError(f"{folder / CARD}: inference: {exc}; re-export the checkpoint") from None
    return model.to(resolve_device(device) if isinstance(device, str) else device).eval(), card
