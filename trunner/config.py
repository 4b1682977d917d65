"""Settings from flags, ``OPSLEVEL_*`` environment variables and the YAML config file.

A settings class is an attrs class whose fields are declared with :func:`setting`. One mechanism
serves every group: :func:`add_arguments` puts each field on an argparse parser and :func:`load`
resolves it with the precedence flag > environment > file > default, collecting every problem
into one :class:`ConfigError` instead of stopping at the first.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import re
import stat
import sys
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
    """The documented environment variables."""
    lookup_env: tuple[str, ...]
    """Every environment variable read, in order of precedence."""
    file_key: str
    checks: tuple[Check, ...]
    secret: bool
    words: bool

    @property
    def file_flag(self) -> str:
        """A secret's file form: ``--api-token-file``."""
        return self.flag + "-file"

    @property
    def file_env(self) -> tuple[str, ...]:
        """A secret's file form in the environment: ``OPSLEVEL_API_TOKEN_FILE``."""
        return tuple(f"{name}_FILE" for name in self.env)

    @property
    def file_dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_") + "_file"


def setting(
    default: Any,
    *,
    help: str,
    flag: str | None = None,
    env: str | Iterable[str] | None = None,
    file_key: str | None = None,
    checks: Iterable[Check] = (),
    secret: bool = False,
    words: bool = False,
) -> Any:
    """Declare a setting. ``flag`` defaults to ``--<field-name-with-dashes>`` and ``env`` to
    ``OPSLEVEL_<FLAG_NAME>``; ``file_key`` (a dotted path into the YAML config file) to the flag
    name without dashes, as viper reads the Go runner's config file. A list setting with ``words``
    also takes its environment and file text space-separated, as the Go runner's list flags do.
    A ``secret`` may also be given as the path of a file holding it (``--<flag>-file``,
    ``<ENV>_FILE``), so it need not appear on a command line; a secret's trailing newline, as a
    file or a Kubernetes Secret made from one holds, is never part of it."""
    spec = {
        "help": help,
        "flag": flag,
        "env": (env,) if isinstance(env, str) else tuple(env or ()),
        "file_key": file_key,
        "checks": tuple(checks),
        "secret": secret,
        "words": words,
    }
    if isinstance(default, list | dict):
        raise TypeError("use tuples or attrs.Factory for mutable defaults")
    return attrs.field(default=default, metadata={_META: spec})


def _spec(field: attrs.Attribute[Any]) -> SettingSpec:
    raw = field.metadata[_META]
    flag = raw["flag"] or "--" + field.name.replace("_", "-")
    name = flag.lstrip("-")
    env = raw["env"] or ("OPSLEVEL_" + name.replace("-", "_").upper(),)
    # viper's AutomaticEnv reads OPSLEVEL_ + the upper-cased key, dashes kept: the Go runner's
    # only environment form of the flags it binds no variable to.
    go_env = "OPSLEVEL_" + name.upper()
    lookup = env if go_env in env else (*env, go_env)
    file_key = raw["file_key"] or name
    return SettingSpec(raw["help"], flag, env, lookup, file_key, raw["checks"], raw["secret"], raw["words"])


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
        if value in choices:
            return None
        close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.6)
        return f"must be one of {', '.join(choices)}" + (f" (did you mean {close[0]}?)" if close else "")

    check.choices = choices  # type: ignore[attr-defined]  # offered by shell completion
    return check


def port(value: Any) -> str | None:
    return None if 0 <= value <= 65535 else "must be a TCP port (0-65535)"


# --- parsing ------------------------------------------------------------------------------------

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def split_list(raw: str, *, words: bool = False) -> tuple[str, ...]:
    """A list given as text: comma-separated; with ``words`` also space-separated, as viper
    splits a string slice given as text."""
    parts = re.split(r"[,\s]+", raw) if words else raw.split(",")
    return tuple(part.strip() for part in parts if part.strip())


def _parse_text(raw: str, type_: Any, *, words: bool = False) -> Any:
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
        return split_list(raw, words=words)
    raise TypeError(f"unsupported setting type {type_!r}")


_TYPE_WORDS: dict[Any, str] = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}


def _coerce_file_value(value: Any, type_: Any, *, words: bool = False) -> Any:
    """Values from YAML arrive typed; accept the matching type, or text parsed like an env value."""
    if isinstance(value, str):
        return _parse_text(value, type_, words=words)
    if type_ is bool and isinstance(value, bool):
        return value
    if type_ is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if type_ is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if typing.get_origin(type_) is tuple and isinstance(value, list):
        return tuple(str(item) for item in value)
    if type_ is str and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"expected {_TYPE_WORDS.get(type_, 'text')}, got {value!r}")


