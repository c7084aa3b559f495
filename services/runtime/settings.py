"""Typed settings from flags, environment and a config file, validated at start-up.

Precedence, highest first: command-line flag, ``SHOPTWIN_<SERVICE>_<NAME>``,
``SHOPTWIN_<NAME>``, the config file's ``[<service>]`` table, its ``[defaults]`` table, the
dataclass default. Every setting is a dataclass field whose metadata declares its help text and
bounds, so flags, environment names, file keys and validation come from one declaration and
cannot drift apart. A bad value raises :class:`SettingsError` naming the setting and where the
value came from.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import tomllib
import types
import typing
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

ENV_PREFIX = "SHOPTWIN_"

T = TypeVar("T")


class SettingsError(ValueError):
    """A setting is missing or invalid; the message names the setting and its source."""


def setting(
    default: Any,
    help: str,
    *,
    low: float | None = None,
    high: float | None = None,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """Declare a settings field with its help text and bounds."""
    meta = {"help": help, "low": low, "high": high, "choices": choices}
    return dataclasses.field(default=default, metadata=meta)


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def env_names(name: str, section: str | None) -> list[str]:
    names = []
    if section:
        names.append(f"{ENV_PREFIX}{section.upper()}_{name.upper()}")
    names.append(f"{ENV_PREFIX}{name.upper()}")
    return names


def _base_type(tp: Any) -> tuple[Any, bool]:
    """The non-None type of an annotation and whether None is allowed."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"unsupported settings type {tp}")
        return args[0], True
    return tp, False


def _coerce(raw: Any, tp: Any, *, from_text: bool) -> Any:
    base, optional = _base_type(tp)
    if raw is None or (from_text and optional and raw == ""):
        if optional:
            return None
        raise ValueError("a value is required")
    if base is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected true or false, got {raw!r}")
    if base is int:
        if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
            raise ValueError(f"expected an integer, got {raw!r}")
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise ValueError(f"expected an integer, got {raw!r}") from None
    if base is float:
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise ValueError(f"expected a number, got {raw!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"expected a finite number, got {raw!r}")
        return value
    if base is Path:
        return Path(str(raw)).expanduser()
    if base is str:
        return str(raw)
    raise TypeError(f"unsupported settings type {tp}")


def _check_bounds(field: dataclasses.Field[Any], value: Any) -> None:
    if value is None:
        return
    low, high, choices = (
        field.metadata.get("low"),
        field.metadata.get("high"),
        field.metadata.get("choices"),
    )
    if low is not None and value < low:
        raise ValueError(f"must be at least {low:g}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"must be at most {high:g}, got {value}")
    if choices is not None and value not in choices:
        raise ValueError(f"must be one of {', '.join(choices)}, got {value!r}")


def add_arguments(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    title: str | None = None,
    shown_defaults: Mapping[str, Any] | None = None,
) -> None:
    """Add one flag per field of the settings dataclass ``cls`` (default ``None`` = not given).

    ``shown_defaults`` replaces the dataclass default in the help text where the caller supplies
    its own (a service's default port).
    """
    group = parser.add_argument_group(title) if title else parser
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        base, _ = _base_type(hints[field.name])
        help_text = field.metadata.get("help", "")
        default = (shown_defaults or {}).get(field.name, field.default)
        if default is not dataclasses.MISSING and default is not None:
            help_text += f" (default: {default})"
        if base is bool:
            group.add_argument(
                flag_name(field.name),
                dest=field.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        else:
            group.add_argument(
                flag_name(field.name),
                dest=field.name,
                default=None,
                metavar=field.name.upper(),
                help=help_text,
            )


def load_config_file(path: Path | None) -> dict[str, Any]:
    """Read a TOML or YAML config file into a dict of tables."""
    if path is None:
        return {}
    if not path.is_file():
        raise SettingsError(f"--config: file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        else:
            data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise SettingsError(f"--config: {path} is not valid: {exc}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"--config: {path} must hold tables of settings")
    return data


def resolve(
    cls: type[T],
    *,
    section: str | None,
    flags: Mapping[str, Any] | argparse.Namespace | None = None,
    env: Mapping[str, str] | None = None,
    config: Mapping[str, Any] | None = None,
    config_path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    sibling_keys: Collection[str] = (),
) -> T:
    """Build ``cls`` from the sources in precedence order and validate every field.

    ``overrides`` are defaults supplied by the caller (e.g. a service's default port) that sit
    just above the dataclass default. ``sibling_keys`` are keys of other settings classes that
    read the same config table (server settings and a service's options share ``[intent]``), so
    they are not reported as unknown.
    """
    if isinstance(flags, argparse.Namespace):
        flags = vars(flags)
    flags = flags or {}
    env = os.environ if env is None else env
    config = config or {}
    where = str(config_path) if config_path else "config file"
    tables: list[tuple[str, Mapping[str, Any]]] = []
    if section and isinstance(config.get(section), Mapping):
        tables.append((f"{where} [{section}]", config[section]))
    if isinstance(config.get("defaults"), Mapping):
        tables.append((f"{where} [defaults]", config["defaults"]))

    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        tp = hints[field.name]
        raw: Any = None
        source: str | None = None
        from_text = False
        if flags.get(field.name) is not None:
            raw, source, from_text = flags[field.name], flag_name(field.name), True
        else:
            for name in env_names(field.name, section):
                if name in env:
                    raw, source, from_text = env[name], name, True
                    break
            else:
                for table_name, table in tables:
                    if field.name in table:
                        raw, source = table[field.name], f"{table_name} {field.name}"
                        break
        if source is None and overrides and field.name in overrides:
            raw, source = overrides[field.name], None
        if source is None and raw is None:
            if field.default is dataclasses.MISSING:
                raise SettingsError(
                    f"{field.name}: required; set {flag_name(field.name)} or "
                    f"{env_names(field.name, section)[0]}"
                )
            values[field.name] = field.default
            continue
        try:
            value = _coerce(raw, tp, from_text=from_text)
            _check_bounds(field, value)
        except ValueError as exc:
            raise SettingsError(f"{field.name} ({source or 'default'}): {exc}") from None
        values[field.name] = value

    for table_name, table in tables:
        unknown = sorted(set(table) - known - set(sibling_keys))
        if unknown and table_name.endswith(f"[{section}]"):
            raise SettingsError(f"{table_name}: unknown setting(s) {', '.join(unknown)}")

    instance = cls(**values)
    check = getattr(instance, "validate", None)
    if callable(check):
        check()
    return instance
