"""cattrs converters between wire dicts (camelCase JSON/YAML) and :mod:`trunner.models`.

Two converters: ``api`` tolerates unknown keys (the server may add fields), ``strict`` rejects
them (a typo in a hand-written job file must not silently drop a field).
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.errors import IterableValidationError, IterableValidationNote
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from trunner.models import JobOutcome, OutcomeVariable, RunnerJob, VariableScope

T = TypeVar("T")


class WireError(ValueError):
    """A payload that does not match its wire model; ``problems`` name each field."""

    def __init__(self, what: str, problems: list[str]) -> None:
        self.what = what
        self.problems = problems
        super().__init__(f"{what}: " + "; ".join(problems))


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _strict_str(value: Any, _: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _strict_bool(value: Any, _: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {value!r}")
    return value


def _scope(value: Any, _: Any) -> VariableScope:
    if value is None:
        return VariableScope.BOTH
    try:
        return VariableScope(value)
    except ValueError:
        raise ValueError(f"unknown scope {value!r} (expected 'init', 'main' or empty)") from None


def _make(forbid_extra_keys: bool) -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=forbid_extra_keys)
    conv.register_structure_hook(str, _strict_str)
    conv.register_structure_hook(bool, _strict_bool)
    conv.register_structure_hook(VariableScope, _scope)

    def strict_sequence(value: Any, cls: Any) -> tuple[Any, ...]:
        if not isinstance(value, list | tuple):
            raise TypeError(f"expected a list, got {type(value).__name__}")
        item_type = typing.get_args(cls)[0]
        items: list[Any] = []
        errors: list[Exception] = []
        for index, item in enumerate(value):
            try:
                items.append(conv.structure(item, item_type))
            except Exception as exc:
                note = IterableValidationNote(f"index {index}", index, item_type)
                exc.__notes__ = [*getattr(exc, "__notes__", []), note]
                errors.append(exc)
        if errors:
            raise IterableValidationError("invalid items", errors, cls)
        return tuple(items)

    def is_homogeneous_tuple(type_: Any) -> bool:
        origin: Any = typing.get_origin(type_)
        return origin is tuple and typing.get_args(type_)[1:] == (Ellipsis,)

    conv.register_structure_hook_func(is_homogeneous_tuple, strict_sequence)

    def camel_hooks(cls: type[Any]) -> None:
        renames: dict[str, Any] = {
            a.name: override(rename=_camel(a.name)) for a in attrs.fields(cls) if "_" in a.name
        }
        conv.register_structure_hook(
            cls, make_dict_structure_fn(cls, conv, _cattrs_forbid_extra_keys=forbid_extra_keys, **renames)
        )
        conv.register_unstructure_hook(cls, make_dict_unstructure_fn(cls, conv, **renames))

    camel_hooks(RunnerJob)
    camel_hooks(JobOutcome)
    camel_hooks(OutcomeVariable)
    return conv


api = _make(forbid_extra_keys=False)
strict = _make(forbid_extra_keys=True)


def structure(data: Any, cls: type[T], *, what: str, converter: cattrs.Converter = api) -> T:
    """Structure ``data`` as ``cls``; every problem is reported as ``<field path>: <reason>``."""
    if not isinstance(data, Mapping):
        raise WireError(what, [f"expected a mapping, got {type(data).__name__}"])
    try:
        return converter.structure(data, cls)
    except Exception as exc:  # cattrs raises ClassValidationError / ExceptionGroups
        if isinstance(exc, cattrs.BaseValidationError):
            problems = [_tidy(msg) for msg in cattrs.transform_error(exc, format_exception=_describe)]
        else:
            problems = [str(exc)]
        raise WireError(what, problems) from None


def _describe(exc: BaseException, type_: type[Any] | None) -> str:
    if isinstance(exc, KeyError):
        return "required field missing"
    if isinstance(exc, cattrs.ForbiddenExtraKeysError):
        return f"unknown field(s): {', '.join(sorted(exc.extra_fields))}"
    if isinstance(exc, TypeError | ValueError) and str(exc):
        return str(exc)
    name = getattr(type_, "__name__", str(type_))
    return f"invalid value (expected {name})"


def _tidy(message: str) -> str:
    text, _, path = message.rpartition(" @ ")
    path = path.removeprefix("$").lstrip(".") or "(top level)"
    return f"{path}: {text}"


def unstructure(obj: Any) -> Any:
    return api.unstructure(obj)
