"""Connection-level limits that uvicorn's own h11 protocol lacks.

uvicorn 0.54 has no timeout for a request head (its keep-alive timeout starts only after
a first response, and stops at the first byte of the next request), no bound on open
connections (`limit_concurrency` answers 503 only once a whole head has arrived), and
h11 reads a request that carries both Content-Length and Transfer-Encoding by the
latter and keeps the connection, so a second request hidden in the body is served
(request smuggling, RFC 9112 section 6.3). This subclass adds the three:

- past `max_connections` open connections, a new one gets 503 and is closed;
- a connection whose request head has not fully arrived `head_timeout` seconds after
  it opened (or after the previous response ended) is closed;
- a request with both framing headers gets 400 and the connection is closed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

_TOO_MANY = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"retry-after: 1\r\n"
    b"connection: close\r\n"
    b"content-length: 36\r\n\r\n"
    b"the server has too many connections\n"
)


class _StrictConnection(h11.Connection):
    """h11's connection, refusing ambiguous framing and reporting each complete head."""

    on_head: Any = None

    def next_event(self) -> Any:
        event = super().next_event()
        if isinstance(event, h11.Request):
            names = {name.lower() for name, _ in event.headers}
            if b"content-length" in names and b"transfer-encoding" in names:
                raise h11.RemoteProtocolError(
                    "both Content-Length and Transfer-Encoding", error_status_hint=400
                )
            if self.on_head is not None:
                self.on_head()
        return event


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a connection limit, a head timeout and strict framing.

    Subclass it with other class attributes to change the limits (`guarded_protocol`).
    """

    max_connections = 256
    head_timeout = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        size = self.config.h11_max_incomplete_event_size
        conn = (
            _StrictConnection(h11.SERVER, size)
            if size is not None
            else _StrictConnection(h11.SERVER)
        )
        conn.on_head = self._head_arrived
        self.conn = conn
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self.logger.warning("Refused a connection: %d open", len(self.connections) - 1)
            transport.write(_TOO_MANY)
            transport.close()
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_arrived()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_timer()  # the next request's head, keep-alive wait included

    def _arm_head_timer(self) -> None:
        self._head_arrived()
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _head_arrived(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.cycle is None or self.cycle.response_complete:  # no request is being answered
            self.transport.close()


def guarded_protocol(max_connections: int, head_timeout: float) -> type[GuardedH11Protocol]:
    """The protocol class with these limits (uvicorn takes a class, not an instance)."""
    return type(
        "GuardedH11Protocol",
        (GuardedH11Protocol,),
        {"max_connections": max_connections, "head_timeout": head_timeout},
    )
