"""The service's uvicorn server under faults: a SIGTERM drain with a deadline, and a header read timeout.

SIGTERM: `/healthz` turns 503 and the server keeps answering until nothing has been in flight for
QUIET_S (requests still in socket buffers get read in that time) or `drain_timeout_s` passes. At the
deadline every request still unanswered is cancelled by DrainGate and answered with a JSON 503
(never uvicorn's plain-text 500 of a cancelled task), and the process exits within about a second;
uvicorn's own graceful timeout is set short, since nothing is left for it to wait on.

Headers: uvicorn's h11 protocol has no timeout before a request's headers are complete (its
keep-alive timer runs only between requests), so a client that sends half a request line holds its
connection forever. HeaderTimeoutH11 gives each request `header_timeout_s` from the connection's
start (or the previous response's end) to finish its headers, then answers 408 and closes.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from agrl.serve.prometheus import Metrics


def error_body(message: str, error_type: str) -> bytes:
    return json.dumps({"error": message, "error_type": error_type}).encode()


class Drain:
    """The requests being answered, and whether the drain deadline has passed."""

    def __init__(self) -> None:
        self.expired = False
        self.active: set[asyncio.Task] = set()

    def expire(self) -> None:
        self.expired = True
        for task in list(self.active):
            task.cancel(msg="drain deadline")


class DrainGate:
    """ASGI middleware: at the drain deadline, cancel what is still running and answer it 503 (JSON)."""

    def __init__(self, app, drain: Drain):
        self.app, self.drain = app, drain

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def watch(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        task, drain = asyncio.current_task(), self.drain
        if not drain.expired:
            drain.active.add(task)
            try:
                return await self.app(scope, receive, watch)
            except asyncio.CancelledError:
                if not drain.expired or started:  # not ours, or too late to answer: let it go
                    raise
                task.uncancel()
            finally:
                drain.active.discard(task)
        body = error_body("server: shutting down; the request was not finished within the drain timeout",
                          "Unhealthy")
        await send({"type": "http.response.start", "status": 503,
                    "headers": [(b"content-type", b"application/json"), (b"connection", b"close"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class HeaderTimeoutH11(H11Protocol):
    """uvicorn's h11 protocol with a deadline for a request's headers (408, then close)."""

    header_timeout_s = 10.0
    _timer: asyncio.TimerHandle | None = None
    _got_bytes = False

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        self._got_bytes = self._got_bytes or self._timer is not None
        super().data_received(data)

    def handle_events(self) -> None:
        before = self.cycle
        super().handle_events()
        if self.cycle is not before:  # a request's headers are complete: the app's timeouts take over
            self._disarm()

    def on_response_complete(self) -> None:
        self._arm()  # first: a pipelined request handled below disarms it again
        super().on_response_complete()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._got_bytes = False
        self._timer = self.loop.call_later(self.header_timeout_s, self._expire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        if self.transport.is_closing() or (self.cycle is not None and not self.cycle.response_complete):
            return
        if self._got_bytes:  # half a request: say why (h11 cannot frame a response to no request)
            body = error_body(f"headers: not received within {self.header_timeout_s:g} s", "Validation")
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                                 b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        try:
            self.conn.send(h11.ConnectionClosed())
        except h11.LocalProtocolError:
            pass
        self.transport.close()


def header_timeout_protocol(seconds: float) -> type[HeaderTimeoutH11]:
    return type("HeaderTimeoutH11", (HeaderTimeoutH11,), {"header_timeout_s": seconds})


class DrainingServer(uvicorn.Server):
    """uvicorn.Server whose first SIGTERM drains (see the module docstring); a second signal, or
    SIGINT, stops at once."""

    QUIET_S = 0.5
    ANSWER_S = 1.0  # after the deadline: time for the 503s to go out

    def __init__(self, config, metrics: Metrics, drain: Drain, drain_timeout_s: float):
        super().__init__(config)
        self.metrics, self.drain, self.drain_timeout_s = metrics, drain, drain_timeout_s
        self.deadline: float | None = None
        self.quiet_since: float | None = None

    def handle_exit(self, sig, frame) -> None:
        if sig != signal.SIGTERM or self.metrics.draining:
            return super().handle_exit(sig, frame)
        self.metrics.draining = True
        self.deadline = time.monotonic() + self.drain_timeout_s
        return None

    async def on_tick(self, counter: int) -> bool:
        if await super().on_tick(counter):
            return True
        if self.deadline is None:
            return False
        now = time.monotonic()
        busy = self.metrics.inflight > 0
        self.quiet_since = None if busy else (self.quiet_since or now)
        if self.quiet_since is not None and now - self.quiet_since >= self.QUIET_S:
            return True
        if now >= self.deadline and not self.drain.expired:
            self.drain.expire()
        return now >= self.deadline + self.ANSWER_S
