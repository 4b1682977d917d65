"""HTTP/1.1 connections with h11, shared by the doubles that serve HTTP on loopback: reading one
request, and answering requests on a connection until it ends."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import h11
import trio


async def read_request(conn: h11.Connection, stream: trio.abc.Stream) -> tuple[h11.Request, bytes] | None:
    """The next request's head and whole body, or None once the client has closed, broken the
    connection or sent something that is not HTTP."""
    head: h11.Request | None = None
    body = bytearray()
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            return None
        if event is h11.NEED_DATA:
            try:
                data = await stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return None
            conn.receive_data(data)
            continue
        if isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            return head, bytes(body)
        else:
            return None


async def serve_requests(
    conn: h11.Connection,
    stream: trio.abc.Stream,
    answer: Callable[[h11.Request, bytes], Awaitable[bool]],
) -> None:
    """Have ``answer`` respond to each request on the connection in turn (it sends the whole
    response, or returns False to end the connection), until the client closes or breaks it, or
    either side must close."""
    try:
        while True:
            request = await read_request(conn, stream)
            if request is None or not await answer(*request):
                return
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return
