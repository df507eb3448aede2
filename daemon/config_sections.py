"""The sections of `config.yaml`: what each may hold, checked on its own when the file is read.

`daemon.config` assembles them into `Config` and loads the file; import them from there. The
`description` of each field is the user's documentation: `docs/configuration.md` is rendered from
it (`uv run python -m daemon.config_reference`), so keep it short and true to what the code does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# the model shipped inside the package, so `qa-daemon run --watch DIR` works without a config file
from model import SHIPPED_CHECKPOINT

Task = Literal["crack", "taping"]
TASKS: tuple[Task, ...] = ("crack", "taping")
LAYOUT_FIELDS = ("site", "location", "_")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetConfig(Section):
    """A labeled dataset that `prep`, `train` and `retrain` read: one entry per export."""

    name: str = Field(description="Short unique name; masks are written under it.")
    root: Path = Field(description="Export root holding train/ valid/ test/ (or one flat folder).")
    task: Task = Field(description="What the classes below are: crack or taping.")
    classes: list[str] = Field(min_length=1, description="Class names in the labels that mean this task.")
    format: Literal["auto", "voc", "yolo", "coco"] = Field(
        "auto", description="Label format of the export; auto tells it from the files.")


class TaskPrompts(Section):
    canonical: str = Field(min_length=1, description="The prompt results are stored under.")
    synonyms: list[str] = Field(default_factory=list, description="Other phrasings, trained on and accepted by "
                                "--prompt.")

    @property
    def all(self) -> list[str]:
        return [self.canonical, *[s for s in self.synonyms if s != self.canonical]]


class PromptsConfig(Section):
    """The prompts of each task. A task written here replaces its defaults as a whole, so give its canonical
    prompt too. No prompt may belong to both tasks."""

    crack: TaskPrompts = Field(
        TaskPrompts(canonical="segment crack", synonyms=["segment wall crack", "segment cracks"]),
        description="Crack prompts.")
    taping: TaskPrompts = Field(
        TaskPrompts(canonical="segment taping area",
                    synonyms=["segment joint/tape", "segment drywall seam", "segment taping"]),
        description="Taping prompts.")

    def for_task(self, task: Task) -> TaskPrompts:
        return getattr(self, task)

    @property
    def canonical(self) -> dict[str, str]:
        return {t: self.for_task(t).canonical for t in TASKS}

    @property
    def by_task(self) -> dict[str, list[str]]:
        """Every prompt of each task, canonical first."""
        return {t: self.for_task(t).all for t in TASKS}


class PrepConfig(Section):
    """How `prep` and `retrain` prepare the labeled datasets (masks and a leakage-free manifest.csv)."""

    out: Path = Field(Path("data/prepared"), description="Where prepared masks and manifest.csv go.")
    seed: int = Field(0, description="Seed of the stem re-split (same seed, same split).")
    valid_fraction: float = Field(0.2, gt=0, lt=1, description="Share of stems held out when re-splitting.")
    max_shared_fraction: float = Field(
        0.1, ge=0, le=1, description="Re-split a source when more of its valid stems than this are in train.")


class ModelConfig(Section):
    """The segmentation model: which checkpoint runs, where, and what `train` builds."""

    checkpoint: Path = Field(SHIPPED_CHECKPOINT, description="Checkpoint folder of predict and eval; the daemon "
                             "runs it when it is new to the store, otherwise the version promoted last.")
    backend: Literal["compact", "clipseg"] = Field("compact", description="Backend `train` builds.")
    base: str = Field("CIDAS/clipseg-rd64-refined", description="CLIPSeg base: hub id or local folder.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto uses the GPU when present.")
    input_size: int = Field(448, ge=32, le=4096, description="Input side (pixels) of a new compact model that "
                            "`train` builds. A checkpoint brings its own per task; predict, eval and the daemon "
                            "run at that one (448 for compact-v2).")
    runtime: Literal["auto", "int8", "onnx", "eager"] = Field(
        "auto", description="How predict, eval and the daemon run the model on a CPU: onnx compiles it for ONNX "
        "Runtime (about 2x eager here); int8 runs the INT8 graphs a checkpoint ships (`qa-daemon model quantize`, "
        "about 1.8x onnx); auto takes int8 where the checkpoint has them, else onnx, else eager PyTorch; eager "
        "never compiles. A GPU always runs PyTorch.")
    compiled_cache: Path = Field(Path("~/.cache/qa-daemon/compiled"), description="Where compiled models are "
                                 "kept, one file per checkpoint and input side, so a restart does not compile again.")
    batch_size: int = Field(8, ge=1, le=1024, description="Photos the daemon claims and decodes together; on a "
                            "GPU also the model's batch (capped by free memory), on a CPU the model takes one photo "
                            "at a time. Also the batch of predict, eval, model export and retrain's scoring.")


class AppearanceConfig(Section):
    """Colour and appearance changes of training crops; each probability 0 switches that change off."""

    jitter: float = Field(0.3, ge=0, lt=1, description="Brightness, contrast and saturation change by up to this "
                          "share.")
    grey: float = Field(0.0, ge=0, le=1, description="Probability of a grey-scale crop.")
    invert: float = Field(0.0, ge=0, le=1, description="Probability of inverted intensities (pale cracks on dark).")
    blur: float = Field(0.0, ge=0, le=1, description="Probability of a Gaussian blur (sigma 0.5-1.5 px).")
    jpeg: float = Field(0.0, ge=0, le=1, description="Probability of re-encoding at JPEG quality 30-90.")
    strong_contrast: float = Field(0.0, ge=0, le=1, description="Probability of a strong contrast/brightness change.")


class TrainConfig(Section):
    """The training recipe of `train` (`--set KEY=VALUE` overrides a key for one run). The defaults are the
    recipe of the shipped model (model/REPORT.md)."""

    out: Path = Field(Path("runs/train"), description="Where checkpoints of a training run go.")
    epochs: int = Field(10, ge=1, description="Epochs of a run.")
    steps_per_epoch: int | None = Field(450, ge=1, description="Steps per epoch; null: one pass over train.")
    batch_size: int = Field(8, ge=1, description="Images per step.")
    lr: float = Field(6e-4, gt=0, description="Peak learning rate (AdamW).")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay.")
    warmup_steps: int = Field(250, ge=0, description="Linear warm-up steps before the cosine decay.")
    min_lr_ratio: float = Field(0.02, ge=0, le=1, description="The cosine ends at lr times this.")
    crop_size: int = Field(320, ge=32, description="Training crop side; inference runs on the whole photo.")
    scale: dict[Task, tuple[float, float]] = Field(
        default_factory=lambda: {"crack": (0.55, 1.0), "taping": (0.45, 0.8)},
        description="Per task, the range of model pixels per photo pixel a crop is drawn at "
                    "(a 640 px photo at input 448 is 0.7).")
    centre_prob: dict[Task, float] = Field(
        default_factory=lambda: {"crack": 0.6}, description="Per task, probability a crop is centred on an object.")
    appearance: AppearanceConfig = Field(AppearanceConfig(), description="Colour and appearance changes of crops.")
    negative_prob: float = Field(0.2, ge=0, le=1, description="Share of samples shown the other task's prompt "
                                 "with an empty mask.")
    lovasz_from: float = Field(0.7, ge=0, le=1, description="Share of the steps after which the loss is BCE + "
                               "Lovasz hinge (1: never).")
    aux_weight: float = Field(0.4, ge=0, description="Weight of each deep-supervision head's loss.")
    ema_decay: float = Field(0.998, ge=0, lt=1, description="EMA of the weights, validated and kept (0: off).")
    cpu_bf16: Literal["auto", "on", "off"] = Field(
        "auto", description="bf16 autocast on a CPU; auto: only where native and measured faster at start.")
    threads: int | None = Field(None, ge=1, description="Torch threads on a CPU; null: every core.")
    architecture: dict[str, Any] = Field(
        default_factory=lambda: {"output_stride": 2, "deep_supervision": True},
        description="Settings of a new compact model: encoder, output_stride (2 or 4), fine_width, "
                    "deep_supervision, decoder_widths.")
    init: Path | None = Field(None, description="Start from this checkpoint's fitting weights; null: pretrained.")
    seed: int = Field(0, description="Seed of the run.")
    num_workers: int = Field(0, ge=0, description="Data-loading processes; 0 suits 2 cores.")
    eval_every: int = Field(1, ge=1, description="Validate every N epochs.")

    @field_validator("scale")
    @classmethod
    def _check_scale(cls, v: dict) -> dict:
        for task, (lo, hi) in v.items():
            if not 0 < lo <= hi:
                raise ValueError(f"{task}: expected 0 < low <= high, got [{lo}, {hi}]")
        return v


class WatchConfig(Section):
    """Which folders the daemon watches, and when it takes, retries or gives up on a photo."""

    roots: list[Path] = Field(default_factory=lambda: [Path("incoming")], description="Folders watched.")
    polling: bool = Field(False, description="Poll instead of OS events (network shares, containers).")
    poll_interval_s: float = Field(5.0, gt=0, description="Polling period.")
    settle_s: float = Field(2.0, ge=0, description="Size and mtime must hold still this long; with OS events, "
                            "not for a file its writer closed or that was renamed into place, while unchanged.")
    rescan_interval_s: float = Field(300.0, gt=0, description="Full rescan period (missed events).")
    layout: str = Field("{site}/{location}", description="Folder levels under a root that name site/location; "
                        "{_} skips a level.")
    max_attempts: int = Field(3, ge=1, description="Failures before a photo is quarantined.")
    retry_backoff_s: float = Field(30.0, ge=0, description="Wait before the first retry; doubles each time.")
    incomplete_after_s: float = Field(
        600.0, ge=0, description="A file that does not decode is quarantined only after unchanged this long.")
    heartbeat_s: float = Field(60.0, gt=0, description="Period of the heartbeat: a log line, and a row in the "
                               "store's daemons table.")

    @field_validator("layout")
    @classmethod
    def _check_layout(cls, v: str) -> str:
        parts = [p for p in v.strip("/").split("/") if p]
        bad = [p for p in parts if not (p.startswith("{") and p.endswith("}") and p[1:-1] in LAYOUT_FIELDS)]
        if bad:
            raise ValueError(f"each folder level must be {{site}}, {{location}} or {{_}} (ignored); got {bad[0]!r}")
        return "/".join(parts)

    @property
    def levels(self) -> list[str]:
        """The field each folder level under a root names: site, location or _ (ignored)."""
        return [p[1:-1] for p in self.layout.split("/") if p]


class StoreConfig(Section):
    """Where results, the queue and the model versions are kept (docs/store.md)."""

    url: str = Field("sqlite:///qa-daemon.sqlite3", description="SQLAlchemy URL of the results store; a "
                     "relative SQLite path is relative to the config file.")
    synchronous: Literal["off", "normal", "full", "extra"] = Field(
        "full", description="SQLite's synchronous level: full makes each commit survive a power cut; normal "
        "may lose the last commits (never corrupts). PostgreSQL: the server's own settings decide.")
    allow_network_fs: bool = Field(False, description="Let a SQLite store sit on a network filesystem (NFS, "
                                   "SMB, sshfs), where its locking is unsafe; use a local path or PostgreSQL.")


class OutputsConfig(Section):
    """Where the daemon writes masks and overlays, and where it moves photos."""

    dir: Path = Field(Path("outputs"), description="Masks and overlays, by site and date.")
    overlay: bool = Field(True, description="Write an overlay JPEG per photo (cracks red, taping blue).")
    overlay_max_side: int = Field(1600, ge=64, description="Longest side of overlay JPEGs (masks keep full size).")
    archive: Path | None = Field(None, description="Move processed photos here; null leaves them in place.")
    quarantine: Path = Field(Path("quarantine"), description="Photos that failed max_attempts times.")
    min_free_mb: float = Field(100.0, ge=0, description="Intake and processing pause while the outputs disk has "
                               "less free space; they resume by themselves.")
    fsync: bool = Field(True, description="Flush masks and overlays (and their folder) to disk before their "
                        "photo is recorded done, so a power cut cannot leave a result pointing at a lost file.")


class ScheduleConfig(Section):
    """The daemon's scheduled work: reports, the retrain check and the clean-up of old outputs."""

    timezone: str = Field("local", description="IANA zone the times below are read in, or local.")
    daily_report: str | None = Field("18:00", description="Time of the daily report, HH:MM; null disables.")
    weekly_summary: str | None = Field("mon 08:00", description="'dow HH:MM' of the weekly summary (the previous "
                                       "Monday to Sunday); null disables.")
    retrain_check_hours: float | None = Field(24.0, gt=0, description="Period of the retrain check (also run at "
                                              "start); null disables.")
    retention_days: int | None = Field(90, ge=1, description="Delete overlays and masks older than this (rows stay); "
                                       "null keeps them.")
    retention_max_gb: float | None = Field(None, gt=0, description="Disk budget for outputs: the oldest days are "
                                           "deleted beyond it; null: none.")
    reports_dir: Path = Field(Path("outputs/reports"), description="Where HTML reports are written.")
    scrub: str | None = Field("sun 04:00", description="'dow HH:MM' of the weekly scrub (every done photo's masks "
                              "and overlay checked); null disables.")
    scrub_startup_days: int = Field(2, ge=0, description="Capture days the scrub at start-up checks (0: none).")
    retention_at: str = Field("03:30", description="HH:MM of the daily clean-up of old outputs.")

    @field_validator("timezone")
    @classmethod
    def _check_zone(cls, v: str) -> str:
        if v != "local":
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
            try:
                ZoneInfo(v)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {v!r}; use an IANA name such as Europe/Berlin, or local") from None
        return v

    @field_validator("daily_report", "retention_at")
    @classmethod
    def _check_time(cls, v: str | None) -> str | None:
        if v is not None:
            clock(v)
        return v

    @field_validator("weekly_summary", "scrub")
    @classmethod
    def _check_weekly(cls, v: str | None) -> str | None:
        if v is not None:
            day, _, at = v.partition(" ")
            if day.lower() not in WEEKDAYS:
                raise ValueError(f"expected 'dow HH:MM' with dow one of {', '.join(WEEKDAYS)}; got {v!r}")
            clock(at)
        return v

    def zone(self):
        """The tzinfo cron times are read in."""
        if self.timezone == "local":
            from tzlocal import get_localzone
            return get_localzone()
        from zoneinfo import ZoneInfo
        return ZoneInfo(self.timezone)


