"""The inference runtime behind a loaded Segmenter on a CPU: its graph compiled by ONNX Runtime, or eager PyTorch.

    model, _ = load_checkpoint(folder, "cpu", runtime="auto", cache=Path("~/.cache/qa-daemon/compiled"))
    model.runtime          # "onnx", or "eager" where compiling was not possible (the reason is logged)

Why ONNX Runtime (measured on 2 cores of an AMD EPYC, both prompts at input 448, compact-v2;
bench/README.md "Inference runtime"): 30 ms against 68 ms eager, where torch.compile (inductor,
freezing) gave 54 ms after a 35 s compile. Its graph optimiser does what the eager path leaves on
the table: batch norm folded into the convolutions, TF "same" padding constant-folded at the fixed
input side, blocked (NCHWc) memory layouts in place of channels_last.

The graph is `Segmenter.prompt_logits` exported at one input side, with the batch and the number of
prompts left free. Exporting takes seconds, so each export is cached on disk under a hash of the
weights, settings, side and the exporter's versions: a restart, or another process on the same
checkpoint, loads it in well under a second. A changed checkpoint has another hash and is exported
again. The graph holds the eval weights of the moment; `Segmenter.train()` drops it.

CUDA runs stay on PyTorch (half precision), where this buys nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from model.errors import CheckpointError
from model.segmenter import Segmenter

log = logging.getLogger(__name__)

Runtime = Literal["auto", "onnx", "eager"]
GRAPH_FORMAT = 1  # bump when the exported graph changes for the same weights: old cache entries are not reused


class PromptLogits(nn.Module):
    """The exported function: pixels (B, 3, S, S) in [0, 255] and prompt embeddings (P, D) -> logits (B, P, h, w)."""

    def __init__(self, model: Segmenter):
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.model.prompt_logits(pixels, emb)


def graph_key(model: Segmenter, side: int) -> str:
    """What an exported graph depends on: weights, backend settings, input side, torch and ONNX versions."""
    import onnxruntime

    h = hashlib.sha256(json.dumps({"backend": model.backend, "settings": model.settings, "side": side,
                                   "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                                   "format": GRAPH_FORMAT}, sort_keys=True, default=str).encode())
    for name, value in sorted(model.trainable_state().items()):
        h.update(name.encode())
        h.update(value.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:32]


def export_graph(model: Segmenter, side: int, path: Path) -> None:
    """Export `model.prompt_logits` at input `side` as ONNX to `path`, atomically (a concurrent reader never
    sees half a file)."""
    from torch.export import Dim

    dim = model.embed_prompts(["segment crack"]).shape[1]
    # two of each: the exporter would fix a free dimension met at size 1
    example = (torch.rand(2, 3, side, side) * 255, torch.randn(2, dim))
    free = {"pixels": {0: Dim("batch", min=1, max=4096)}, "emb": {0: Dim("prompts", min=1, max=256)}}
    for chatty in ("onnx_ir", "onnxscript"):  # per-pass INFO lines would fill the daemon's log
        logging.getLogger(chatty).setLevel(logging.WARNING)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with torch.no_grad():
            program = torch.onnx.export(PromptLogits(model).eval(), example, dynamo=True, verbose=False,
                                        input_names=["pixels", "emb"], output_names=["logits"], dynamic_shapes=free)
        program.save(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


class OnnxGraph:
    """`Segmenter.compiled` on ONNX Runtime: one session per input side, each exported once and cached."""

    def __init__(self, model: Segmenter, cache: Path, threads: int):
        import onnxruntime as ort

        self.ort, self.model, self.cache, self.threads = ort, model, cache, threads
        self.sessions: dict[int, object] = {}

    def session(self, side: int):
        if side not in self.sessions:
            path = self.cache / f"{self.model.backend}-{side}-{graph_key(self.model, side)}.onnx"
            if not path.is_file():
                log.info("compiling the model for ONNX Runtime at input %d (once per checkpoint; cached in %s)",
                         side, self.cache)
                export_graph(self.model, side, path)
            options = self.ort.SessionOptions()
            options.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.intra_op_num_threads, options.inter_op_num_threads = self.threads, 1
            # idle threads sleep instead of spinning: decoding and mask writing need the same cores
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.log_severity_level = 3  # its warnings about unused initialisers are not the user's business
            self.sessions[side] = self.ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return self.sessions[side]

    def __call__(self, pixels: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if pixels.shape[-1] != pixels.shape[-2]:
            raise ValueError(f"the compiled graph takes square inputs, got {tuple(pixels.shape[-2:])}")
        session = self.session(int(pixels.shape[-1]))
        out = session.run(None, {"pixels": pixels.float().numpy(), "emb": emb.float().cpu().numpy()})[0]
        return torch.from_numpy(out)


def use_runtime(model: Segmenter, runtime: Runtime, cache: Path | None, sides: list[int] | None = None) -> str:
    """Run `model` (on a CPU) with `runtime` and return the one in use. "auto" compiles where it can and
    falls back to eager PyTorch, logging why; "onnx" raises CheckpointError where it cannot. `sides`: input
    sides compiled now, so that failures show here and the first photo does not pay the compile."""
    model.compiled = None
    if runtime == "eager" or model.device.type != "cpu":
        return model.runtime
    if cache is None:
        raise ValueError("a compiled runtime needs a cache folder")
    try:
        graph = OnnxGraph(model, cache.expanduser(), torch.get_num_threads())
        for side in sides or []:
            graph.session(side)
    except Exception as exc:  # noqa: BLE001 - exporters raise many kinds; each one means "not compiled"
        if runtime == "onnx":
            raise CheckpointError(f"model.runtime onnx: the {model.backend} model cannot be compiled for ONNX "
                                  f"Runtime ({type(exc).__name__}: {exc}); set model.runtime to auto or eager") \
                from None
        log.warning("ONNX Runtime not used (%s: %s); running eager PyTorch", type(exc).__name__, exc)
        return model.runtime
    model.compiled = graph
    return model.runtime
