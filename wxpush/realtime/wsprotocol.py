"""uvicorn's WebSocket protocol, made lean for tens of thousands of idle waiting sockets.

**Keep-alive: one timer, pings in small batches.** uvicorn pings each socket from its own
timers (one to ping, one to wait for the pong, a random payload each time). Waiting browsers
are idle for minutes, so at 10,000 sockets that bookkeeping, and an event-loop wake-up per
ping and per pong, cost more CPU than everything else an idle server does. Here one timer per
server ticks every :data:`TICK` seconds and pings the sockets that are due, so that each
socket is pinged once per interval (``--ws-ping-interval``, which must stay
under the 60 s idle timeout of common proxies); the pongs come back together and are read in
few wake-ups. A socket that has not answered the previous ping by the time the next one is due
(one whole interval) is closed with 1011, as uvicorn does after its ping timeout.

**Memory.** An idle socket should cost little more than its transport. uvicorn gives each one
an ``asyncio.Queue`` (four deques) and an ``asyncio.Event`` for ASGI messages and write flow,
and keeps the parsed handshake; here the first two are small equivalents with just the methods
uvicorn calls, and the handshake is dropped once answered.

**Logs.** uvicorn writes every handshake at INFO with the path, and a scene socket's path
holds the scene's id (a bearer secret); at DEBUG, websockets writes the request and every
frame (a login's tokens among them). Those lines are kept out (warnings and errors still go
through); the app's access log records each socket by its route (:mod:`wxpush.web.access`).

:class:`WaitingSocketProtocol` is uvicorn's sans-I/O ``websockets`` protocol with only these
changed; ``wxpush serve`` passes it as ``ws=``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame
from websockets.protocol import Protocol, State

TICK = 0.5  # seconds between two batches of pings
PING = b"\x89\x00"  # a server's ping frame: FIN, opcode 9, unmasked, empty payload

# uvicorn's protocol and websockets' log handshakes at INFO (below INFO, each connection
# and frame) and failures at ERROR; this logger lets only warnings and errors through.
logger = logging.getLogger(__name__)
logger.setLevel(logging.WARNING)


class Keepalive:
    """Pings every registered socket once per ``interval`` seconds, from one timer.

    Sockets wait in a queue in the order they are due (all intervals are equal, so appending
    keeps it sorted); each tick pings those whose time has come, at most :data:`TICK` late.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        self._loop = loop
        self._interval = interval
        self._queue: deque[tuple[float, WaitingSocketProtocol]] = deque()  # (due, socket)
        self._timer: asyncio.TimerHandle | None = None

    def add(self, socket: WaitingSocketProtocol) -> None:
        socket.pinging = True
        self._queue.append((self._loop.time() + self._interval, socket))
        if self._timer is None:
            self._timer = self._loop.call_later(TICK, self._tick)

    def _tick(self) -> None:
        queue, now = self._queue, self._loop.time()
        next_due = now + self._interval
        while queue and queue[0][0] <= now:
            _, socket = queue.popleft()
            if socket.pinging and socket.ping():
                queue.append((next_due, socket))
        self._timer = self._loop.call_later(TICK, self._tick) if queue else None


class WaitingSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O ``websockets`` protocol, kept alive by the server's :class:`Keepalive`."""

    pinging = False  # registered with the keep-alive and not yet stopped
    answered = True  # the last ping got its pong

    def __init__(self, config: Any, server_state: Any, app_state: Any, _loop: Any = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.logger = self.conn.logger = logger
        self.conn.debug = False  # websockets would log the request line and every frame
        self.server_state = server_state
        self.queue = _Inbox()  # type: ignore[assignment]
        self.writable = _Flag()  # type: ignore[assignment]
        self.writable.set()

    def start_keepalive(self) -> None:
        # Called once the handshake is answered: the parsed request and response are done with.
        self.request = self.response = None  # type: ignore[assignment]
        _forget_handshake(self.conn)
        if self.ping_interval:
            _keepalive(self).add(self)

    def stop_keepalive(self) -> None:
        self.pinging = False  # dropped from the queue when its turn comes

    def handle_pong(self, event: Frame) -> None:
        self.answered = True

    def ping(self) -> bool:
        """Ping the client; ``False`` once the socket is closing or has stopped answering."""
        if self.close_sent or self.transport.is_closing() or self.conn.state is not State.OPEN:
            return False
        if not self.answered:
            self.keepalive_timeout()
            return False
        self.answered = False
        self.transport.write(PING)
        return True


def _forget_handshake(conn: Any) -> None:
    """Let go of the parsed handshake request (its headers: 2 KiB a socket) that websockets'
    parser keeps for the connection's whole life, as a local of its generator, once it has
    moved on to frames: a fresh frame parser takes over. Only with nothing read yet, so that
    no frame is half-parsed by the old one (a client sends nothing before the 101 it has not
    yet read)."""
    if conn.state is State.OPEN and not conn.reader.buffer and not conn.reader.eof:
        conn.parser = Protocol.parse(conn)
        next(conn.parser)  # started: waiting for the first frame


def _keepalive(protocol: WaitingSocketProtocol) -> Keepalive:
    """The server's one :class:`Keepalive`, kept on the state uvicorn shares among protocols."""
    holder: Any = protocol.server_state  # one per server (worker process)
    keepalive: Keepalive | None = getattr(holder, "wxpush_keepalive", None)
    if keepalive is None:
        assert protocol.ping_interval
        keepalive = Keepalive(protocol.loop, protocol.ping_interval)
        holder.wxpush_keepalive = keepalive
    return keepalive


class _Inbox:
    """The part of ``asyncio.Queue`` uvicorn's protocol uses: ``put_nowait``, ``get``, ``empty``."""

    __slots__ = ("_getters", "_items")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._getters: list[asyncio.Future[None]] = []

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        _wake_one(self._getters)

    def empty(self) -> bool:
        return not self._items

    async def get(self) -> Any:
        while not self._items:
            await _wait(self._getters)
        return self._items.pop(0)


class _Flag:
    """The part of ``asyncio.Event`` uvicorn's protocol uses: ``set``, ``clear``, ``wait``."""

    __slots__ = ("_value", "_waiters")

    def __init__(self) -> None:
        self._value = False
        self._waiters: list[asyncio.Future[None]] = []

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        self._value = True
        while self._waiters:
            _wake_one(self._waiters)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> bool:
        while not self._value:
            await _wait(self._waiters)
        return True


async def _wait(waiters: list[asyncio.Future[None]]) -> None:
    future = asyncio.get_running_loop().create_future()
    waiters.append(future)
    try:
        await future
    finally:
        if future in waiters:
            waiters.remove(future)


def _wake_one(waiters: list[asyncio.Future[None]]) -> None:
    while waiters:
        future = waiters.pop(0)
        if not future.done():
            future.set_result(None)
            return
