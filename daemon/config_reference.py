"""Render the configuration reference, docs/configuration.md, from the pydantic schema of `Config`.

    uv run python -m daemon.config_reference           # (re)write docs/configuration.md
    uv run python -m daemon.config_reference --check   # exit 1 when the file is stale

The schema is the one source: key, type, allowed range, default and description all come from
`daemon/config_sections.py` and `Config`, so the page cannot drift from what the loader accepts.
`tests/test_docs.py` fails when the committed page differs from what this renders.
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from daemon.config import Config

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "docs" / "configuration.md"
COMMAND = "uv run python -m daemon.config_reference"

INTRO = f"""\
# Configuration reference

Generated from the schema (`daemon/config_sections.py`, `daemon/config.py`) by `{COMMAND}`; do not
edit it by hand: change the field descriptions there and run the command again. `tests/test_docs.py`
fails when this page and the schema disagree.

`qa-daemon` reads `config.yaml` in the current folder, or the file named by `--config FILE` (or the
environment variable `QA_DAEMON_CONFIG`). Without `--config`, a missing `config.yaml` means the
defaults below. The file is validated once, at start: an unknown key, a wrong type or a value out of
range stops the command with one line naming the file and the key (exit code 2). Relative paths
are relative to the config file's folder. Every key is optional except where the default says
*required*; a section left out takes its defaults. Some command-line options override a key for one
run ([commands.md](commands.md) names them); `qa-daemon train --set KEY=VALUE` overrides any `train:`
key.
"""

SCALARS = {str: "text", int: "integer", float: "number", bool: "true or false", Path: "path", Any: "any"}


def type_name(annotation: Any, key: bool = False) -> str:
    """The type as a reader of YAML thinks of it: `integer or null`, `list of path`, ..."""
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin is Literal:
        words = [f"`{a}`" for a in args]
        return "/".join(words) if key else ", ".join(words[:-1]) + f" or {words[-1]}"
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in args)
    if origin is list:
        return f"list of {type_name(args[0])}"
    if origin is tuple:
        return "[" + ", ".join(type_name(a) for a in args) + "]"
    if origin is dict:
        return f"mapping of {type_name(args[0], key=True)} to {type_name(args[1])}"
    if annotation in SCALARS:
        return SCALARS[annotation]
    raise TypeError(f"no reader's name for the type {annotation!r}; add it to daemon/config_reference.py")


def bounds(field: FieldInfo) -> str:
    """The field's allowed range (`0 < x <= 1`, `x >= 1`) or least length; '' when unbounded."""
    low = high = ""
    for m in field.metadata:
        if isinstance(m, annotated_types.Ge):
            low = f"{m.ge} <="
        elif isinstance(m, annotated_types.Gt):
            low = f"{m.gt} <"
        elif isinstance(m, annotated_types.Le):
            high = f"<= {m.le}"
        elif isinstance(m, annotated_types.Lt):
            high = f"< {m.lt}"
        elif isinstance(m, annotated_types.MinLen):
            unit = "item" if get_origin(field.annotation) is list else "character"
            return f"at least {m.min_length} {unit}{'s' if m.min_length != 1 else ''}"
    if low and high:
        return f"{low} x {high}"
    if low:  # `x >= 1` reads better than `1 <= x`
        value, op = low.split()
        return f"x {'>=' if op == '<=' else '>'} {value}"
    return f"x {high}" if high else ""


def yaml_value(value: Any) -> str:
    """A default as it would be written in config.yaml (a path inside this repository relative to it)."""
    def plain(v: Any) -> Any:
        if isinstance(v, Path):
            # the shipped checkpoint is an absolute path into the installation: show it the same on every machine
            return str(v.relative_to(REPO)) if v.is_absolute() and v.is_relative_to(REPO) else str(v)
        if isinstance(v, BaseModel):
            return plain(v.model_dump())
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [plain(x) for x in v]
        return v

    text = yaml.safe_dump(plain(value), default_flow_style=True, width=10_000, sort_keys=False).strip()
    return text.removesuffix("\n...").strip()


def default_of(field: FieldInfo) -> Any:
    return PydanticUndefined if field.is_required() else field.get_default(call_default_factory=True)


def rows(model: type[BaseModel], prefix: str, instance: BaseModel | None) -> list[tuple[str, str, str, str]]:
    """(key, type, default, description) of every leaf key under `model`; a nested section's keys are
    dotted, its defaults taken from the parent's default (`prompts.crack.canonical` is "segment crack")."""
    out = []
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        key = f"{prefix}{name}"
        annotation, args = field.annotation, get_args(field.annotation)
        default = getattr(instance, name) if instance is not None else default_of(field)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out += rows(annotation, f"{key}.", default if default is not PydanticUndefined else None)
        elif get_origin(annotation) is list and _is_model(args[0]):
            out += rows(args[0], f"{key}[].", None)
        elif get_origin(annotation) is dict and _is_model(args[1]):
            out += rows(args[1], f"{key}.<name>.", None)
        else:
            kind = type_name(annotation)
            if limits := bounds(field):
                kind += f", {limits}"
            shown = "*required*" if default is PydanticUndefined else f"`{yaml_value(default)}`"
            out.append((key, kind, shown, field.description or ""))
    return out


def _is_model(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, BaseModel)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render() -> str:
    """The whole page: one section per top-level key of config.yaml, in the schema's order."""
    parts, table = [INTRO], rows(Config, "", Config())
    for name, field in Config.model_fields.items():
        if field.exclude:
            continue
        # a section's intro: the field's description, else its class docstring
        intro = field.description or (field.annotation.__doc__ if _is_model(field.annotation) else None)
        parts.append(f"## `{name}`\n")
        if intro:
            parts.append(" ".join(intro.split()) + "\n")
        parts.append("| key | type | default | description |\n|---|---|---|---|")
        parts.append("\n".join(f"| `{k}` | {_cell(t)} | {_cell(d)} | {_cell(desc)} |" for k, t, d, desc in table
                               if k == name or k.startswith((f"{name}.", f"{name}["))) + "\n")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m daemon.config_reference", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the file differs from the schema")
    parser.add_argument("--out", type=Path, default=REFERENCE, help=f"default: {REFERENCE.relative_to(REPO)}")
    args = parser.parse_args(argv)
    page = render()
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current != page:
            print(f"{args.out} is stale; run `{COMMAND}`", file=sys.stderr)
            return 1
        print(f"{args.out} matches the schema")
        return 0
    args.out.write_text(page)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
