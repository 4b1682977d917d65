"""cattrs converters between attrs models and their wire dicts, with one error formatter.

:class:`WireConverter` is the converter every wire format uses: strict about value types (cattrs
would otherwise turn ``1`` into ``"1"`` and ``"no"`` into ``True``), camelCase keys by default,
and :func:`structure` reports every problem as ``<field path>: <reason>``.

For :mod:`trunner.models` there are two: ``api`` tolerates unknown keys (the server may add
fields), ``strict`` rejects them (a typo in a hand-written job file must not silently drop a field).
"""

from __future__ import annotations

import re
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.errors import IterableValidationError, IterableValidationNote
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from trunner.models import VariableScope

T = TypeVar("T")


class WireError(ValueError):
    """Data that does not fit its wire model; each of ``problems`` names a field path and what is
    wrong there. ``what`` (if given) names the data and prefixes the message."""

    def __init__(self, problems: list[str], *, what: str = "") -> None:
        self.what = what
        self.problems = problems
        joined = "; ".join(problems)
        super().__init__(f"{what}: {joined}" if what else joined)


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


_YAML_TYPE_NAMES = {
    "NoneType": "null",
    "str": "string",
    "int": "number",
    "float": "number",
    "bool": "boolean",
    "dict": "mapping",
    "list": "list",
}


def type_name(value: Any) -> str:
    """What a value read from YAML or JSON is, in those formats' words (``null``, not ``NoneType``)."""
    name = type(value).__name__
    return _YAML_TYPE_NAMES.get(name, name)


class WireConverter(cattrs.Converter):
    """A converter for one wire format.

    ``camel_case``: attrs classes map snake_case attributes to camelCase keys, and errors name
    fields as they are spelt on the wire. ``omit_none``: unstructuring leaves ``None`` values out.
    ``show_value`` names a wrong value in an error: by its type (the default, for payloads that may
    carry secrets) or ``repr`` (for the user's own configuration).
    """

    def __init__(
        self,
        *,
        forbid_extra_keys: bool,
        camel_case: bool = True,
        omit_none: bool = False,
        show_value: Callable[[Any], str] = type_name,
    ) -> None:
        super().__init__(forbid_extra_keys=forbid_extra_keys)
        self.camel_case = camel_case
        self.omit_none = omit_none
        self.show_value = show_value
        self.register_structure_hook(str, self._strict_text)
        self.register_structure_hook(bool, _strict_bool)
        self.register_structure_hook(int, _strict_int)
        self.register_structure_hook_func(_is_homogeneous_tuple, self._strict_sequence)
        if camel_case:
            self.register_structure_hook_factory(attrs.has, lambda cls: self.camel_structure_fn(cls))
            self.register_unstructure_hook_factory(attrs.has, lambda cls: self.camel_unstructure_fn(cls))

    def camel_structure_fn(self, cls: type[Any], **overrides: Any) -> Callable[[Any, Any], Any]:
        """A structure hook for ``cls`` reading camelCase keys; ``overrides`` as cattrs takes them."""
        return make_dict_structure_fn(
            cls, self, _cattrs_forbid_extra_keys=self.forbid_extra_keys, **(_renames(cls) | overrides)
        )

    def camel_unstructure_fn(self, cls: type[Any], **overrides: Any) -> Callable[[Any], dict[str, Any]]:
        generated = make_dict_unstructure_fn(cls, self, **(_renames(cls) | overrides))
        if not self.omit_none:
            return generated

        def unstructure(obj: Any) -> dict[str, Any]:
            return {key: value for key, value in generated(obj).items() if value is not None}

        return unstructure

    def _strict_text(self, value: Any, _: Any) -> str:
        if not isinstance(value, str):
            raise TypeError(f"expected a string, got {self.show_value(value)}")
        return value

    def _strict_sequence(self, value: Any, cls: Any) -> tuple[Any, ...]:
        if not isinstance(value, list | tuple):
            raise TypeError(f"expected a list, got {self.show_value(value)}")
        item_type = typing.get_args(cls)[0]
        items: list[Any] = []
        errors: list[Exception] = []
        for index, item in enumerate(value):
            try:
                items.append(self.structure(item, item_type))
            except Exception as exc:
                note = IterableValidationNote(f"index {index}", index, item_type)
                exc.__notes__ = [*getattr(exc, "__notes__", []), note]
                errors.append(exc)
        if errors:
            raise IterableValidationError("invalid items", errors, cls)
        return tuple(items)

    def problems(self, exc: Exception, *, root: str = "") -> list[str]:
        """Each problem behind a failed structure as ``<field path>: <reason>``; the path starts
        at ``root`` if given (a problem with the whole value is then ``<root>: <reason>``)."""
        if not isinstance(exc, cattrs.BaseValidationError):
            return [_at(root, str(exc))]
        located: list[str] = []
        for message in cattrs.transform_error(exc, format_exception=_describe):
            reason, _, path = message.rpartition(" @ ")
            path = path.removeprefix("$")
            if self.camel_case:
                path = _ATTRIBUTE.sub(lambda match: "." + camel(match[1]), path)
            located.append(
                f"{root}{path}: {reason}" if root else f"{path.lstrip('.') or '(top level)'}: {reason}"
            )
        return located


_ATTRIBUTE = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)")


def _renames(cls: type[Any]) -> dict[str, Any]:
    return {a.name: override(rename=camel(a.name)) for a in attrs.fields(cls) if "_" in a.name}


def _strict_bool(value: Any, _: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {value!r}")
    return value


def _strict_int(value: Any, _: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected a whole number, got {value!r}")
    return value


def _is_homogeneous_tuple(type_: Any) -> bool:
    return typing.get_origin(type_) is tuple and typing.get_args(type_)[1:] == (Ellipsis,)


def _describe(exc: BaseException, type_: type[Any] | None) -> str:
    if isinstance(exc, KeyError):
        return "required field missing"
    if isinstance(exc, cattrs.ForbiddenExtraKeysError):
        return f"unknown field(s): {', '.join(sorted(exc.extra_fields))}"
    if isinstance(exc, TypeError | ValueError) and str(exc):
        return str(exc)
    return f"invalid value (expected {getattr(type_, '__name__', type_)})"


def _at(root: str, text: str) -> str:
    return f"{root}: {text}" if root else text


def structure(
    data: Any, cls: type[T], *, what: str = "", root: str = "", converter: WireConverter | None = None
) -> T:
    """Structure the mapping ``data`` as ``cls`` (with :data:`api` unless ``converter`` is given);
    a :class:`WireError` reports every problem, the paths starting at ``root``."""
    conv = api if converter is None else converter
    if not isinstance(data, Mapping):
        raise WireError([_at(root, f"expected a mapping, got {conv.show_value(data)}")], what=what)
    try:
        return conv.structure(data, cls)
    except Exception as exc:  # cattrs raises ClassValidationError / ExceptionGroups
        raise WireError(conv.problems(exc, root=root), what=what) from None


def _scope(value: Any, _: Any) -> VariableScope:
    if value is None:
        return VariableScope.BOTH
    try:
        return VariableScope(value)
    except ValueError:
        raise ValueError(f"unknown scope {value!r} (expected 'init', 'main' or empty)") from None


def _models_converter(forbid_extra_keys: bool) -> WireConverter:
    conv = WireConverter(forbid_extra_keys=forbid_extra_keys)
    conv.register_structure_hook(VariableScope, _scope)
    return conv


api = _models_converter(forbid_extra_keys=False)
strict = _models_converter(forbid_extra_keys=True)


def unstructure(obj: Any) -> Any:
    return api.unstructure(obj)
