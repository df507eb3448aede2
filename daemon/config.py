"""The one typed config, validated once at start-up from `config.yaml` and passed explicitly.

    config = load_config(Path("config.yaml"))

Unknown keys, wrong types and out-of-range values are refused with one message
that names the file and the key. Relative paths are resolved against the
config file's folder, so the daemon behaves the same from any working directory.
Which paths must exist depends on the command, so commands check the ones they
use with `Config.require(...)`.

Each section's schema is in `daemon/config_sections.py`; `docs/configuration.md` is rendered
from it by `uv run python -m daemon.config_reference`.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

# the sections live in their own module; re-exported so that `from daemon.config import X` is the one import
from daemon.config_sections import (
    LAYOUT_FIELDS,
    SHIPPED_CHECKPOINT,
    TASKS,
    WEEKDAYS,
    AppearanceConfig,
    DatasetConfig,
    MeasureConfig,
    ModelConfig,
    OutputsConfig,
    PrepConfig,
    PromptsConfig,
    RetrainConfig,
    ScheduleConfig,
    Section,
    SeverityConfig,
    SiteConfig,
    StoreConfig,
    Task,
    TaskPrompts,
    TrainConfig,
    WatchConfig,
    clock,
)
from model.errors import QAError

__all__ = [
    "DEFAULT_CONFIG", "LAYOUT_FIELDS", "SHIPPED_CHECKPOINT", "STORE_ENV", "TASKS", "WEEKDAYS", "AppearanceConfig",
    "Config", "ConfigError", "DatasetConfig", "MeasureConfig", "ModelConfig", "OutputsConfig", "PrepConfig",
    "PromptsConfig", "RetrainConfig", "ScheduleConfig", "Section", "SeverityConfig", "SiteConfig", "StoreConfig",
    "Task", "TaskPrompts", "TrainConfig", "WatchConfig", "clock", "existing_folder", "load_config",
]

DEFAULT_CONFIG = Path("config.yaml")
STORE_ENV = "QA_DAEMON_STORE"  # --store's variable: keeps a URL with a password out of the process list


class ConfigError(QAError):
    """The config file is missing, malformed, or names something that does not exist."""


def existing_folder(path: Path, option: str = "--data") -> Path:
    """`path`, a folder given on the command line with `option`, when it exists; else a ConfigError."""
    if not path.is_dir():
        raise ConfigError(f"{option} {path}: folder not found; check the path")
    return path


class Config(Section):
    """The whole of config.yaml."""

    datasets: list[DatasetConfig] = Field(
        default_factory=lambda: [  # the two Roboflow exports the shipped model was trained on
            DatasetConfig(name="cracks", root=Path("data/cracks.v1i.voc"), task="crack",
                          classes=["NewCracks - v2 2024-05-18 10-54pm", "crack", "cracks"]),
            DatasetConfig(name="drywall", root=Path("data/Drywall-Join-Detect.v1i.voc"), task="taping",
                          classes=["drywall-join"])],
        description="The labeled datasets `prep`, `train` and `retrain` read; one entry per "
        "export, e.g. one for cracks and one for taping.")
    prompts: PromptsConfig = PromptsConfig()
    prep: PrepConfig = PrepConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    watch: WatchConfig = WatchConfig()
    store: StoreConfig = StoreConfig()
    outputs: OutputsConfig = OutputsConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    retrain: RetrainConfig = RetrainConfig()
    sites: dict[str, SiteConfig] = Field(default_factory=dict, description="Per-site settings, by the site "
                                         "folder's name; sites without an entry have no scale.")
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

    def with_overrides(self, *, store: str | None = None, watch: list[Path] | None = None,
                       polling: bool | None = None, outputs: Path | None = None) -> Config:
        """This config with a command's run-time overrides: `--store URL`, `--watch DIR` (replacing
        watch.roots), `--polling/--events` and `--outputs DIR`. None (or no folders) leaves a key as
        configured; folders are made absolute."""
        updates: dict[str, Section] = {}
        if store:
            updates["store"] = StoreConfig(url=store)
        if watch or polling is not None:
            updates["watch"] = self.watch.model_copy(update={
                **({"roots": [w.absolute() for w in watch]} if watch else {}),
                **({"polling": polling} if polling is not None else {})})
        if outputs:
            updates["outputs"] = self.outputs.model_copy(update={"dir": outputs.absolute()})
        return self.model_copy(update=updates) if updates else self

    def dataset_roots(self, data: list[str]) -> dict[str, Path]:
        """Each configured dataset's root by name, with `--data [NAME=]DIR` items applied: an item names
        its dataset with NAME=, else by its folder's name (that of a configured root), else by order
        when every dataset is given."""
        roots = {d.name: d.root for d in self.datasets}
        by_folder = {d.root.name: d.name for d in self.datasets}
        positional = [x for x in data if "=" not in x]
        for item in data:
            name, _, folder = item.rpartition("=") if "=" in item else ("", "", item)
            path = Path(folder)
            name = name or by_folder.get(path.name) or (
                self.datasets[positional.index(item)].name if len(positional) == len(self.datasets) else "")
            if name not in roots:
                example = next(iter(roots), "cracks")
                raise ConfigError(f"--data {item}: cannot tell which dataset this is (configured: "
                                  f"{', '.join(roots)}); write NAME=DIR, e.g. --data {example}={folder}")
            roots[name] = path
        return roots

    def sources(self, data: list[str] | None = None, inbox: bool = False) -> list:
        """The `model.prep.Source`s that `prep` and `retrain` prepare: each configured dataset at its root, or
        at the folder `--data` gives for it (`dataset_roots`); with `inbox`, also one source per task over
        retrain.inbox, with the classes of that task's datasets. A folder from --data must exist, as must a
        configured root (the error names its key); no source at all is an error."""
        from model.prep import Source  # heavy: only the commands that prepare need it

        roots = self.dataset_roots(data or [])
        sources = [Source(d.name, existing_folder(roots[d.name]) if roots[d.name] != d.root
                          else self.require(f"datasets[{i}].root", d.root), d.task, tuple(d.classes), d.format)
                   for i, d in enumerate(self.datasets)]
        if inbox:
            for task in TASKS:
                classes = tuple(c for d in self.datasets if d.task == task for c in d.classes)
                if classes:
                    sources.append(Source(f"inbox-{task}", self.retrain.inbox, task, classes, "voc"))
        if not sources:
            raise ConfigError(f"{self.source}: datasets: no dataset configured; add one "
                              "(see docs/configuration.md)")
        return sources

    def split_policy(self):
        """The `model.prep.SplitPolicy` of the prep: section: how stems are re-split into train and valid."""
        from model.prep import SplitPolicy

        return SplitPolicy(self.prep.seed, self.prep.valid_fraction, self.prep.max_shared_fraction)

    def train_settings(self, *, input_size: int | None = None, crop_size: int | None = None,
                       tune_last_layers: int = 0, **overrides):
        """The `model.train.TrainSettings` of this config's recipe, with `overrides` of its fields (None
        values ignored). The model is a compact one of train.architecture at model.input_size, or CLIPSeg
        on model.base that also trains its last `tune_last_layers` CLIP layers; `input_size` and
        `crop_size` replace the model's input side and the training crop side."""
        from model.data import Augment  # heavy: only training needs it
        from model.train import TrainSettings

        t = self.train
        augment = Augment(crop_size=crop_size or t.crop_size, scale=dict(t.scale), centre_prob=dict(t.centre_prob),
                          **t.appearance.model_dump())
        backend = overrides.pop("backend", None) or self.model.backend
        # the architecture keys are the compact backend's; CLIPSeg's come from its base
        model = ({"input_size": self.model.input_size, **t.architecture} if backend == "compact"
                 else {"input_size": 352, "base": self.model.base, "tune_last_layers": tune_last_layers})
        settings = dict(
            prepared=self.prep.out, out=t.out, prompts=self.prompts.by_task, backend=backend, model=model,
            init=t.init, epochs=t.epochs, steps_per_epoch=t.steps_per_epoch,
            batch_size=t.batch_size, lr=t.lr, weight_decay=t.weight_decay, warmup_steps=t.warmup_steps,
            min_lr_ratio=t.min_lr_ratio, augment=augment, negative_prob=t.negative_prob, lovasz_from=t.lovasz_from,
            aux_weight=t.aux_weight, ema_decay=t.ema_decay, seed=t.seed, device=self.model.device,
            cpu_bf16=t.cpu_bf16, threads=t.threads, num_workers=t.num_workers, eval_every=t.eval_every)
        settings.update({k: v for k, v in overrides.items() if v is not None})
        if input_size:
            settings["model"] = {**settings["model"], "input_size": input_size}
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
    """Expand `~`, and make every other relative path relative to the config file's folder."""

    def fix(model: BaseModel) -> BaseModel:
        updates = {}
        for name in type(model).model_fields:
            value = getattr(model, name)
            if isinstance(value, Path) and name != "source":
                value = value.expanduser()
                updates[name] = value if value.is_absolute() else base / value
            elif isinstance(value, BaseModel):
                updates[name] = fix(value)
            elif isinstance(value, list) and value and isinstance(value[0], Path):
                updates[name] = [v.expanduser() if v.expanduser().is_absolute() else base / v for v in value]
            elif isinstance(value, list) and value and isinstance(value[0], BaseModel):
                updates[name] = [fix(v) for v in value]
        return model.model_copy(update=updates)

    config = fix(config)
    url = config.store.url
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////") and url != "sqlite:///:memory:":
        config = config.model_copy(update={"store": StoreConfig(url=f"sqlite:///{base / url[10:]}")})
    return config