def clock(text: str) -> tuple[int, int, int]:
    """(hour, minute, second) of 'HH:MM' or 'HH:MM:SS'."""
    try:
        parts = [int(p) for p in text.split(":")]
        if len(parts) not in (2, 3) or not (0 <= parts[0] < 24 and 0 <= parts[1] < 60 and 0 <= parts[-1] < 60):
            raise ValueError
    except ValueError:
        raise ValueError(f"expected a time of day HH:MM (or HH:MM:SS); got {text!r}") from None
    return parts[0], parts[1], parts[2] if len(parts) == 3 else 0


class RetrainConfig(Section):
    """Retraining on newly labeled photos, and the gate a retrained model must pass to be promoted."""

    inbox: Path = Field(Path("data/inbox"), description="Drop VOC exports of newly labeled photos here.")
    min_new_images: int = Field(50, ge=1, description="New labeled images that make the retrain check record a "
                                "retrain request.")
    auto: bool = Field(False, description="Start `qa-daemon retrain` by itself when enough arrived.")
    max_regression: float = Field(0.02, ge=0, le=1, description="Largest gate mIoU drop per task a candidate may "
                                  "show and still be promoted.")
    steps: int = Field(400, ge=1, description="Fine-tuning steps of a retrain.")
    lr: float = Field(1e-4, gt=0, description="Learning rate of a retrain (lower than from scratch).")
    max_val_images: int | None = Field(None, ge=1, description="Validate and score on at most this many images per "
                                       "task (in the gate: per half, calibration and gate); null: all.")
    models_dir: Path = Field(Path("models"), description="Where retrained model versions are kept.")


