"""Settings from flags, ``OPSLEVEL_*`` environment variables and the YAML config file.

A settings class is an attrs class whose fields are declared with :func:`setting`. One mechanism
serves every group: :func:`add_arguments` puts each field on an argparse parser and :func:`load`
resolves it with the precedence flag > environment > file > default, collecting every problem
into one :class:`ConfigError` instead of stopping at the first.
"""

from __future__ import annotations

import argparse
import os
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs
import yaml

T = TypeVar("T")

Check = Callable[[Any], str | None]
"""Returns a problem description for a bad value, or None."""

_META = "trunner.setting"


class ConfigError(ValueError):
    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in self.problems))


@attrs.frozen
class SettingSpec:
    help: str
    flag: str
    env: tuple[str, ...]
    file_key: str
    checks: tuple[Check, ...]
    secret: bool


def setting(
    default: Any,
    *,
    help: str,
    flag: str | None = None,
    env: str | Iterable[str] | None = None,
    file_key: str | None = None,
    checks: Iterable[Check] = (),
    secret: bool = False,
) -> Any:
    """Declare a setting. ``flag`` defaults to ``--<field-name-with-dashes>`` and ``env`` to
    ``OPSLEVEL_<FLAG_NAME>``; ``file_key`` (a dotted path into the YAML config file) to the flag
    name without dashes, as viper reads the Go runner's config file."""
    spec = {
        "help": help,
        "flag": flag,
        "env": (env,) if isinstance(env, str) else tuple(env or ()),
        "file_key": file_key,
        "checks": tuple(checks),
        "secret": secret,
    }
    if isinstance(default, list | dict):
        raise TypeError("use tuples or attrs.Factory for mutable defaults")
    return attrs.field(default=default, metadata={_META: spec})


def _spec(field: attrs.Attribute[Any]) -> SettingSpec:
    raw = field.metadata[_META]
    flag = raw["flag"] or "--" + field.name.replace("_", "-")
    env = raw["env"] or ("OPSLEVEL_" + flag.lstrip("-").replace("-", "_").upper(),)
    file_key = raw["file_key"] or flag.lstrip("-")
    return SettingSpec(raw["help"], flag, env, file_key, raw["checks"], raw["secret"])


def _fields(cls: type[Any]) -> list[tuple[attrs.Attribute[Any], SettingSpec, Any]]:
    hints = typing.get_type_hints(cls)
    return [(f, _spec(f), hints[f.name]) for f in attrs.fields(cls) if _META in f.metadata]


# --- checks -------------------------------------------------------------------------------------


def positive(value: Any) -> str | None:
    return None if value > 0 else "must be greater than 0"


def non_negative(value: Any) -> str | None:
    return None if value >= 0 else "must be 0 or greater"


def at_most(limit: float) -> Check:
    def check(value: Any) -> str | None:
        return None if value <= limit else f"must be at most {limit:g}"

    return check


def one_of(*choices: str) -> Check:
    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"

    return check


def port(value: Any) -> str | None:
    return None if 0 <= value <= 65535 else "must be a TCP port (0-65535)"


# --- parsing ------------------------------------------------------------------------------------

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _parse_text(raw: str, type_: Any) -> Any:
    if type_ is bool:
        lowered = raw.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError(f"expected true or false, got {raw!r}")
    if type_ is int:
        try:
            return int(raw.strip().replace("_", ""))
        except ValueError:
            raise ValueError(f"expected a whole number, got {raw!r}") from None
    if type_ is float:
        try:
            return float(raw.strip())
        except ValueError:
            raise ValueError(f"expected a number, got {raw!r}") from None
    if type_ is str:
        return raw
    if typing.get_origin(type_) is tuple:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    raise TypeError(f"unsupported setting type {type_!r}")


def _coerce_file_value(value: Any, type_: Any) -> Any:
    """Values from YAML arrive typed; accept the matching type, or text parsed like an env value."""
    if isinstance(value, str):
        return _parse_text(value, type_)
    if type_ is bool and isinstance(value, bool):
        return value
    if type_ is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if type_ is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if typing.get_origin(type_) is tuple and isinstance(value, list):
        return tuple(str(item) for item in value)
    raise ValueError(f"expected {getattr(type_, '__name__', type_)}, got {value!r}")


