"""Reading analysis configs: YAML files, ``key.path=value`` overrides, strict key checking."""

from __future__ import annotations

import ast
import dataclasses
import functools
import math
import operator
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from hsbi.config.schema import AnalysisConfig
from hsbi.exceptions import ConfigError

__all__ = ["DEFAULT_CONFIG", "apply_overrides", "load_config", "parse_overrides", "split_overrides"]

#: The embedded default analysis (used when the config path is ``"default"``).
DEFAULT_CONFIG = Path(__file__).with_name("default.yaml")

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def _eval_number(text: str) -> float:
    """Evaluate ``"pi/4"``, ``"0.25*pi"``, ``"1e-3"``; nothing but numbers, pi and + - * /."""

    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return float(node.value)
        if isinstance(node, ast.Name) and node.id == "pi":
            return math.pi
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            return -ev(node.operand) if isinstance(node.op, ast.USub) else ev(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        raise ValueError(text)

    return ev(ast.parse(text.strip(), mode="eval").body)


def _convert(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):  # ``X | None``: null, or an X
        (inner, *rest) = [arg for arg in typing.get_args(tp) if arg is not type(None)]
        if rest:
            raise TypeError(f"unsupported config type {tp} at {key}")
        return None if value is None else _convert(inner, value, key)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        return _build(tp, value, key)
    if origin in (tuple, Sequence, list):
        if isinstance(value, str) and typing.get_args(tp)[:1] == (str,):
            value = [value]  # a single name where a list of names is expected
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' = {value!r}: expected a list")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        return tuple(_convert(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key '{key}' = {value!r}: expected a mapping")
        key_tp, val_tp = typing.get_args(tp) or (Any, Any)
        return {
            _convert(key_tp, k, key): _convert(val_tp, v, f"{key}.{k}") for k, v in value.items()
        }
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' = {value!r}: expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' = {value!r}: expected an integer")
        return value
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"config key '{key}' = {value!r}: expected a number")
        try:
            number = float(value) if not isinstance(value, str) else _eval_number(value)
        except (ValueError, SyntaxError, ZeroDivisionError, TypeError):
            raise ConfigError(
                f"config key '{key}' = {value!r}: expected a number (or an expression like pi/4)"
            ) from None
        if not math.isfinite(number):
            raise ConfigError(f"config key '{key}' = {value!r}: expected a finite number")
        return number
    if tp is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)  # expressions such as `weight: 1` arrive as numbers from YAML
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}' = {value!r}: expected a string")
        return value
    if tp is Any:  # validated by its section (e.g. tune.space)
        return value
    raise TypeError(f"unsupported config type {tp} at {key}")


@functools.lru_cache(maxsize=None)
def _type_hints(cls: type) -> dict[str, Any]:
    """``typing.get_type_hints`` once per class (it evaluates every annotation: half the time of
    reading a config of 500 samples, one call per sample)."""
    return typing.get_type_hints(cls)


def _build(cls: type, data: Mapping[str, Any], prefix: str = "") -> Any:
    hints = _type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            where = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(
                f"unknown config key '{where}'; known keys here: {', '.join(names)}"
            )
    missing = [
        f.name for f in dataclasses.fields(cls)
        if f.name not in data
        and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        where = f" in '{prefix}'" if prefix else ""
        raise ConfigError(f"missing config key '{missing[0]}'{where}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {
        key: _convert_field(fields[key], hints[key], value, f"{prefix}.{key}" if prefix else key)
        for key, value in data.items()
    }
    return cls(**kwargs)


def _convert_field(field: dataclasses.Field, tp: Any, value: Any, key: str) -> Any:
    """:func:`_convert`; a field's ``hint`` metadata says what to do instead of a wrong value."""
    try:
        return _convert(tp, value, key)
    except ConfigError as err:
        hint = field.metadata.get("hint")
        raise ConfigError(f"{err}; {hint}" if hint else str(err)) from None


#: libyaml's safe loader where PyYAML has it (~10x faster than the pure-Python one on a config
#: with hundreds of samples); the same constructors, so the same values
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist (use 'default' for the embedded one)")
    try:
        data = yaml.load(path.read_text(), Loader=_SAFE_LOADER)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of sections at the top level")
    return data


_OPEN, _CLOSE = "[{(", "]})"


def split_overrides(text: str) -> tuple[str, ...]:
    """``"a=1,b=[2,3]"`` to ``("a=1", "b=[2,3]")``: commas split overrides except inside
    brackets, braces or quotes, so list and mapping values need no escaping."""
    items, current, depth, quote = [], [], 0, ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in _OPEN:
            depth += 1
        elif char in _CLOSE:
            depth = max(depth - 1, 0)
        elif char == "," and depth == 0:
            items.append("".join(current))
            current = []
            continue
        current.append(char)
    items.append("".join(current))
    return tuple(item for item in items if item.strip())


def _yaml_value(item: str, text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(f"override {item!r}: the value is not valid YAML (lists as [a, b], "
                          "mappings as {k: v})") from None


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["training.max_epochs=5", "inference.truth.mu=0.3"]`` to a nested mapping."""
    nested: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key.path=value")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"override {item!r}: empty key")
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: conflicts with another override")
        node[parts[-1]] = _yaml_value(item, text)
    return nested


def apply_overrides(data: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A deep merge of ``overrides`` into ``data`` (both plain mappings)."""
    merged = dict(data)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = apply_overrides(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def load_config(
    path: str | Path = "default", overrides: Sequence[str] | Mapping[str, Any] = ()
) -> AnalysisConfig:
    """Read and validate an analysis config; ``"default"`` is the embedded one.

    Raises :class:`~hsbi.exceptions.ConfigError` naming the file, key and expected value.
    """
    source = DEFAULT_CONFIG if str(path) in ("", "default") else Path(path).expanduser()
    data = _read_yaml(source)
    if overrides:
        extra = parse_overrides(overrides) if not isinstance(overrides, Mapping) else overrides
        data = apply_overrides(data, extra)
    try:
        return _build(AnalysisConfig, data)
    except ConfigError as err:
        raise ConfigError(f"{source.name}: {err}") from None
