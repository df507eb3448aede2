"""The model half of qa-daemon: datasets, the segmentation engine, training, evaluation and export."""

from pathlib import Path

# the default checkpoint, shipped in the package (model/REPORT.md); config.yaml's model.checkpoint
SHIPPED_CHECKPOINT = Path(__file__).resolve().parent / "weights" / "compact-v2"