def _lookup(tree: Mapping[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def add_arguments(parser: argparse.ArgumentParser, cls: type[Any]) -> None:
    """Add one option per setting of ``cls``. Values stay unset unless given, so :func:`load`
    can tell a flag from a default."""
    group = parser.add_argument_group(cls.__doc__.splitlines()[0] if cls.__doc__ else cls.__name__)
    for field, spec, type_ in _fields(cls):
        default = field.default
        shown = "(secret)" if spec.secret else default
        if isinstance(default, tuple):
            shown = ",".join(default) or '""'
        help_text = f"{spec.help} [env {', '.join(spec.env)}; default {shown}]"
        if type_ is bool:
            group.add_argument(
                spec.flag,
                dest=field.name,
                nargs="?",
                const="true",
                default=argparse.SUPPRESS,
                metavar="BOOL",
                help=help_text,
            )
        else:
            group.add_argument(spec.flag, dest=field.name, default=argparse.SUPPRESS, help=help_text)


def add_settings_arguments(parser: argparse.ArgumentParser, classes: Iterable[type[Any]]) -> None:
    """:func:`add_arguments` for each distinct class, in order."""
    for cls in dict.fromkeys(classes):
        add_arguments(parser, cls)


def load(
    cls: type[T],
    *,
    args: argparse.Namespace | None = None,
    environ: Mapping[str, str] | None = None,
    file: Mapping[str, Any] | None = None,
    source_name: str = "config file",
) -> T:
    """Resolve every setting of ``cls`` (flag > env > file > default) and run its checks."""
    environ = os.environ if environ is None else environ
    given = vars(args) if args is not None else {}
    values: dict[str, Any] = {}
    problems: list[str] = []
    for field, spec, type_ in _fields(cls):
        origin = None
        try:
            if field.name in given:
                origin = spec.flag
                value = _parse_text(str(given[field.name]), type_)
            elif (env_name := next((e for e in spec.env if e in environ), None)) is not None:
                origin = env_name
                value = _parse_text(environ[env_name], type_)
            else:
                found, raw = _lookup(file or {}, spec.file_key)
                if found:
                    origin = f"{spec.file_key} in {source_name}"
                    value = _coerce_file_value(raw, type_)
                else:
                    continue
        except ValueError as exc:
            problems.append(f"{origin}: {exc}")
            continue
        values[field.name] = value
    for field, spec, _ in _fields(cls):
        value = values.get(field.name, field.default)
        for check in spec.checks:
            problem = check(value)
            if problem:
                problems.append(f"{spec.flag} ({', '.join(spec.env)}): {problem}, got {value!r}")
    if problems:
        raise ConfigError(problems)
    return cls(**values)


def read_config_file(path: str | Path | None) -> tuple[dict[str, Any], str]:
    """Read the YAML config file given by ``-c``; a missing default file is simply empty."""
    if path is None:
        return {}, "config file"
    file_path = Path(path)
    try:
        text = file_path.read_text()
    except FileNotFoundError:
        raise ConfigError([f"{file_path}: config file not found"]) from None
    except OSError as exc:
        raise ConfigError([f"{file_path}: cannot read config file: {exc.strerror}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{file_path}: not valid YAML: {exc}"]) from None
    if data is None:
        return {}, str(file_path)
    if not isinstance(data, dict):
        raise ConfigError([f"{file_path}: expected a mapping at the top level"])
    return data, str(file_path)


class SettingsSource:
    """Everything settings are read from in one process: parsed flags, the environment and the
    config file. ``get(cls)`` resolves a settings group once and caches it."""

    def __init__(
        self,
        args: argparse.Namespace | None = None,
        environ: Mapping[str, str] | None = None,
        file: Mapping[str, Any] | None = None,
        source_name: str = "config file",
    ) -> None:
        self.args = args
        self.environ = os.environ if environ is None else environ
        self.file: Mapping[str, Any] = file or {}
        self.source_name = source_name
        self._cache: dict[type[Any], Any] = {}

    def get(self, cls: type[T]) -> T:
        if cls not in self._cache:
            self._cache[cls] = load(
                cls, args=self.args, environ=self.environ, file=self.file, source_name=self.source_name
            )
        value: T = self._cache[cls]
        return value

    def check(self, *classes: type[Any]) -> None:
        """Resolve several groups, reporting the problems of all of them together."""
        problems: list[str] = []
        for cls in classes:
            try:
                self.get(cls)
            except ConfigError as exc:
                problems.extend(exc.problems)
        if problems:
            raise ConfigError(problems)
