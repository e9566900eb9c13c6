"""The typed-YAML loader: config files and `--set` overrides become a checked `Config` (vit_ms/config.py).

    cfg = load_config("configs/vit_b16.yaml", overrides=["train.epochs=5", "data.root=/data/imagenet"])

Unknown keys and wrong types raise `ConfigError` naming the key and the closest valid one (or the name it has
now); a key written twice in one mapping of any file a `base:` chain reads is refused with both lines; YAML tags
are never constructed. `save_config` writes the resolved config back as YAML.
"""
import dataclasses
import os
import typing
from pathlib import Path
from typing import Any, List, Literal, Optional, Sequence, Union

import yaml

from .config import Config, config_to_dict, renamed_key_hint, upgrade_recorded_config, validate
from .errors import ConfigError, suggest
from .fs import atomic_writer


def _config_dir() -> Path:
    """The YAML recipes: vit_ms/configs in an installed package (pip install .), else configs/ of the checkout."""
    here = Path(__file__).resolve().parent
    return here / "configs" if (here / "configs").is_dir() else here.parent / "configs"


CONFIG_DIR = _config_dir()


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader (no tags constructed) that refuses a key written twice in one mapping.

    PyYAML keeps the last of two equal keys without a word, so `epochs: 1` then `epochs: 7` would train 7.
    """

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: merged keys may be replaced
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                if isinstance(key, typing.Hashable) and key in seen:
                    raise ConfigError(f"config file '{node.start_mark.name}' sets '{key}' twice in one mapping, at "
                                      f"lines {seen[key]} and {line}; YAML would keep only the last, so delete the "
                                      f"one you do not mean")
                seen[key] = line
        return super().construct_mapping(node, deep)


# ----------------------------------------------------------------------------------------------------------
# Typed conversion of plain YAML values into the schema's dataclasses.


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if origin is Union:
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, List):
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Return `value` as type `tp`, or raise ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    if origin is Union:
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
    elif origin is Literal:
        if isinstance(value, bool) and {"on", "off"} <= set(typing.get_args(tp)):  # YAML 1.1 reads on/off as bools
            value = "on" if value else "off"
        if value in typing.get_args(tp) and type(value) is type(typing.get_args(tp)[0]):
            return value
    elif origin in (list, List):
        if isinstance(value, (list, tuple)):
            return [_coerce(v, typing.get_args(tp)[0], f"{key}[{i}]") for i, v in enumerate(value)]
    elif tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, bool):  # YAML 1.1 reads off / on / yes / no unquoted as booleans
            raise ConfigError(f"config key '{key}' must be text, but YAML read the unquoted word as {value!r}; "
                              f"quote it, e.g. {key.rsplit('.', 1)[-1]}: 'off'")
    elif dataclasses.is_dataclass(tp):
        if isinstance(value, dict):
            return _build(tp, value, prefix=f"{key}.")
    raise ConfigError(f"config key '{key}' must be {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def _build(cls: type, values: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in hints:
            hint = renamed_key_hint(f"{prefix}{key}") or suggest(str(key), hints, prefix)
            raise ConfigError(f"unknown config key '{prefix}{key}'{hint} "
                              f"(valid keys in '{prefix.rstrip('.') or 'top level'}': {', '.join(hints)})")
        kwargs[key] = _coerce(value, hints[key], prefix + key)
    return cls(**kwargs)


def config_from_dict(values: dict, recorded: bool = False) -> Config:
    """Build a `Config` from nested plain values (as read from YAML); missing keys keep their defaults.

    recorded: `values` is the config a checkpoint records, written by any version: its old key names are
    brought to today's first (`upgrade_recorded_config`). A user's file or override with an old name is refused
    with the name it has now.
    """
    if not isinstance(values, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(values).__name__}")
    cfg = _build(Config, upgrade_recorded_config(values) if recorded else values)
    validate(cfg)
    return cfg


def _field_type(parts: Sequence[str]) -> Any:
    """The declared type of the dotted key `parts` in Config, or None when there is no such key."""
    tp: Any = Config
    for part in parts:
        hints = typing.get_type_hints(tp) if dataclasses.is_dataclass(tp) else {}
        if part not in hints:
            return None
        tp = hints[part]
    return tp


def _parse_override(text: str) -> tuple:
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like section.key=value, e.g. train.epochs=5")
    key, raw = text.split("=", 1)
    key = key.strip()
    if _field_type(key.split(".")) is str and raw.strip() and raw.strip()[0] not in "'\"[{!&*":
        return key, raw.strip()  # a text key takes the text as written: off, yes, 1e3 stay strings
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:  # also tags (!!python/object ...): the safe loader constructs none of them
        problem = " ".join(str(getattr(err, "problem", None) or err).split())
        raise ConfigError(f"override '{text}': the value is not plain YAML ({problem}); write a number, true/false, "
                          f"a list like [0.08, 1.0], or text (quote it, e.g. {key}='a: b', when it holds YAML "
                          f"characters; tags such as !!python/... are never read)") from None
    return key, value


def apply_overrides(values: dict, overrides: Sequence[str]) -> dict:
    """Set dotted keys in nested plain values: ["train.epochs=5"] -> values["train"]["epochs"] = 5."""
    for text in overrides:
        key, value = _parse_override(text)
        node = values
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{text}': '{part}' is not a section")
        node[parts[-1]] = value
    return values


def resolve_config_path(path: str) -> Path:
    """Find a config: the path as given, else the same name inside configs/ (with or without .yaml)."""
    candidates = [Path(path), CONFIG_DIR / path, CONFIG_DIR / f"{path}.yaml"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    known = sorted(p.name for p in CONFIG_DIR.glob("*.yaml"))
    raise ConfigError(f"config file '{path}' not found (looked in the current folder and {CONFIG_DIR})"
                      f"{suggest(Path(path).name, known)}; available configs: {', '.join(known)}")


def _merge(base: dict, update: dict) -> dict:
    """Nested dict merge: sections merge key by key, other values replace."""
    merged = dict(base)
    for key, value in update.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) \
            else value
    return merged


def read_yaml(path: Path, seen: tuple = ()) -> dict:
    """Read one config file (safe loader); a top-level `base: other.yaml` is read first and updated by this file."""
    if path in seen:
        raise ConfigError(f"config file '{path}' includes itself through 'base'")
    try:
        with open(path, encoding="utf-8") as f:
            values = yaml.load(f, Loader=_UniqueKeyLoader) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file '{path}' is not valid YAML: {err}") from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file '{path}' is not UTF-8 text (byte {err.object[err.start]:#04x} at offset "
                          f"{err.start}); save it as UTF-8, e.g. iconv -f latin1 -t utf-8 old.yaml > new.yaml") from err
    except OSError as err:
        raise ConfigError(f"cannot read config file '{path}' ({err.strerror}); give a readable YAML file") from err
    if not isinstance(values, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of sections")
    base = values.pop("base", None)
    if base is None:
        return values
    if not isinstance(base, str):
        raise ConfigError(f"'base' in '{path}' must be a config file name, got {base!r}")
    sibling = path.parent / base
    return _merge(read_yaml(sibling if sibling.is_file() else resolve_config_path(base), seen + (path,)), values)


def load_config(path: Optional[str] = None, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config, apply `section.key=value` overrides, check and return it.

    `path` may name a file in configs/ ("vit_b16.yaml" or "vit_b16"); the run is named after the file.
    """
    values: dict = {}
    if path:
        resolved = resolve_config_path(path)
        values = read_yaml(resolved)
        values.setdefault("run_name", resolved.stem)
    return config_from_dict(apply_overrides(values, overrides))


def save_config(cfg: Config, path: os.PathLike) -> None:
    """Write the resolved config as YAML (atomically: a failed write leaves the old file and no temp file)."""
    with atomic_writer(path) as f:
        yaml.safe_dump(config_to_dict(cfg), f, sort_keys=False)