class SiteConfig(Section):
    mm_per_pixel: float | None = Field(None, gt=0, description="Scale of this site's photos; enables crack length "
                                       "and width in mm, and severity.")


class SeverityConfig(Section):
    """Crack width classes: hairline < hairline_mm <= fine <= fine_mm < medium <= medium_mm < wide."""

    hairline_mm: float = Field(0.1, gt=0, description="Cracks narrower than this are hairline.")
    fine_mm: float = Field(1.0, gt=0, description="Up to this width: fine.")
    medium_mm: float = Field(5.0, gt=0, description="Up to this width: medium; wider: wide.")

    @model_validator(mode="after")
    def _increasing(self) -> SeverityConfig:
        if not self.hairline_mm < self.fine_mm <= self.medium_mm:
            raise ValueError("thresholds must increase: hairline_mm < fine_mm <= medium_mm")
        return self

    def classify(self, width_mm: float) -> str:
        if width_mm < self.hairline_mm:
            return "hairline"
        if width_mm <= self.fine_mm:
            return "fine"
        return "medium" if width_mm <= self.medium_mm else "wide"


class MeasureConfig(Section):
    """How masks are measured (docs/daemon.md, "Measurements")."""

    severity: SeverityConfig = Field(SeverityConfig(), description="Crack width classes (needs a site scale).")
    min_component_px: int = Field(
        16, ge=1, description="Mask pieces smaller than this (source pixels) are not counted as components.")
