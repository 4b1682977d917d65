"""Query parameters of an API request, as the API server reads them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

ParamValue = str | int | float | bool | Sequence[str]
Params = Mapping[str, ParamValue]


def query_items(params: Params | None) -> tuple[tuple[str, str], ...]:
    items: list[tuple[str, str]] = []
    for key, value in (params or {}).items():
        if isinstance(value, bool):
            items.append((key, "true" if value else "false"))
        elif isinstance(value, str | int | float):
            items.append((key, str(value)))
        else:
            items.extend((key, str(part)) for part in value)
    return tuple(items)
