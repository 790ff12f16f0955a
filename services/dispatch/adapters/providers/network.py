"""httpcore's network layer on asyncio's own transports, for the providers' connections.

httpcore (httpx's HTTP engine) reaches the network through a *network backend*, a documented
extension point (https://www.encode.io/httpcore/network-backends/). Its default on asyncio goes
through anyio: a cancel scope with its own timer around every read and write, a checkpoint (an
extra turn of the event loop) per send, and a ``poll()`` system call each time an idle
connection is taken. At hundreds of sends per second that is a quarter of the CPU of a send.

:class:`AsyncioBackend` does the same job on an :class:`asyncio.Protocol`: the bytes the loop
received wait in a buffer, a read takes them or waits on one future (with one timer when it must
wait), a write hands the bytes to the transport and waits only when the transport asks to (flow
control). TLS is ``loop.start_tls``. Errors are httpcore's (``ReadTimeout``, ``ConnectError``, …),
which httpx maps to its own as ever.
"""

from __future__ import annotations

import asyncio
import select
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast

import httpcore

_BUFFER_LIMIT = 256 * 1024
"""Bytes received and not yet read above which the transport stops reading (back pressure)."""


class _Protocol(asyncio.Protocol):
    """What the loop delivers for one connection, kept until the stream reads it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.error: BaseException | None = None
        self.waiting: asyncio.Future[bool] | None = None
        self.draining: asyncio.Future[bool] | None = None
        self.paused = False  # the transport's write buffer is full
        self.reading_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > _BUFFER_LIMIT and self.transport is not None:
            self.transport.pause_reading()
            self.reading_paused = True
        self._wake_reader()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake_reader()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self._wake_reader()
        self.resume_writing()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.draining is not None and not self.draining.done():
            self.draining.set_result(True)

    def _wake_reader(self) -> None:
        if self.waiting is not None and not self.waiting.done():
            self.waiting.set_result(True)


def _expire(future: asyncio.Future[bool]) -> None:
    if not future.done():
        future.set_result(False)


async def _wait(future: asyncio.Future[bool], timeout: float | None) -> bool:
    """True when the future was resolved, False when ``timeout`` passed first."""
    if timeout is None:
        return await future
    timer = asyncio.get_running_loop().call_later(timeout, _expire, future)
    try:
        return await future
    finally:
        timer.cancel()


class AsyncioStream(httpcore.AsyncNetworkStream):
    def __init__(self, transport: asyncio.Transport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol
        protocol.transport = transport

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        protocol = self._protocol
        if not protocol.buffer and not protocol.eof:
            protocol.waiting = asyncio.get_running_loop().create_future()
            try:
                if not await _wait(protocol.waiting, timeout):
                    raise httpcore.ReadTimeout(f"no data within {timeout} s")
            finally:
                protocol.waiting = None
        if protocol.buffer:
            data = bytes(protocol.buffer[:max_bytes])
            del protocol.buffer[:max_bytes]
            if protocol.reading_paused and len(protocol.buffer) <= _BUFFER_LIMIT // 2:
                protocol.reading_paused = False
                self._transport.resume_reading()
            return data
        if protocol.error is not None:
            raise httpcore.ReadError(str(protocol.error) or repr(protocol.error))
        return b""  # the peer closed: httpcore decides what that means

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        protocol = self._protocol
        if self._transport.is_closing():
            raise httpcore.WriteError("the connection is closed")
        self._transport.write(buffer)
        if protocol.paused:
            protocol.draining = asyncio.get_running_loop().create_future()
            try:
                if not await _wait(protocol.draining, timeout):
                    raise httpcore.WriteTimeout(f"could not write within {timeout} s")
            finally:
                protocol.draining = None
            if protocol.error is not None:
                raise httpcore.WriteError(str(protocol.error) or repr(protocol.error))

    async def aclose(self) -> None:
        self._transport.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport = await loop.start_tls(
                    self._transport, self._protocol, ssl_context, server_hostname=server_hostname
                )
        except TimeoutError as exc:
            self._transport.close()
            raise httpcore.ConnectTimeout(f"no TLS handshake within {timeout} s") from exc
        except (OSError, ssl.SSLError, ConnectionError) as exc:
            self._transport.close()
            raise httpcore.ConnectError(str(exc) or repr(exc)) from exc
        if transport is None:  # pragma: no cover - the loop closed the connection meanwhile
            raise httpcore.ConnectError("the connection closed during the TLS handshake")
        return AsyncioStream(transport, self._protocol)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            # An idle connection with bytes or an end waiting is stale: httpcore drops it.
            protocol = self._protocol
            return protocol.eof or bool(protocol.buffer) or _readable(self._raw_socket())
        if info == "ssl_object":
            return self._transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._transport.get_extra_info("sockname")
        if info == "server_addr":
            return self._transport.get_extra_info("peername")
        if info == "socket":
            return self._raw_socket()
        return None

    def _raw_socket(self) -> Any:
        return self._transport.get_extra_info("socket")


def _readable(sock: Any) -> bool:
    """Whether the kernel holds bytes (or the end) for ``sock`` that the loop has not yet read:
    httpcore's own check, one ``poll()``."""
    try:
        fd = sock.fileno() if sock is not None else -1
    except (OSError, ValueError):
        return True
    if fd < 0:
        return True
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        local = (local_address, 0) if local_address else None
        return await _open(
            lambda protocol: loop.create_connection(protocol, host, port, local_addr=local),
            timeout,
            socket_options,
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        return await _open(
            lambda protocol: loop.create_unix_connection(protocol, path), timeout, socket_options
        )

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def _open(
    create: Callable[[Callable[[], _Protocol]], Awaitable[tuple[asyncio.Transport, _Protocol]]],
    timeout: float | None,
    options: Iterable[httpcore.SOCKET_OPTION] | None,
) -> AsyncioStream:
    """A stream over the connection ``create`` opens with our protocol, within ``timeout``;
    failures as httpcore's connect errors."""
    protocol = _Protocol()
    try:
        async with asyncio.timeout(timeout):
            transport, _ = await create(lambda: protocol)
    except TimeoutError as exc:
        raise httpcore.ConnectTimeout(f"no connection within {timeout} s") from exc
    except OSError as exc:
        raise httpcore.ConnectError(str(exc) or repr(exc)) from exc
    stream = AsyncioStream(transport, protocol)
    _apply(stream, options)
    return stream


def _apply(stream: AsyncioStream, options: Iterable[httpcore.SOCKET_OPTION] | None) -> None:
    sock = stream.get_extra_info("socket")
    if sock is None:
        return
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for option in options or ():
        sock.setsockopt(*option)
