"""The segmentation backends by name, and `build`, which makes a new model of one.

    seg = build("compact", {"input_size": 512})
    seg = build("clipseg", {"base": "CIDAS/clipseg-rd64-refined", "input_size": 352})

The registry is this explicit table of names to classes, imported on first use: the
compact backend pulls in timm (about 2 s on top of torch on a 2-core host), and reading
a card or naming the backends needs neither. The backends import `model.segmenter`;
neither it nor `model.checkpoint`'s card code imports them back.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from model.errors import CheckpointError

if TYPE_CHECKING:
    from model.segmenter import Segmenter

BACKENDS: dict[str, str] = {  # name (a card's `backend`) -> "module:class"
    "compact": "model.backends.compact:CompactSegmenter",
    "clipseg": "model.backends.clipseg:ClipSegSegmenter",
}


def backend_class(backend: str) -> type[Segmenter]:
    """The class of `backend`, its module imported now."""
    if backend not in BACKENDS:
        raise CheckpointError(f"unknown backend {backend!r}; valid backends: {', '.join(sorted(BACKENDS))}")
    module, _, name = BACKENDS[backend].partition(":")
    return getattr(importlib.import_module(module), name)


def build(backend: str, settings: dict[str, Any] | None = None) -> Segmenter:
    """A new model of `backend` ("compact" or "clipseg") with pretrained parts loaded."""
    return backend_class(backend)(settings or {})
