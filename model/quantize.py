"""Static INT8 quantization of a checkpoint's compiled graph, kept only where validation shows it costs nothing.

    q = quantize(Path("model/weights/compact-v2"), Path("data/prepared"))
    q.kept      # True: `int8-448.onnx` written beside the weights, its figures in the card's `int8`

The fp32 graph of `model/runtime.py` is quantized by ONNX Runtime (static, QDQ: int8 weights per
output channel, uint8 activations), calibrated on `calibration` training images at each input side
the checkpoint runs at, under its tasks' canonical prompts. Then the whole validation split is scored
twice, with the fp32 graph and with the int8 one, as the masks users get (each task's threshold and
clean-up), and the int8 graphs are kept only if no task's mIoU drops by `max_drop` or more. Calibration
needs labeled data, which a daemon's machine may not have: so it is done once, here, and the graphs
ship with the checkpoint. `model.runtime: auto` then runs them (model/runtime.py).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from model.checkpoint import CARD, load_checkpoint
from model.data import read_mask, read_rgb
from model.errors import DataError
from model.evaluate import MASKS, score_models
from model.files import write_atomic
from model.prep import read_manifest
from model.runtime import INT8, OnnxGraph, export_graph, int8_path

MAX_DROP = 0.005  # validation mIoU an int8 graph may cost a task (issue #15)


@dataclass
class Quantized:
    kept: bool
    fp32: dict[str, float]  # validation mIoU per task, fp32 graph
    int8: dict[str, float]  # the same with the int8 graph
    calibration_images: int
    max_drop: float
    paths: list[Path] = field(default_factory=list)  # the int8 graphs written (kept only)

    @property
    def drops(self) -> dict[str, float]:
        return {t: round(self.fp32[t] - self.int8[t], 4) for t in self.fp32}


def quantize(folder: Path, prepared: Path, calibration: int = 64, max_drop: float = MAX_DROP, batch_size: int = 4,
             seed: int = 0, progress: bool = False) -> Quantized:
    """Quantize the checkpoint in `folder`, score it against fp32 on `prepared`'s validation split, and keep
    the int8 graphs (beside the weights, with the figures in the card) only if every task's mIoU drop is
    below `max_drop`; otherwise remove any earlier ones."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32_model, card = load_checkpoint(folder, "cpu")
    prompts = {t: ps[0] for t, ps in card.prompts.items() if ps}
    rows = read_manifest(prepared)
    train = [r for r in rows if r.split == "train" and r.task in prompts]
    valid = [r for r in rows if r.split == "valid" and r.task in prompts]
    if not train or not valid:
        raise DataError(f"{prepared}: quantizing needs train images to calibrate and valid ones to score; found "
                        f"{len(train)} and {len(valid)}; run `qa-daemon prep`")
    picked = [train[i] for i in np.random.default_rng(seed).permutation(len(train))[:calibration]]
    emb = fp32_model.embed_prompts(list(prompts.values())).numpy()
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for side in fp32_model.input_sides:
            export_graph(fp32_model, side, work / f"fp32-{side}.onnx")
            quant_pre_process(str(work / f"fp32-{side}.onnx"), str(work / f"prepped-{side}.onnx"),
                              skip_symbolic_shape=True)
            feeds = ({"pixels": fp32_model.preprocess([read_rgb(Path(r.image))], side).numpy(), "emb": emb}
                     for r in picked)

            class Calibration(CalibrationDataReader):
                def get_next(self, feeds=feeds):
                    return next(feeds, None)

            quantize_static(str(work / f"prepped-{side}.onnx"), str(int8_path(work, side)), Calibration(),
                            quant_format=QuantFormat.QDQ, per_channel=True, weight_type=QuantType.QInt8,
                            activation_type=QuantType.QUInt8)
        int8_model, _ = load_checkpoint(folder, "cpu")
        fp32_model.compiled = OnnxGraph(work, "fp32", threads)
        int8_model.compiled = OnnxGraph(work, INT8, threads)
        scores: dict[str, dict[str, float]] = {"fp32": {}, "int8": {}}
        for task, prompt in prompts.items():
            task_rows = [r for r in valid if r.task == task]
            samples = ((read_rgb(Path(r.image)), read_mask(Path(r.mask))) for r in task_rows)
            run = score_models({"fp32": fp32_model, "int8": int8_model}, samples, [prompt], batch_size, (MASKS,),
                               f"scoring {task}, fp32 and int8", len(task_rows), progress)
            for name in scores:
                scores[name][task] = round(run.accs[name][prompt][MASKS].scores(0.5)["miou"], 4)
        result = Quantized(False, scores["fp32"], scores["int8"], len(picked), max_drop)
        result.kept = all(d < max_drop for d in result.drops.values())
        for old in folder.glob(f"{INT8}-*.onnx"):  # graphs of an earlier quantization are stale either way
            old.unlink()
        if result.kept:
            for side in fp32_model.input_sides:
                write_atomic(int8_path(folder, side), int8_path(work, side).read_bytes())
                result.paths.append(int8_path(folder, side))
    # the card says what the int8 graphs were measured to cost; without kept graphs it says nothing
    raw = json.loads((folder / CARD).read_text())
    raw["int8"] = {k: v for k, v in asdict(result).items() if k not in ("kept", "paths")} if result.kept else {}
    write_atomic(folder / CARD, json.dumps(raw, indent=2, default=str) + "\n")
    return result
