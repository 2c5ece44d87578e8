"""The HTTP/1.1 connection handler of the scheduler service: uvicorn's h11
protocol with the time and count limits a hostile neighbour calls for.

uvicorn times out idle keep-alive connections but not a request whose
headers never finish, and its concurrency limit counts connections, so a few
hundred connections that send half a request and wait shut every client out.
Here a request's headers must arrive within ``HEADER_TIMEOUT_SECONDS`` of
its first byte (or of the connection, for the first request), and when
``MAX_CONNECTIONS`` are open a new connection closes the oldest one that has
no request in progress.
"""

import asyncio
import time

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

#: Seconds a request's headers may take to arrive.
HEADER_TIMEOUT_SECONDS = 10.0

#: Connections kept open at once.
MAX_CONNECTIONS = 512


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header timeout and idle-first eviction."""

    _header_timer: asyncio.TimerHandle | None = None
    _opened_at = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._opened_at = time.monotonic()
        self._arm_header_timer()
        if len(self.connections) > MAX_CONNECTIONS:
            self._evict_one()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:
            self._arm_header_timer()  # a new request begins (or goes on arriving)
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm_header_timer()  # its headers are in

    def waiting_for_request(self) -> bool:
        """True when no request is in progress on this connection."""
        return self.conn.their_state is h11.IDLE and (
            self.cycle is None or self.cycle.response_complete
        )

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(HEADER_TIMEOUT_SECONDS, self._too_slow)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        if self.waiting_for_request() and not self.transport.is_closing():
            self.transport.close()

    def _evict_one(self) -> None:
        """Close the oldest connection with no request in progress (this one if none)."""
        idle = [
            connection
            for connection in self.connections
            if isinstance(connection, GuardedH11Protocol)
            and connection.waiting_for_request()
            and not connection.transport.is_closing()  # evicted already, not yet gone
        ]
        victim = min(idle, key=lambda c: c._opened_at, default=self)
        victim.transport.close()
