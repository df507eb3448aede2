"""The one typed config, validated once at start-up from `config.yaml` and passed explicitly.

    config = load_config(Path("config.yaml"))

Unknown keys, wrong types and out-of-range values are refused with one message
that names the file and the key. Relative paths are resolved against the
config file's folder, so the daemon behaves the same from any working directory.
Which paths must exist depends on the command, so commands check the ones they
use with `Config.require(...)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# the model shipped inside the package, so `qa-daemon run --watch DIR` works without a config file
from model import SHIPPED_CHECKPOINT
from model.errors import QAError

Task = Literal["crack", "taping"]
TASKS: tuple[Task, ...] = ("crack", "taping")
DEFAULT_CONFIG = Path("config.yaml")
STORE_ENV = "QA_DAEMON_STORE"  # --store's variable: keeps a URL with a password out of the process list

LAYOUT_FIELDS = ("site", "location", "_")


class ConfigError(QAError):
    """The config file is missing, malformed, or names something that does not exist."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetConfig(Section):
    name: str = Field(description="Short unique name; masks are written under it.")
    root: Path = Field(description="Export root holding train/ valid/ test/ (or one flat folder).")
    task: Task = Field(description="What the classes below are: crack or taping.")
    classes: list[str] = Field(min_length=1, description="Class names in the labels that mean this task.")
    format: Literal["auto", "voc", "yolo", "coco"] = "auto"


class TaskPrompts(Section):
    canonical: str = Field(min_length=1, description="The prompt results are stored under.")
    synonyms: list[str] = Field(default_factory=list, description="Other phrasings trained and accepted.")

    @property
    def all(self) -> list[str]:
        return [self.canonical, *[s for s in self.synonyms if s != self.canonical]]


class PromptsConfig(Section):
    crack: TaskPrompts = TaskPrompts(canonical="segment crack", synonyms=["segment wall crack"])
    taping: TaskPrompts = TaskPrompts(
        canonical="segment taping area", synonyms=["segment joint/tape", "segment drywall seam"])

    def for_task(self, task: Task) -> TaskPrompts:
        return getattr(self, task)

    @property
    def canonical(self) -> dict[str, str]:
        return {t: self.for_task(t).canonical for t in TASKS}


class PrepConfig(Section):
    out: Path = Field(Path("data/prepared"), description="Where prepared masks and manifest.csv go.")
    seed: int = Field(0, description="Seed of the stem re-split (same seed, same split).")
    valid_fraction: float = Field(0.2, gt=0, lt=1, description="Share of stems held out when re-splitting.")
    max_shared_fraction: float = Field(
        0.1, ge=0, le=1, description="Re-split a source when more of its valid stems than this are in train.")


