"""The HTTP client of the providers: httpx, with a connection pool that costs the same at 500
connections as at 5.

httpx's own pool (``httpcore.AsyncConnectionPool``) decides which connection takes a request by
scanning its whole list of connections, and for each idle one builds the list again, when a
request starts and when its answer is closed: O(connections²) per request, plus a ``poll()``
system call per connection to see whether it went stale. At the concurrency a 50 ms provider
needs (hundreds of sends in flight) that scan, not the network, is where a dispatch process spent
its CPU (bench/results.md §7: 36 sends/s at 256 in flight).

:class:`ConnectionSlots` is an httpx transport that keeps httpx's HTTP engine — httpcore's
``AsyncHTTPConnection`` (HTTP/1.1 over h11, TLS, keep-alive expiry, stale-connection checks) —
and replaces only the pool: idle connections wait in a list per origin, taking and returning one
is O(1), and the most recently returned is taken first, so the connections in use stay warm and
the others expire after ``keepalive_expiry``. The connections run on :mod:`.network`'s asyncio
backend unless another httpcore network backend is given. httpcore's errors become httpx's, as
in ``httpx.AsyncHTTPTransport``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn

import httpcore
import httpx

from services.dispatch.adapters.providers.network import AsyncioBackend

if TYPE_CHECKING:
    from httpx._client import UseClientDefault
    from httpx._types import AuthTypes

_httpx_log = logging.getLogger("httpx")

_Origin = tuple[bytes, bytes, int]

# httpcore's errors and httpx's, most specific first within each family (httpx's own table).
_ERRORS: dict[type[Exception], type[httpx.TransportError]] = {
    httpcore.ConnectTimeout: httpx.ConnectTimeout,
    httpcore.ReadTimeout: httpx.ReadTimeout,
    httpcore.WriteTimeout: httpx.WriteTimeout,
    httpcore.PoolTimeout: httpx.PoolTimeout,
    httpcore.TimeoutException: httpx.TimeoutException,
    httpcore.ConnectError: httpx.ConnectError,
    httpcore.ReadError: httpx.ReadError,
    httpcore.WriteError: httpx.WriteError,
    httpcore.NetworkError: httpx.NetworkError,
    httpcore.ProxyError: httpx.ProxyError,
    httpcore.UnsupportedProtocol: httpx.UnsupportedProtocol,
    httpcore.LocalProtocolError: httpx.LocalProtocolError,
    httpcore.RemoteProtocolError: httpx.RemoteProtocolError,
    httpcore.ProtocolError: httpx.ProtocolError,
}


def _translate(exc: Exception, request: httpx.Request) -> NoReturn:
    for kind in type(exc).__mro__:
        mapped = _ERRORS.get(kind)
        if mapped is not None:
            raise mapped(str(exc), request=request) from exc
    raise exc


class _Body(httpx.AsyncByteStream):
    """An answer's body that hands its connection back once closed (httpx closes it when the
    body has been read, or when the request fails or is cancelled)."""

    __slots__ = ("_release", "_request", "_stream")

    def __init__(self, stream: Any, request: httpx.Request, release: Callable[[], None]) -> None:
        self._stream = stream
        self._request = request
        self._release: Callable[[], None] | None = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for part in self._stream:
                yield part
        except Exception as exc:
            _translate(exc, self._request)

    async def aclose(self) -> None:
        release, self._release = self._release, None
        try:
            await self._stream.aclose()
        except Exception as exc:
            _translate(exc, self._request)
        finally:
            if release is not None:
                release()


class ConnectionSlots(httpx.AsyncBaseTransport):
    """At most ``connections`` connections over all origins; a request waits for a free one at
    most the client's pool timeout (``httpx.PoolTimeout``, as with httpx's pool)."""

    def __init__(
        self,
        *,
        connections: int,
        keepalive_expiry: float = 5.0,
        verify: ssl.SSLContext | None = None,
        network_backend: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        if connections < 1:
            raise ValueError("connections must be at least 1")
        self.connections = connections
        self._expiry = keepalive_expiry
        self._backend = network_backend or AsyncioBackend()
        # One TLS context for every connection (each would otherwise load the CA bundle):
        # httpx's default (certifi's CAs), or the caller's (a private CA).
        self._ssl = verify or httpx.create_ssl_context()
        self._free = asyncio.Semaphore(connections)
        self._idle: dict[_Origin, list[httpcore.AsyncHTTPConnection]] = {}
        self._open = 0  # connections that exist, idle or lent
        self._closed = False

    @property
    def in_use(self) -> int:
        """Connections lent to requests right now."""
        return self._open - self.idle

    @property
    def idle(self) -> int:
        return sum(len(idle) for idle in self._idle.values())

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("the transport is closed")
        url = request.url
        port = url.port or (443 if url.raw_scheme == b"https" else 80)
        origin: _Origin = (url.raw_scheme, url.raw_host, port)
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        await self._acquire(request)
        connection: httpcore.AsyncHTTPConnection | None = None
        try:
            for _ in range(3):
                connection = await self._take(origin)
                try:
                    response = await connection.handle_async_request(core)
                    break
                except httpcore.ConnectionNotAvailable:
                    # Closed between the check and the request: nothing was sent, take another.
                    stale, connection = connection, None
                    self._open -= 1
                    await stale.aclose()
            else:
                raise httpx.ConnectError("no usable connection", request=request)
        except BaseException as exc:
            if connection is not None:
                self._give_back(origin, connection)
            self._free.release()
            if isinstance(exc, Exception):
                _translate(exc, request)
            raise
        taken = connection

        def release() -> None:
            self._give_back(origin, taken)
            self._free.release()

        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_Body(response.stream, request, release),
            extensions=response.extensions,
        )

    async def _acquire(self, request: httpx.Request) -> None:
        if not self._free.locked():
            await self._free.acquire()  # no wait: the common case stays cheap
            return
        timeout = request.extensions.get("timeout", {}).get("pool")
        try:
            async with asyncio.timeout(timeout):
                await self._free.acquire()
        except TimeoutError as exc:
            raise httpx.PoolTimeout(
                f"no free connection within {timeout} s ({self.connections} in use)",
                request=request,
            ) from exc

    async def _take(self, origin: _Origin) -> httpcore.AsyncHTTPConnection:
        """An idle connection to ``origin`` still fit for use, else a new one (replacing the
        least recently used idle connection to another origin when all exist)."""
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            if not (connection.is_closed() or connection.has_expired()):
                return connection
            self._open -= 1
            await connection.aclose()
        if self._open >= self.connections:
            for other in self._idle.values():
                if other:
                    self._open -= 1
                    await other.pop(0).aclose()
                    break
        self._open += 1
        scheme, host, port = origin
        return httpcore.AsyncHTTPConnection(
            origin=httpcore.Origin(scheme, host, port),
            ssl_context=self._ssl,
            keepalive_expiry=self._expiry,
            network_backend=self._backend,
        )

    def _give_back(self, origin: _Origin, connection: httpcore.AsyncHTTPConnection) -> None:
        if self._closed or connection.is_closed():
            self._open -= 1
            return
        self._idle.setdefault(origin, []).append(connection)

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                self._open -= 1
                await connection.aclose()


class ProviderClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` over :class:`ConnectionSlots` whose ``send`` goes straight to that
    transport when the client would add nothing to the request.

    ``AsyncClient.send`` runs every request through the auth flow, redirect handling, event hooks
    and the cookie jar (a ``urllib`` request built per answer to look for ``Set-Cookie``): a
    third of the CPU of a send when the providers use none of them (they set their own headers,
    never follow a redirect and keep no cookies). So, when the request is not streamed and the
    client has no auth, event hooks, redirects to follow or proxies from the environment, the
    answer is read straight from the transport; otherwise ``AsyncClient.send`` does it all. Either
    way the request gets the client's timeouts, the answer its ``request`` and ``elapsed``, and
    transport errors their ``request``. Cookies an answer sets are not kept."""

    def __init__(
        self,
        *,
        timeout: float,
        connections: int,
        verify: ssl.SSLContext | None = None,
        network_backend: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.slots = ConnectionSlots(
            connections=connections, verify=verify, network_backend=network_backend
        )
        super().__init__(timeout=httpx.Timeout(timeout), transport=self.slots)
        # httpx mounts a proxy transport per proxy the environment names (HTTPS_PROXY, …):
        # those requests must take the client's own path.
        self._direct = not urllib.request.getproxies()

    async def send(
        self,
        request: httpx.Request,
        *,
        stream: bool = False,
        auth: AuthTypes | UseClientDefault | None = httpx.USE_CLIENT_DEFAULT,
        follow_redirects: bool | UseClientDefault = httpx.USE_CLIENT_DEFAULT,
    ) -> httpx.Response:
        if not (
            self._direct
            and not stream
            and auth is httpx.USE_CLIENT_DEFAULT
            and follow_redirects is httpx.USE_CLIENT_DEFAULT
            and self.auth is None
            and not self.follow_redirects
            and not self.event_hooks["request"]
            and not self.event_hooks["response"]
            and not self.is_closed
        ):
            return await super().send(
                request, stream=stream, auth=auth, follow_redirects=follow_redirects
            )
        request.extensions.setdefault("timeout", self.timeout.as_dict())
        started = time.perf_counter()
        try:
            response = await self.slots.handle_async_request(request)
            response.request = request
            try:
                await response.aread()  # closes the stream, which frees the connection
            finally:
                await response.aclose()
        except httpx.RequestError as exc:
            exc.request = request
            raise
        response.elapsed = timedelta(seconds=time.perf_counter() - started)
        _httpx_log.info(
            'HTTP Request: %s %s "%s %d %s"',
            request.method,
            request.url,
            response.http_version,
            response.status_code,
            response.reason_phrase,
        )
        return response


def provider_client(*, timeout: float, connections: int) -> ProviderClient:
    """The client every HTTP provider of a dispatch process sends through: ``timeout`` seconds
    per phase (connect, write, read, waiting for a connection), at most ``connections`` open."""
    return ProviderClient(timeout=timeout, connections=connections)