def find_key(tree: Mapping[str, Any], key: str) -> tuple[bool, Any]:
    """``tree[key]``, with keys matched case-insensitively as viper matches them."""
    if key in tree:
        return True, tree[key]
    lowered = key.lower()
    for candidate, value in tree.items():
        if isinstance(candidate, str) and candidate.lower() == lowered:
            return True, value
    return False, None


def _lookup(tree: Mapping[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, Mapping):
            return False, None
        found, node = find_key(node, part)
        if not found:
            return False, None
    return True, node


def add_arguments(parser: argparse.ArgumentParser, cls: type[Any]) -> None:
    """Add one option per setting of ``cls``. Values stay unset unless given, so :func:`load`
    can tell a flag from a default."""
    group = parser.add_argument_group(cls.__doc__.splitlines()[0] if cls.__doc__ else cls.__name__)
    for field, spec, type_ in _fields(cls):
        help_text = f"{spec.help} [env {', '.join(spec.env)}; default {_shown_default(field.default, spec)}]"
        if type_ is bool:
            group.add_argument(
                spec.flag,
                dest=field.name,
                nargs="?",
                const="true",
                default=argparse.SUPPRESS,
                metavar="bool",
                help=help_text,
            )
        elif typing.get_origin(type_) is tuple:
            # Repeatable as cobra's StringArray (--queues a --queues b); each value may also list
            # several items.
            group.add_argument(
                spec.flag,
                dest=field.name,
                action="append",
                default=argparse.SUPPRESS,
                metavar="strings",
                help=help_text,
            )
        elif spec.secret:
            group.add_argument(
                spec.flag,
                dest=field.name,
                default=argparse.SUPPRESS,
                metavar=_metavar(type_, spec),
                help=f"{spec.help} (on a command line every local user sees it with ps: prefer the "
                f"environment or {spec.file_flag}) [env {', '.join(spec.env)}; default "
                f"{_shown_default(field.default, spec)}]",
            )
            group.add_argument(
                spec.file_flag,
                dest=spec.file_dest,
                default=argparse.SUPPRESS,
                metavar="path",
                help=f"File holding the value of {spec.flag}, read once at start (a trailing newline is "
                f"removed) [env {', '.join(spec.file_env)}]",
            )
        else:
            action = group.add_argument(
                spec.flag,
                dest=field.name,
                default=argparse.SUPPRESS,
                metavar=_metavar(type_, spec),
                help=help_text,
            )
            choices = [c for check in spec.checks for c in getattr(check, "choices", ())]
            if choices:
                action.completions = choices  # type: ignore[attr-defined]  # for shell completion


def _metavar(type_: Any, spec: SettingSpec) -> str:
    """The value's type as cobra names it (``--job-concurrency int``)."""
    if type_ is int:
        return "int"
    if type_ is float:
        return "seconds" if "second" in spec.help.lower() else "float"
    return "string"


def _shown_default(default: Any, spec: SettingSpec) -> str:
    """A default as one would type it: ``true``, ``""``, ``a,b``; never a Python repr."""
    if spec.secret:
        return "(secret)"
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, tuple):
        return ",".join(default) or '""'
    if isinstance(default, float):
        return f"{default:g}"
    if default is None or default == "":
        return '""'
    return str(default)


def add_settings_arguments(parser: argparse.ArgumentParser, classes: Iterable[type[Any]]) -> None:
    """:func:`add_arguments` for each distinct class, in order."""
    for cls in dict.fromkeys(classes):
        add_arguments(parser, cls)