class ModelConfig(Section):
    checkpoint: Path = Field(SHIPPED_CHECKPOINT, description="Active checkpoint folder.")
    backend: Literal["compact", "clipseg"] = Field("compact", description="Backend `train` builds.")
    base: str = Field("CIDAS/clipseg-rd64-refined", description="CLIPSeg base: hub id or local folder.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto uses the GPU when present.")
    input_size: int = Field(448, ge=32, le=4096, description="Input side of a newly trained model (pixels).")
    batch_size: int = Field(8, ge=1, le=1024, description="Images per inference batch.")


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
    """The training recipe. The defaults are the recipe of the shipped model (model/REPORT.md)."""

    out: Path = Field(Path("runs/train"), description="Where checkpoints of a training run go.")
    epochs: int = Field(10, ge=1)
    steps_per_epoch: int | None = Field(450, ge=1, description="Steps per epoch; null: one pass over train.")
    batch_size: int = Field(8, ge=1)
    lr: float = Field(6e-4, gt=0, description="Peak learning rate (AdamW).")
    weight_decay: float = Field(1e-4, ge=0)
    warmup_steps: int = Field(250, ge=0, description="Linear warm-up steps before the cosine decay.")
    min_lr_ratio: float = Field(0.02, ge=0, le=1, description="The cosine ends at lr times this.")
    crop_size: int = Field(320, ge=32, description="Training crop side; inference runs on the whole photo.")
    scale: dict[Task, tuple[float, float]] = Field(
        default_factory=lambda: {"crack": (0.55, 1.0), "taping": (0.45, 0.8)},
        description="Per task, the range of model pixels per photo pixel a crop is drawn at "
                    "(a 640 px photo at input 448 is 0.7).")
    centre_prob: dict[Task, float] = Field(
        default_factory=lambda: {"crack": 0.6}, description="Per task, probability a crop is centred on an object.")
    appearance: AppearanceConfig = AppearanceConfig()
    negative_prob: float = Field(0.2, ge=0, le=1, description="Share of samples shown the other task's prompt.")
    lovasz_from: float = Field(0.7, ge=0, le=1, description="Share of the steps after which the loss is BCE + "
                               "Lovasz hinge (1: never).")
    aux_weight: float = Field(0.4, ge=0, description="Weight of each deep-supervision head's loss.")
    ema_decay: float = Field(0.998, ge=0, lt=1, description="EMA of the weights, validated and kept (0: off).")
    cpu_bf16: Literal["auto", "on", "off"] = Field(
        "auto", description="bf16 autocast on a CPU; auto: only where native and measured faster at start.")
    threads: int | None = Field(None, ge=1, description="Torch threads on a CPU; null: every core.")
    architecture: dict[str, Any] = Field(
        default_factory=lambda: {"output_stride": 2, "deep_supervision": True},
        description="Backend settings of a new model, e.g. output_stride: 2.")
    init: Path | None = Field(None, description="Start from this checkpoint's fitting weights; null: pretrained.")
    seed: int = 0
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
    roots: list[Path] = Field(default_factory=lambda: [Path("incoming")], description="Folders watched.")
    polling: bool = Field(False, description="Poll instead of OS events (network shares, containers).")
    poll_interval_s: float = Field(5.0, gt=0)
    settle_s: float = Field(2.0, ge=0, description="Size and mtime must hold still this long.")
    rescan_interval_s: float = Field(300.0, gt=0, description="Full rescan period (missed events).")
    layout: str = Field("{site}/{location}", description="Folder levels under a root that name site/location.")
    max_attempts: int = Field(3, ge=1, description="Failures before a photo is quarantined.")
    retry_backoff_s: float = Field(30.0, ge=0, description="Wait before the first retry; doubles each time.")
    incomplete_after_s: float = Field(
        600.0, ge=0, description="A file that does not decode is quarantined only after unchanged this long.")
    heartbeat_s: float = Field(60.0, gt=0, description="Period of the daemon's heartbeat log line.")

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
    url: str = Field("sqlite:///qa-daemon.sqlite3", description="SQLAlchemy URL of the results store.")


class OutputsConfig(Section):
    dir: Path = Field(Path("outputs"), description="Masks and overlays, by site and date.")
    overlay: bool = True
    overlay_max_side: int = Field(1600, ge=64, description="Longest side of overlay JPEGs (masks keep full size).")
    archive: Path | None = Field(None, description="Move processed photos here; null leaves them in place.")
    quarantine: Path = Field(Path("quarantine"), description="Photos that failed max_attempts times.")
    min_free_mb: float = Field(100.0, ge=0, description="Intake and processing pause while the outputs disk has "
                               "less free space; they resume by themselves.")


