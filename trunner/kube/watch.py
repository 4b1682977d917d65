"""A watch: the API server's stream of JSON events about a collection, one per line."""

from __future__ import annotations

import enum
import json
from collections.abc import AsyncIterator
from typing import Any

import attrs
import httpx

from trunner.kube.errors import (
    InternalError,
    ResponseTooLarge,
    StatusParseError,
    TransportError,
    error_for_status,
    parse_status,
    transport_error,
)


class WatchEventType(enum.Enum):
    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"
    BOOKMARK = "BOOKMARK"


@attrs.frozen
class WatchEvent:
    """One watch event. ``ERROR`` events are raised as :class:`~trunner.kube.errors.StatusError`
    (an ``Expired`` for 410) instead of being returned."""

    type: WatchEventType
    object: dict[str, Any]

    @property
    def resource_version(self) -> str:
        metadata = self.object.get("metadata") or {}
        value = metadata.get("resourceVersion", "") if isinstance(metadata, dict) else ""
        return str(value)


MAX_EVENT_BYTES = 16 * 1024 * 1024
"""The longest watch event line read (etcd holds objects of at most 1.5 MiB)."""


class WatchEvents:
    """Async iterator over the JSON lines of a watch response, each at most ``MAX_EVENT_BYTES``."""

    def __init__(self, response: httpx.Response, path: str, read_timeout: float) -> None:
        self._chunks = response.aiter_bytes()
        self._buffer = bytearray()
        self._path = path
        self._read_timeout = read_timeout

    def __aiter__(self) -> WatchEvents:
        return self

    async def __anext__(self) -> WatchEvent:
        while True:
            line = await self._line()
            if line.strip():
                return parse_event(line.decode("utf-8", "replace"), self._path)

    async def _line(self) -> bytes:
        searched = 0
        while True:
            end = self._buffer.find(b"\n", searched)
            if end < 0:
                searched = len(self._buffer)
            if end > MAX_EVENT_BYTES or searched > MAX_EVENT_BYTES:
                raise ResponseTooLarge(f"watch {self._path}: an event is larger than {MAX_EVENT_BYTES} bytes")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                return line
            try:
                chunk = await self._chunks.__anext__()
            except StopAsyncIteration:
                if not self._buffer:
                    raise
                line = bytes(self._buffer)
                self._buffer.clear()
                return line
            except httpx.ReadTimeout:
                raise TransportError(f"watch {self._path}: no data for {self._read_timeout:g} s") from None
            except httpx.HTTPError as exc:
                raise transport_error("GET", self._path, exc) from None
            self._buffer += chunk


def watch_events(response: httpx.Response, path: str, read_timeout: float) -> AsyncIterator[WatchEvent]:
    return WatchEvents(response, path, read_timeout)


def parse_event(line: str, path: str) -> WatchEvent:
    try:
        raw = json.loads(line)
    except json.JSONDecodeError:
        raise TransportError(f"watch {path}: event is not JSON: {line[:200]!r}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("object"), dict):
        raise TransportError(f"watch {path}: event without an object: {line[:200]!r}")
    kind = raw.get("type")
    if kind == "ERROR":
        try:
            status = parse_status(raw["object"])
        except StatusParseError as exc:
            raise InternalError(500, parse_status({"message": f"watch error event: {exc}"})) from None
        raise error_for_status(status.code or 500, status)
    try:
        event_type = WatchEventType(kind)
    except ValueError:
        raise TransportError(f"watch {path}: unknown event type {kind!r}") from None
    return WatchEvent(event_type, raw["object"])