def read_secret_file(path: str) -> str:
    """The text of a secret's file, its trailing newline removed."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a UTF-8 text file") from None
    return text


SecretReader = Callable[[str], str]


def _secret_origin(
    spec: SettingSpec, given: Mapping[str, Any], environ: Mapping[str, str]
) -> tuple[str, str, bool] | None:
    """Where a secret setting is given (flag, its file flag, environment, its file variable):
    ``(origin, raw value or path, is a path)``, or None when none of those holds it."""
    if spec.file_dest in given:
        return spec.file_flag, str(given[spec.file_dest]), True
    env_name = next((e for e in spec.lookup_env if e in environ), None)
    if env_name is not None:
        return env_name, environ[env_name], False
    file_env = next((e for e in spec.file_env if e in environ), None)
    if file_env is not None:
        return file_env, environ[file_env], True
    return None


def load(
    cls: type[T],
    *,
    args: argparse.Namespace | None = None,
    environ: Mapping[str, str] | None = None,
    file: Mapping[str, Any] | None = None,
    source_name: str = "config file",
    only_given: bool = False,
    read_secret: SecretReader = read_secret_file,
) -> T:
    """Resolve every setting of ``cls`` (flag > env > file > default; a secret's ``-file``
    flag and ``_FILE`` variable right after its flag and its variable) and run its checks;
    ``only_given``: check only the settings given by flag, environment or file."""
    environ = os.environ if environ is None else environ
    given = vars(args) if args is not None else {}
    values: dict[str, Any] = {}
    problems: list[str] = []
    for field, spec, type_ in _fields(cls):
        origin = None
        value: Any
        try:
            secret = _secret_origin(spec, given, environ) if spec.secret and field.name not in given else None
            if secret is not None:
                origin, raw, is_path = secret
                value = _parse_text((read_secret(raw) if is_path else raw).rstrip("\r\n"), type_)
            elif field.name in given:
                origin = spec.flag
                raw_flag = given[field.name]
                if isinstance(raw_flag, list):
                    value = tuple(item for part in raw_flag for item in _parse_text(str(part), type_))
                else:
                    value = _parse_text(str(raw_flag), type_)
                if spec.secret and isinstance(value, str):
                    value = value.rstrip("\r\n")
            elif (env_name := next((e for e in spec.lookup_env if e in environ), None)) is not None:
                origin = env_name
                value = _parse_text(environ[env_name], type_, words=spec.words)
            else:
                found, raw = _lookup(file or {}, spec.file_key)
                if found:
                    origin = f"{spec.file_key} in {source_name}"
                    value = _coerce_file_value(raw, type_, words=spec.words)
                    if spec.secret and isinstance(value, str):
                        value = value.rstrip("\r\n")
                elif spec.secret and (path := _lookup(file or {}, spec.file_key + "-file"))[0]:
                    origin = f"{spec.file_key}-file in {source_name}"
                    value = _parse_text(read_secret(str(path[1])).rstrip("\r\n"), type_)
                else:
                    continue
        except ValueError as exc:
            problems.append(f"{origin}: {exc}")
            continue
        values[field.name] = value
    for field, spec, _ in _fields(cls):
        if only_given and field.name not in values:
            continue
        value = values.get(field.name, field.default)
        for check in spec.checks:
            problem = check(value)
            if problem:
                shown = "a value not shown (secret)" if spec.secret and value else repr(value)
                problems.append(f"{spec.flag} ({', '.join(spec.env)}): {problem}, got {shown}")
    if problems:
        raise ConfigError(problems)
    return cls(**values)


DEFAULT_CONFIG_FILE = "opslevel.yaml"
"""Read from the working directory when ``-c`` is not given, as the Go runner does."""
STDIN_CONFIG = "."
"""``-c .`` reads the config file from standard input (the Go runner's convention)."""


def read_config_file(
    path: str | Path | None, *, stdin: Callable[[], str] | None = None
) -> tuple[dict[str, Any], str]:
    """Read the YAML config file given by ``-c``: ``None`` reads ``./opslevel.yaml`` when it
    exists, ``.`` reads standard input."""
    if path is None:
        default = Path(DEFAULT_CONFIG_FILE)
        if not default.is_file():
            return {}, "config file"
        path = default
    if str(path) == STDIN_CONFIG:
        return parse_config_text((stdin or sys.stdin.read)(), "<stdin>")
    file_path = Path(path)
    try:
        text = _read_trusted(file_path)
    except FileNotFoundError:
        raise ConfigError([f"{file_path}: config file not found"]) from None
    except OSError as exc:
        raise ConfigError([f"{file_path}: cannot read config file: {exc.strerror}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{file_path}: not a UTF-8 text file"]) from None
    return parse_config_text(text, str(file_path))


def _read_trusted(path: Path) -> str:
    """The text of a config file only this user (or root) can change: it says where the API
    token is sent, so one another user may write is refused, as ssh refuses such keys."""
    with open(path, "rb") as handle:
        info = os.fstat(handle.fileno())
        if info.st_uid not in (os.geteuid(), 0):
            raise ConfigError(
                [
                    f"{path}: the config file belongs to another user (uid {info.st_uid}), who could redirect "
                    "this runner and its token; refusing it (chown it, or pass your own with -c)"
                ]
            )
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise ConfigError(
                [
                    f"{path}: other users may write the config file (mode {stat.S_IMODE(info.st_mode):04o}); "
                    f"refusing it (chmod go-w {path})"
                ]
            )
        return handle.read().decode()


def parse_config_text(text: str, name: str) -> tuple[dict[str, Any], str]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{name}: not valid YAML: {exc}"]) from None
    if data is None:
        return {}, name
    if not isinstance(data, dict):
        raise ConfigError([f"{name}: expected a mapping at the top level"])
    return data, name


def unknown_keys(file: Mapping[str, Any], known: Iterable[str]) -> list[str]:
    """One warning per top-level key of the config file that no setting reads (viper ignores
    them silently), with the closest known key when one is near."""
    known_lower = {key.lower(): key for key in known}
    warnings = []
    for key in file:
        if str(key).lower() in known_lower:
            continue
        close = difflib.get_close_matches(str(key).lower(), list(known_lower), n=1, cutoff=0.75)
        hint = f"; did you mean {known_lower[close[0]]!r}?" if close else ""
        warnings.append(f"unknown key {key!r} is ignored{hint}")
    return warnings


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
        self._secret_files: dict[str, str] = {}

    def read_secret(self, path: str) -> str:
        """A secret's file, read once for the life of the process."""
        if path not in self._secret_files:
            self._secret_files[path] = read_secret_file(path)
        return self._secret_files[path]

    def get(self, cls: type[T]) -> T:
        if cls not in self._cache:
            self._cache[cls] = load(
                cls,
                args=self.args,
                environ=self.environ,
                file=self.file,
                source_name=self.source_name,
                read_secret=self.read_secret,
            )
        value: T = self._cache[cls]
        return value

    def origins(self, cls: type[Any]) -> dict[str, str]:
        """Where each given setting of ``cls`` was given, by field name: its flag, its environment
        variable, or its config-file key. Settings left at their default are absent."""
        given = vars(self.args) if self.args is not None else {}
        found: dict[str, str] = {}
        for field, spec, _ in _fields(cls):
            env_name = next((e for e in spec.lookup_env if e in self.environ), None)
            secret = _secret_origin(spec, given, self.environ) if spec.secret else None
            if field.name in given:
                found[field.name] = spec.flag
            elif secret is not None:
                found[field.name] = secret[0]
            elif env_name is not None:
                found[field.name] = env_name
            elif _lookup(self.file, spec.file_key)[0]:
                found[field.name] = f"{spec.file_key} in {self.source_name}"
        return found

    def given_secrets(self, *classes: type[Any]) -> list[str]:
        """The text of every secret setting of ``classes`` that is given (flag, environment or
        file), unchecked: what must never leave the process."""
        given = vars(self.args) if self.args is not None else {}
        secrets: list[str] = []
        for cls in classes:
            for field, spec, _ in _fields(cls):
                if not spec.secret:
                    continue
                if field.name in given:
                    secrets.append(str(given[field.name]))
                secrets.extend(self.environ[e] for e in spec.lookup_env if e in self.environ)
                paths = [self.environ[e] for e in spec.file_env if e in self.environ]
                if spec.file_dest in given:
                    paths.append(str(given[spec.file_dest]))
                found, raw = _lookup(self.file, spec.file_key + "-file")
                if found and raw is not None:
                    paths.append(str(raw))
                for path in paths:
                    with contextlib.suppress(ValueError):
                        secrets.append(self.read_secret(path))
                found, raw = _lookup(self.file, spec.file_key)
                if found and raw is not None:
                    secrets.append(str(raw))
        return [s.rstrip("\r\n") for s in secrets if s.rstrip("\r\n")]

    def secrets_on_command_line(self, *classes: type[Any]) -> list[str]:
        """The flags of the secret settings of ``classes`` given on the command line."""
        given = vars(self.args) if self.args is not None else {}
        return [
            spec.flag for cls in classes for f, spec, _ in _fields(cls) if spec.secret and f.name in given
        ]

    def check_given(self, *classes: type[Any]) -> None:
        """Check every setting of ``classes`` that is given, used or not by what runs: a value
        that is wrong is an error even where it would be ignored."""
        problems: list[str] = []
        for cls in dict.fromkeys(classes):
            try:
                load(
                    cls,
                    args=self.args,
                    environ=self.environ,
                    file=self.file,
                    source_name=self.source_name,
                    only_given=True,
                    read_secret=self.read_secret,
                )
            except ConfigError as exc:
                problems.extend(exc.problems)
        if problems:
            raise ConfigError(problems)

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
