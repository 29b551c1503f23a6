"""The service's connection layer on uvicorn's h11 protocol: the one part of the service that
uvicorn cannot be configured to do, and the one module that relies on its internals.

Written against uvicorn 0.54.0 and h11 0.16.0 (pinned in requirements-base.txt, listed in
ppdet_dac/private_apis.py; tests/deploy/test_serving_limits.py exercises every override).
Each override and why:

* ``ServingConfig``: uvicorn's Config has no options for the ones below; it carries them.
* a connection cap that answers: uvicorn's ``limit_concurrency`` answers a bare 503 *per
  request*; beyond ``max_connections`` open connections a connection here gets the
  protocol's busy JSON (err_no 1) after its body is drained (``body_timeout``), then closed.
* a header timeout: uvicorn only times out idle keep-alive connections and restarts that
  timer on every byte received, so a client trickling one header byte at a time holds its
  connection forever; here a request header must be complete within ``timeout_keep_alive``
  seconds of connecting or of the previous answer (uvicorn has no header/idle-before-first-
  byte timeout).
* a shutdown that does not wait for uploads: on SIGTERM uvicorn waits for a request whose body
  is still arriving (up to the whole grace period); here such a connection is answered busy
  (503, err_no 1) and closed at once, through ``H11Protocol``'s ``cycle`` / ``conn`` attributes
  (uvicorn has no public way to end one request of a connection).
"""

import asyncio
import contextlib
import functools

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

# scope key set when ServingProtocol closes a connection whose request is unfinished: the reason
CUT_OFF = "dac_detr.cut_off"


class ServingConfig(uvicorn.Config):
    """uvicorn's Config plus max_connections (per worker), the body limit and body timeout that
    the answer to an over-limit connection drains within, and ``busy_json(message)``: the body
    bytes of the busy answers this layer sends by itself (the service's answer format)."""

    def __init__(
        self,
        app,
        max_connections=256,
        max_body_bytes=20 << 20,
        body_timeout=10.0,
        busy_json=None,
        **kwargs,
    ):
        super().__init__(app, **kwargs)
        self.max_connections, self.max_body_bytes = int(max_connections), int(max_body_bytes)
        self.body_timeout = float(body_timeout)
        self.busy_json = busy_json


async def _refuse_connection(config, scope, receive, send):
    """ASGI app of a connection beyond max_connections: 503 busy (err_no 1), then closed."""
    if scope["type"] != "http":
        return
    received, more = 0, True
    with contextlib.suppress(TimeoutError):  # a stalled upload does not keep its slot
        async with asyncio.timeout(config.body_timeout):
            while more and received <= config.max_body_bytes:
                message = await receive()
                received += len(message.get("body", b""))
                more = message["type"] == "http.request" and message.get("more_body", False)
    body = config.busy_json(
        f"server busy: more than {config.max_connections} open connections "
        "(--max_connections); retry later"
    )
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                (b"retry-after", b"1"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class ServingProtocol(H11Protocol):
    """uvicorn's h11 protocol with two additions: a connection beyond ``max_connections`` gets
    a busy answer and is closed; a connection without a complete request header within
    ``timeout_keep_alive`` seconds of connecting or of its last answer is closed (uvicorn alone
    only times out idle keep-alive connections, and restarts that timer on every byte)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._header_timer = None

    def connection_made(self, transport):
        super().connection_made(transport)
        if len(self.connections) > self.config.max_connections:
            self.app = functools.partial(_refuse_connection, self.config)
        self._arm_header_timer()

    def _arm_header_timer(self):
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.timeout_keep_alive, self._header_timeout)

    def _cancel_header_timer(self):
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self):
        self._header_timer = None
        if self.conn.their_state is h11.IDLE:  # still no complete request header
            self.timeout_keep_alive_handler()

    def data_received(self, data):
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._cancel_header_timer()

    def on_response_complete(self):
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_header_timer()

    def connection_lost(self, exc):
        self._cancel_header_timer()
        super().connection_lost(exc)

    def shutdown(self):
        """Graceful shutdown (SIGINT/SIGTERM): as uvicorn's (idle connections closed, answers in
        progress finished), except that a connection still receiving its request body is
        answered busy (503, err_no 1) and closed at once instead of being waited for.

        Written against uvicorn 0.54.0's H11Protocol internals (``self.cycle`` and its
        ``response_started`` / ``response_complete`` / ``disconnected`` flags, ``self.conn``):
        uvicorn has no public way to end one request of a connection."""
        cycle = self.cycle
        if (
            cycle is None
            or cycle.response_started
            or cycle.disconnected
            or self.conn.their_state is not h11.SEND_BODY
            or self.transport.is_closing()
        ):
            super().shutdown()
            return
        body = self.config.busy_json(
            "server shutting down before the request body arrived; retry later"
        )
        for event in (
            h11.Response(
                status_code=503,
                reason=b"Service Unavailable",
                headers=[
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            ),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event))
        # the app, waiting for the body, gets a disconnect and its own answer is dropped
        cycle.scope[CUT_OFF] = "request body incomplete at shutdown; answered busy and closed"
        cycle.response_started = cycle.response_complete = cycle.disconnected = True
        cycle.message_event.set()
        self.transport.close()
