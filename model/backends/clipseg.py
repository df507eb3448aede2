"""The CLIPSeg backend: `CIDAS/clipseg-rd64-refined` (a frozen CLIP ViT-B/16 and a 1.1M-parameter decoder).

The base comes from the Hugging Face hub id or a local folder in `settings["base"]`
(a folder written by `save_pretrained`, with its tokenizer and image processor).
By default only the decoder is trained; `tune_last_layers: N` also trains the
last N vision layers that feed the decoder (at `train.lr * clip_lr_scale`).
A checkpoint stores just those trained weights; the rest is read from the base.

The vision transformer is run layer by layer so that it stops at the deepest
layer the decoder reads (layer 9 of 12 in rd64-refined): the remaining layers
would only feed CLIP's pooled output, which segmentation does not use.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from model.errors import CheckpointError
from model.segmenter import Segmenter


class ClipSegSegmenter(Segmenter):
    """CLIPSeg through transformers' `CLIPSegForImageSegmentation`."""

    backend = "clipseg"
    default_settings = {
        "base": "CIDAS/clipseg-rd64-refined",
        "input_size": 352,  # native; larger sizes interpolate the position embeddings
        "tune_last_layers": 0,  # 0: decoder only, CLIP frozen
        "clip_lr_scale": 0.1,
        "pretrained": True,  # unused: CLIP always comes from the base, a checkpoint holds the rest
    }

    def __init__(self, settings: dict[str, Any]):
        super().__init__(settings)
        from transformers import AutoTokenizer, CLIPSegForImageSegmentation
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # one bar per weight file is noise in a CLI and a daemon log

        base = self.settings["base"]
        local = Path(base).expanduser()
        source = str(local) if local.exists() else base
        try:
            self.net = CLIPSegForImageSegmentation.from_pretrained(source)
            self.tokenizer = AutoTokenizer.from_pretrained(source)
        except OSError as exc:
            raise CheckpointError(
                f"CLIPSeg base {base!r} cannot be loaded ({str(exc).splitlines()[0]}); give a local folder "
                "made with save_pretrained as model.base, or connect to the Hugging Face hub once to cache it"
            ) from None
        mean, std = _image_stats(local if local.exists() else None)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255, persistent=False)
        self.extract_layers = list(self.net.config.extract_layers)
        layers = self.net.clip.vision_model.encoder.layers
        n_tune = int(self.settings["tune_last_layers"])
        if not 0 <= n_tune <= max(self.extract_layers) + 1:
            raise CheckpointError(f"clipseg: tune_last_layers must be 0..{max(self.extract_layers) + 1}, got {n_tune}")
        self.net.clip.requires_grad_(False)
        self.tuned_layers = list(range(max(self.extract_layers) + 1 - n_tune, max(self.extract_layers) + 1))
        for i in self.tuned_layers:
            layers[i].requires_grad_(True)

    def train(self, mode: bool = True) -> ClipSegSegmenter:
        super().train(mode)
        self.net.clip.eval()  # frozen CLIP keeps its eval behaviour (no dropout)
        return self

    def encode_image(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        vision = self.net.clip.vision_model
        x = (pixels - self.mean) / self.std
        hidden = vision.pre_layrnorm(vision.embeddings(x, interpolate_pos_encoding=True))
        activations = []
        for i, layer in enumerate(vision.encoder.layers[: max(self.extract_layers) + 1]):
            with torch.set_grad_enabled(torch.is_grad_enabled() and i in self.tuned_layers):
                hidden = layer(hidden, None)
            if i in self.extract_layers:
                activations.append(hidden)
        return activations

    def _embed_prompts(self, prompts: list[str]) -> torch.Tensor:
        batch = self.tokenizer(prompts, padding=True, return_tensors="pt").to(self.device)
        return self.net.clip.get_text_features(**batch).pooler_output

    def decode(self, features: list[torch.Tensor], prompt_emb: torch.Tensor) -> torch.Tensor:
        logits = self.net.decoder(features, prompt_emb.to(features[0].dtype)).logits
        return logits.reshape(features[0].shape[0], 1, *logits.shape[-2:])

    def trainable_state(self) -> dict[str, torch.Tensor]:
        tuned = tuple(f"net.clip.vision_model.encoder.layers.{i}." for i in self.tuned_layers)
        return {k: v for k, v in self.state_dict(keep_vars=True).items()
                if k.startswith("net.decoder.") or k.startswith(tuned)}

    def param_groups(self, lr: float) -> list[dict]:
        """The decoder at `lr`, tuned CLIP layers at `lr * clip_lr_scale`."""
        clip = [p for n, p in self.named_parameters() if p.requires_grad and n.startswith("net.clip.")]
        rest = [p for n, p in self.named_parameters() if p.requires_grad and not n.startswith("net.clip.")]
        groups = [{"params": rest, "lr": lr}]
        if clip:
            groups.append({"params": clip, "lr": lr * float(self.settings["clip_lr_scale"])})
        return groups


def _image_stats(folder: Path | None) -> tuple[list[float], list[float]]:
    """CLIP's normalisation, from the base's preprocessor_config.json when it has one."""
    default = ([0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711])
    if folder is None or not (folder / "preprocessor_config.json").is_file():
        return default
    cfg = json.loads((folder / "preprocessor_config.json").read_text())
    return cfg.get("image_mean", default[0]), cfg.get("image_std", default[1])