class ScheduleConfig(Section):
    timezone: str = Field("local", description="IANA zone for cron times, or local.")
    daily_report: str | None = Field("18:00", description="HH:MM; null disables.")
    weekly_summary: str | None = Field("mon 08:00", description="'dow HH:MM'; null disables.")
    retrain_check_hours: float | None = Field(24.0, gt=0)
    retention_days: int | None = Field(90, ge=1, description="Delete overlays and masks older than this.")
    retention_max_gb: float | None = Field(None, gt=0, description="Disk budget for outputs.")
    reports_dir: Path = Field(Path("reports/out"), description="Where HTML reports are written.")
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

    @field_validator("weekly_summary")
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


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


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
    inbox: Path = Field(Path("data/inbox"), description="Drop VOC exports of newly labeled photos here.")
    min_new_images: int = Field(50, ge=1)
    auto: bool = Field(False, description="Start `qa-daemon retrain` by itself when enough arrived.")
    max_regression: float = Field(0.02, ge=0, le=1, description="Largest mIoU drop a candidate may show.")
    steps: int = Field(400, ge=1, description="Fine-tuning steps of a retrain.")
    lr: float = Field(1e-4, gt=0, description="Learning rate of a retrain (lower than from scratch).")
    max_val_images: int | None = Field(None, ge=1, description="Score on at most this many images per task.")
    models_dir: Path = Field(Path("models"), description="Where retrained model versions are kept.")


class SiteConfig(Section):
    mm_per_pixel: float | None = Field(None, gt=0, description="Scale of this site's photos; enables mm figures.")


class SeverityConfig(Section):
    """Crack width classes: hairline < hairline_mm <= fine <= fine_mm < medium <= medium_mm < wide."""

    hairline_mm: float = Field(0.1, gt=0)
    fine_mm: float = Field(1.0, gt=0)
    medium_mm: float = Field(5.0, gt=0)

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
    severity: SeverityConfig = SeverityConfig()
    min_component_px: int = Field(
        16, ge=1, description="Mask pieces smaller than this (source pixels) are not counted as components.")


class Config(Section):
    """The whole of config.yaml."""

    datasets: list[DatasetConfig] = Field(default_factory=list)
    prompts: PromptsConfig = PromptsConfig()
    prep: PrepConfig = PrepConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    watch: WatchConfig = WatchConfig()
    store: StoreConfig = StoreConfig()
    outputs: OutputsConfig = OutputsConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    retrain: RetrainConfig = RetrainConfig()
    sites: dict[str, SiteConfig] = Field(default_factory=dict, description="Per-site settings by site name.")
    measure: MeasureConfig = MeasureConfig()
    source: Path = Field(Path("config.yaml"), exclude=True, description="The file this was read from.")

    @field_validator("datasets")
    @classmethod
    def _unique_names(cls, v: list[DatasetConfig]) -> list[DatasetConfig]:
        names = [d.name for d in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"dataset names must be unique; repeated: {', '.join(dup)}")
        return v

    @model_validator(mode="after")
    def _check_prompts(self) -> Config:
        seen: dict[str, str] = {}
        for task in TASKS:
            for p in self.prompts.for_task(task).all:
                if seen.get(p, task) != task:
                    raise ValueError(f"prompt {p!r} is listed for both {seen[p]} and {task}")
                seen[p] = task
        return self

    def task_of_prompt(self, prompt: str) -> Task | None:
        """The task a prompt (canonical or synonym) belongs to, or None for a free prompt."""
        return next((t for t in TASKS if prompt in self.prompts.for_task(t).all), None)

    def train_settings(self, **overrides):
        """The `model.train.TrainSettings` of this config's recipe, with `overrides` (None values ignored)."""
        from model.data import Augment  # heavy: only training needs it
        from model.train import TrainSettings

        t = self.train
        augment = Augment(crop_size=t.crop_size, scale=dict(t.scale), centre_prob=dict(t.centre_prob),
                          **t.appearance.model_dump())
        backend = overrides.pop("backend", None) or self.model.backend
        # the architecture keys are the compact backend's; CLIPSeg's come from its base
        model = ({"input_size": self.model.input_size, **t.architecture} if backend == "compact"
                 else {"input_size": 352})
        settings = dict(
            prepared=self.prep.out, out=t.out, prompts={task: self.prompts.for_task(task).all for task in TASKS},
            backend=backend, model=model, init=t.init, epochs=t.epochs, steps_per_epoch=t.steps_per_epoch,
            batch_size=t.batch_size, lr=t.lr, weight_decay=t.weight_decay, warmup_steps=t.warmup_steps,
            min_lr_ratio=t.min_lr_ratio, augment=augment, negative_prob=t.negative_prob, lovasz_from=t.lovasz_from,
            aux_weight=t.aux_weight, ema_decay=t.ema_decay, seed=t.seed, device=self.model.device,
            cpu_bf16=t.cpu_bf16, threads=t.threads, num_workers=t.num_workers, eval_every=t.eval_every)
        settings.update({k: v for k, v in overrides.items() if v is not None})
        return TrainSettings(**settings)

    def with_train_overrides(self, items: list[str]) -> Config:
        """This config with `--set KEY=VALUE` items applied to its train section (VALUE is YAML)."""
        raw = self.train.model_dump()
        for item in items:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ConfigError(f"--set {item}: expected KEY=VALUE, e.g. --set ema_decay=0.999")
            try:
                parsed = yaml.safe_load(value)
            except yaml.YAMLError:
                raise ConfigError(f"--set {item}: the value is not valid YAML") from None
            node, parts = raw, key.removeprefix("train.").split(".")
            for part in parts[:-1]:
                if not isinstance(node.get(part), dict):
                    raise ConfigError(f"--set {item}: train.{'.'.join(parts[:-1])} is not a section")
                node = node[part]
            node[parts[-1]] = parsed
        try:
            train = TrainConfig.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            msg = "unknown key; see `train:` in the config reference" if err["type"] == "extra_forbidden" \
                else err["msg"]
            raise ConfigError(f"--set: train.{where}: {msg}") from None
        return self.model_copy(update={"train": train})

    def require(self, key: str, path: Path) -> Path:
        """`path` when it exists; else a ConfigError naming the key and this file."""
        if not path.exists():
            raise ConfigError(f"{self.source}: {key}: {path} does not exist; "
                              "create it, fix the path, or override it on the command line")
        return path


