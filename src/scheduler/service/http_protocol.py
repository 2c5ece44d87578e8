"""The HTTP/1.1 connection handler of the scheduler service: uvicorn's h11
protocol with the time and count limits a hostile neighbour calls for.

uvicorn times out idle keep-alive connections but not a request whose
headers never finish, and its concurrency limit counts connections, so a few
hundred connections that send half a request and wait shut every client out.
Nor does it bound the time a body takes, so a few hundred sign-ins that send
one byte every 20 s hold their requests open for as long as they like. Here

- a request's headers must arrive within ``HEADER_TIMEOUT_SECONDS`` of its
  first byte (or of the connection, for the first request);
- the whole request, headers and body, must arrive within ``request_deadline``
  of its first byte: a few seconds for a sign-in, and for an upload a floor
  plus its size at the slowest rate accepted. Past it, the request is answered
  408 (if its answer has not begun) and the connection closes, with one line
  in the log. A request answered before its body is in (refused, say) has
  ``ANSWERED_BODY_SECONDS`` more for the rest;
- when ``MAX_CONNECTIONS`` are open a new connection closes the oldest one that
  has no request in progress.
"""

import asyncio
import logging
import time

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("taskfleet.service")

#: Seconds a request's headers may take to arrive.
HEADER_TIMEOUT_SECONDS = 10.0

#: Seconds a whole sign-in (``POST /login``: at most 4 KiB) may take to arrive.
LOGIN_DEADLINE_SECONDS = 5.0

#: Any other request with a body may take this many seconds to arrive whole,
#: plus the time its body takes at the slowest rate accepted.
DEADLINE_FLOOR_SECONDS = 30.0
SLOWEST_BYTES_PER_SECOND = 64 * 1024

#: Seconds the rest of a body may take once its request has been answered (a
#: refusal, say): no one reads it, so no one need wait long for it.
ANSWERED_BODY_SECONDS = 5.0

#: The key in a request's ``scope["state"]`` set when it was cut off (it was
#: logged already: the app's disconnect needs no second line).
CUT_OFF = "cut_off"

#: Connections kept open at once.
MAX_CONNECTIONS = 512


def request_deadline(path: str, body_bytes: int) -> float:
    """Seconds a request may take to arrive whole, headers and body, from its
    first byte: ``body_bytes`` is its Content-Length (or, for a chunked body,
    what has arrived so far, so that it never averages below the rate)."""
    if path == "/login":
        return LOGIN_DEADLINE_SECONDS
    return DEADLINE_FLOOR_SECONDS + body_bytes / SLOWEST_BYTES_PER_SECOND


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header timeout, a deadline for each whole
    request, and idle-first eviction."""

    _header_timer: asyncio.TimerHandle | None = None
    _deadline_timer: asyncio.TimerHandle | None = None
    _opened_at = 0.0
    _request_began = 0.0  # the monotonic time of the current request's first byte
    _body_bytes = 0  # bytes that arrived after the current request's headers
    _answered_at = 0.0  # when the current request was answered before its body was in

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._opened_at = time.monotonic()
        self._arm_header_timer()
        if len(self.connections) > MAX_CONNECTIONS:
            self._evict_one()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        self._disarm_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:
            self._arm_header_timer()  # a new request begins (or goes on arriving)
        elif self.conn.their_state is h11.SEND_BODY:
            self._body_bytes += len(data)
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm_header_timer()  # its headers are in
        if self.conn.their_state is h11.SEND_BODY:
            if self._deadline_timer is None:
                self._arm_deadline()  # its body is to come
        else:
            self._disarm_deadline()  # no body, or all of it is in

    def waiting_for_request(self) -> bool:
        """True when no request is in progress on this connection."""
        return self.conn.their_state is h11.IDLE and (
            self.cycle is None or self.cycle.response_complete
        )

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._request_began = time.monotonic()
            self._body_bytes = 0
            self._answered_at = 0.0
            self._header_timer = self.loop.call_later(HEADER_TIMEOUT_SECONDS, self._too_slow)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        if self.waiting_for_request() and not self.transport.is_closing():
            self.transport.close()

    def on_response_complete(self) -> None:
        if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
            self._answered_at = time.monotonic()  # its body goes on arriving, unread
            self._disarm_deadline()
            self._arm_deadline()
        super().on_response_complete()

    def _deadline(self) -> float:
        """The monotonic time by which the current request must have arrived whole."""
        if self._answered_at:
            return self._answered_at + ANSWERED_BODY_SECONDS
        length = None
        for name, value in self.headers:
            if name == b"content-length":
                length = int(value)  # h11 has checked it is a number
        body_bytes = self._body_bytes if length is None else length
        return self._request_began + request_deadline(self.scope["path"], body_bytes)

    def _arm_deadline(self) -> None:
        delay = max(0.0, self._deadline() - time.monotonic())
        self._deadline_timer = self.loop.call_later(delay, self._past_deadline)

    def _disarm_deadline(self) -> None:
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None

    def _past_deadline(self) -> None:
        self._deadline_timer = None
        if self.conn.their_state is not h11.SEND_BODY or self.transport.is_closing():
            return
        if time.monotonic() < self._deadline():
            self._arm_deadline()  # a chunked body that kept coming moved its deadline
            return
        self._cut_off()

    def _cut_off(self) -> None:
        """End the current request: answer 408 if its answer has not begun, and close."""
        scope, cycle = self.scope, self.cycle
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        log.warning(
            "request cut off: %s %s from %s did not arrive whole within %.0f s (%d body bytes)",
            scope["method"],
            scope["path"],
            client,
            time.monotonic() - self._request_began,
            self._body_bytes,
        )
        scope.setdefault("state", {})[CUT_OFF] = True
        if cycle is not None and not cycle.response_started:
            cycle.response_started = True  # the app's answer, if any comes, is not sent
            body = b'{"error": "the request did not arrive in time"}'
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ]
            try:
                for event in (h11.Response(status_code=408, headers=headers), h11.Data(body)):
                    self.transport.write(self.conn.send(event) or b"")
                self.transport.write(self.conn.send(h11.EndOfMessage()) or b"")
            except h11.LocalProtocolError:
                pass  # the state machine will not have it: closing is answer enough
        if cycle is not None:
            cycle.disconnected = True  # the app's receive() now says so
            cycle.message_event.set()
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
