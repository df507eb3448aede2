"""The one interface every segmentation backend implements: images and prompts in, per-prompt maps out.

    seg = build("compact", {"input_size": 640})                   # model.backends: a fresh model
    seg, card = load_checkpoint(Path("model/weights/compact-v2"))  # model.checkpoint: a trained one
    probs = seg.predict([rgb_image], ["segment crack", "segment taping area"])
    probs[0].shape == (2, H, W)                                    # per prompt, at the image's own size

A `Segmenter` is an encoder, a conditioning step and a decoder: `encode_image`
runs once per image, `embed_prompts` once per prompt (cached: text encoders are
frozen), and `decode` once per (image, prompt). So two prompts cost one image
encoding and two light decodes. The backends (`model/backends/`) subclass it;
this module imports neither them nor the checkpoint code.

What turns logits into probability maps and masks (input sides, thresholds, clean-up)
is the `Predictor` base, shared with `model.runtime.CompiledModel`, which runs a
checkpoint's cached compiled graph without building the PyTorch model at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, ClassVar

import cv2
import numpy as np
import torch
from torch import nn

from model.errors import CheckpointError
from model.postprocess import TaskInference, to_mask


class Predictor:
    """Images and prompts in, per-prompt probability maps at each image's own size out, and the masks users
    get from them; `predict_logits` is what computes the logits."""

    backend: str
    input_size: int
    thresholds: dict[str, float]
    inference: dict[str, TaskInference]  # per task: input size and mask clean-up
    prompts: dict[str, list[str]]  # per task: canonical first, then synonyms
    runtime: str  # what computes the logits on a CPU: "onnx" or "eager"
    device: torch.device

    def predict_logits(self, pixels: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """(B, P, h, w) logits of (B, 3, S, S) pixels in [0, 255] under each prompt."""
        raise NotImplementedError

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
    def input_sides(self) -> list[int]:
        """Every input side the model runs at: each task's, and the default one for free prompts."""
        return sorted({self.inference.get(t, TaskInference()).input_size or self.input_size for t in self.prompts}
                      | {self.input_size})

    @property
    def largest_input_size(self) -> int:
        """The largest side any task runs at: the working resolution a caller should decode to."""
        return max([self.inference.get(t, TaskInference()).input_size or self.input_size for t in self.prompts]
                   or [self.input_size])

    def set_input_size(self, size: int) -> None:
        """Run every task at `size` (clean-up settings kept)."""
        self.input_size = size
        self.inference = {t: replace(i, input_size=None) for t, i in self.inference.items()}

    def task_of(self, prompt: str) -> str | None:
        return next((t for t, ps in self.prompts.items() if prompt in ps), None)

    def threshold(self, prompt: str) -> float:
        """The probability above which a pixel is in the mask: the prompt's task's, else 0.5."""
        return self.thresholds.get(self.task_of(prompt) or "", 0.5)


class Segmenter(Predictor, nn.Module):
    """A PyTorch model behind the Predictor: an encoder, a conditioning step and a decoder."""

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
        # a compiled graph of the eval weights (model/runtime.py), used for CPU inference; training drops it
        self.compiled: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None

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

    def train(self, mode: bool = True) -> Segmenter:
        if mode:
            self.compiled = None  # a snapshot of weights that training is about to change
        return super().train(mode)

    @property
    def runtime(self) -> str:
        """What runs inference on a CPU: "onnx" or "onnx-int8" (a compiled graph), or "eager" (PyTorch)."""
        return "eager" if self.compiled is None else getattr(self.compiled, "name", "onnx")

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

    def prompt_logits(self, pixels: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """(B, P, h, w) logits of every image under every prompt embedding `emb` (P, D): each image encoded
        once, then decoded for all its prompts in one batch of B * P. The graph `model/runtime.py` compiles."""
        b, p = pixels.shape[0], emb.shape[0]
        features = [f.unsqueeze(1).expand(b, p, *f.shape[1:]).flatten(0, 1) for f in self.encode_image(pixels)]
        logits = self.decode(features, emb.unsqueeze(0).expand(b, p, emb.shape[1]).flatten(0, 1))
        return logits.reshape(b, p, *logits.shape[-2:])

    @torch.inference_mode()
    def predict_logits(self, pixels: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """(B, P, h, w) logits: each image encoded once, each prompt decoded against it."""
        emb = self.embed_prompts(prompts)
        if self.compiled is not None and not pixels.is_cuda:
            return self.compiled(pixels, emb)
        # on a GPU, half precision (bf16 where supported): about twice the images per second and memory
        half = torch.bfloat16 if pixels.is_cuda and torch.cuda.is_bf16_supported() else torch.float16
        with torch.autocast(device_type="cuda", dtype=half, enabled=pixels.is_cuda):
            return self.prompt_logits(pixels, emb)

    def param_groups(self, lr: float) -> list[dict]:
        """Optimizer groups; backends with pretrained parts may train them slower."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]