def load_config(path: Path, missing_ok: bool = False) -> Config:
    """Read and validate `path`; every problem becomes one ConfigError naming the file and key.

    With `missing_ok`, an absent file gives the defaults, relative to the current folder.
    """
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        if missing_ok:
            return _resolve_paths(Config(source=path), Path.cwd())
        raise ConfigError(f"{path}: config file not found; pass --config or set QA_DAEMON_CONFIG") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc})") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where else ""
        raise ConfigError(f"{path}: not valid YAML{at}; fix the syntax") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (datasets:, model:, ...)")
    if "source" in raw:
        raise ConfigError(f"{path}: source: unknown key; remove it")
    try:
        config = Config.model_validate({**raw, "source": path})
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        msg = "unknown key; remove it or check its spelling" if err["type"] == "extra_forbidden" else err["msg"]
        raise ConfigError(f"{path}: {key}: {msg}{more}") from None
    return _resolve_paths(config, path.parent)


def _resolve_paths(config: Config, base: Path) -> Config:
    """Make every relative path relative to the config file's folder."""

    def fix(model: BaseModel) -> BaseModel:
        updates = {}
        for name in type(model).model_fields:
            value = getattr(model, name)
            if isinstance(value, Path) and name != "source":
                updates[name] = value if value.is_absolute() else base / value
            elif isinstance(value, BaseModel):
                updates[name] = fix(value)
            elif isinstance(value, list) and value and isinstance(value[0], Path):
                updates[name] = [v if v.is_absolute() else base / v for v in value]
            elif isinstance(value, list) and value and isinstance(value[0], BaseModel):
                updates[name] = [fix(v) for v in value]
        return model.model_copy(update=updates)

    config = fix(config)
    url = config.store.url
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////") and url != "sqlite:///:memory:":
        config = config.model_copy(update={"store": StoreConfig(url=f"sqlite:///{base / url[10:]}")})
    return config
