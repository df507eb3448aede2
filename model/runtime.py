"""The inference runtime behind a loaded Segmenter on a CPU: its graph compiled by ONNX Runtime, or eager PyTorch.

    model, _ = load_checkpoint(folder, "cpu", runtime="auto", cache=Path("~/.cache/qa-daemon/compiled"))
    model.runtime          # "onnx", or "eager" where compiling was not possible (the reason is logged)

Why ONNX Runtime (measured on 2 cores of an AMD EPYC, both prompts at input 448, compact-v2;
bench/README.md "Inference runtime"): 30 ms against 68 ms eager, where torch.compile (inductor,
freezing) gave 54 ms after a 35 s compile. Its graph optimiser does what the eager path leaves on
the table: batch norm folded into the convolutions, TF "same" padding constant-folded at the fixed
input side, blocked (NCHWc) memory layouts in place of channels_last.

The graph is `Segmenter.prompt_logits` exported at one input side, with the batch and the number of
prompts left free. Exporting takes seconds, so each export is cached on disk, named by a hash of the
checkpoint's weights file and settings, and the side; beside it, the embeddings of the checkpoint's
prompts. A restart, or another process on the same checkpoint, then runs it as a `CompiledModel`:
the graph and the embeddings alone, without building the PyTorch model (no timm, no transformers).
A changed checkpoint has another hash and is exported again. A Segmenter's graph holds its eval
weights of the moment; `Segmenter.train()` drops it.

A checkpoint may also ship INT8 graphs beside its weights (`model/quantize.py`, kept only where
validation mIoU holds): "auto" runs those in preference, 1.8x the fp32 graph here.

CUDA runs stay on PyTorch (half precision), where this buys nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from model.checkpoint import Card, apply_card, read_card, weights_sha256
from model.errors import CheckpointError
from model.files import write_atomic
from model.segmenter import Predictor, Segmenter

log = logging.getLogger(__name__)

Runtime = Literal["auto", "int8", "onnx", "eager"]
GRAPH_FORMAT = 1  # bump when the exported graph changes for the same weights: old cache entries are not reused
INT8 = "int8"  # name of a checkpoint's quantized graphs, `int8-{side}.onnx` beside its weights (model/quantize.py)


def int8_path(folder: Path, side: int) -> Path:
    return folder / f"{INT8}-{side}.onnx"


class PromptLogits(nn.Module):
    """The exported function: pixels (B, 3, S, S) in [0, 255] and prompt embeddings (P, D) -> logits (B, P, h, w)."""

    def __init__(self, model: Segmenter):
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.model.prompt_logits(pixels, emb)


def compiled_key(card: Card, weights_sha256: str) -> str:
    """What a checkpoint's compiled graphs depend on: its weights file and settings. Read without torch, so
    a restart finds its graph before building anything."""
    identity = {"backend": card.backend, "settings": card.settings, "weights": weights_sha256, "format": GRAPH_FORMAT}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()
    return f"{card.backend}-{digest[:32]}"


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
    """Compiled logits on ONNX Runtime: one session per input side, each loaded from `cache/{key}-{side}.onnx`,
    or first exported there by `export(side, path)`."""

    def __init__(self, cache: Path, key: str, threads: int, export: Callable[[int, Path], None] | None = None):
        import onnxruntime as ort

        self.ort, self.cache, self.key, self.threads, self.export = ort, cache, key, threads, export
        self.name = "onnx-int8" if key == INT8 else "onnx"  # the runtime it is, as the daemon's log names it
        self.sessions: dict[int, object] = {}

    def path(self, side: int) -> Path:
        return self.cache / f"{self.key}-{side}.onnx"

    def session(self, side: int):
        if side not in self.sessions:
            path = self.path(side)
            if not path.is_file():
                if self.export is None:
                    raise FileNotFoundError(f"{path}: no compiled graph for input {side}")
                log.info("compiling the model for ONNX Runtime at input %d (once per checkpoint; cached in %s)",
                         side, self.cache)
                self.export(side, path)
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


class CompiledModel(Predictor):
    """A checkpoint run from its compiled graphs and prompt embeddings in the cache alone: no PyTorch model
    is built, so neither timm nor transformers is imported; a daemon restart is ready in about a second."""

    device = torch.device("cpu")

    def __init__(self, card: Card, graph: OnnxGraph, embeddings: dict[str, np.ndarray]):
        self.backend, self.settings, self.graph = card.backend, card.settings, graph
        self.input_size = int(card.settings["input_size"])
        apply_card(self, card)
        self.embeddings = {p: torch.from_numpy(np.asarray(e, np.float32)) for p, e in embeddings.items()}

    @property
    def runtime(self) -> str:
        return self.graph.name

    def predict_logits(self, pixels: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        return self.graph(pixels, torch.stack([self.embeddings[p] for p in prompts]))


def embeddings_path(cache: Path, key: str) -> Path:
    return cache / f"{key}.prompts.json"


def shipped_int8(folder: Path, card: Card, sides: list[int], threads: int) -> OnnxGraph | None:
    """The checkpoint's own INT8 graphs (`qa-daemon model quantize`), when its card vouches for them and there
    is one for every input side."""
    if not card.int8 or not all(int8_path(folder, side).is_file() for side in sides):
        return None
    return OnnxGraph(folder, INT8, threads)


def load_compiled(folder: Path, cache: Path, prompts: list[str], threads: int,
                  runtime: Runtime = "auto") -> CompiledModel | None:
    """The checkpoint in `folder` as a CompiledModel, when the cache holds the embeddings of `prompts` and
    there is a graph for every input side (its INT8 graphs for "auto" and "int8", else the fp32 ones in the
    cache); otherwise None (load it with `load_checkpoint`, which fills the cache)."""
    card = read_card(folder)
    key = compiled_key(card, weights_sha256(folder))
    cache = cache.expanduser()
    try:
        embeddings = json.loads(embeddings_path(cache, key).read_text())
    except (OSError, ValueError):
        return None
    if any(p not in embeddings for p in prompts):
        return None
    model = CompiledModel(card, OnnxGraph(cache, key, threads), embeddings)
    int8 = shipped_int8(folder, card, model.input_sides, threads) if runtime in ("auto", INT8) else None
    if int8 is None and runtime == INT8:
        return None  # load_checkpoint says why
    model.graph = int8 or model.graph
    try:
        for side in model.input_sides:
            model.graph.session(side)
    except Exception as exc:  # noqa: BLE001 - a damaged cache entry: load the checkpoint instead, which remakes it
        log.warning("compiled model in %s not usable (%s); loading the checkpoint", cache, exc)
        return None
    return model


def use_runtime(model: Segmenter, runtime: Runtime, cache: Path | None, key: str, folder: Path,
                card: Card) -> str:
    """Run `model`, loaded from the checkpoint `folder` with `card`, with `runtime` on a CPU and return the
    runtime in use. "auto": the checkpoint's INT8 graphs when it ships them, else its graph compiled here,
    else eager PyTorch (logging why); "int8" and "onnx" raise CheckpointError where they cannot. Every input
    side is compiled now, so that failures show here and the first photo does not pay the compile; the
    embeddings of the model's prompts go to the cache too, for `load_compiled`. `key`: `compiled_key`."""
    model.compiled = None
    if runtime == "eager" or model.device.type != "cpu":
        return model.runtime
    if cache is None:
        raise ValueError("a compiled runtime needs a cache folder")
    cache = cache.expanduser()
    int8 = shipped_int8(folder, card, model.input_sides, torch.get_num_threads()) if runtime in ("auto", INT8) \
        else None
    if int8 is None and runtime == INT8:
        raise CheckpointError(f"model.runtime int8: {folder} has no INT8 graphs; make them with `qa-daemon model "
                              f"quantize {folder}`, or set model.runtime to auto")
    try:
        graph = int8 or OnnxGraph(cache, key, torch.get_num_threads(), partial(export_graph, model))
        for side in model.input_sides:
            graph.session(side)
        prompts = [p for ps in model.prompts.values() for p in ps]
        if prompts:
            emb = model.embed_prompts(prompts).cpu().numpy()
            cache.mkdir(parents=True, exist_ok=True)
            write_atomic(embeddings_path(cache, key),
                         json.dumps({p: e.tolist() for p, e in zip(prompts, emb, strict=True)}).encode())
    except Exception as exc:  # noqa: BLE001 - exporters raise many kinds; each one means "not compiled"
        if runtime != "auto":
            raise CheckpointError(f"model.runtime {runtime}: the {model.backend} model cannot run on ONNX "
                                  f"Runtime ({type(exc).__name__}: {exc}); set model.runtime to auto or eager") \
                from None
        log.warning("ONNX Runtime not used (%s: %s); running eager PyTorch", type(exc).__name__, exc)
        return model.runtime
    model.compiled = graph
    return model.runtime
