"""The HTTP client of the providers: httpx, with a transport that costs the same at 500
connections as at 5, and little per request.

httpx's own pool (``httpcore.AsyncConnectionPool``) decides which connection takes a request by
scanning its whole list of connections, and for each idle one builds the list again, when a
request starts and when its answer is closed: O(connections²) per request, plus a ``poll()``
system call per connection to see whether it went stale. At the concurrency a 50 ms provider
needs (hundreds of sends in flight) that scan, not the network, is where a dispatch process spent
its CPU (bench/results.md §7: 36 sends/s at 256 in flight).

:class:`ConnectionSlots` is an httpx transport with a pool of its own: idle connections wait in
a list per origin, taking and returning one is O(1), and the most recently returned is taken
first, so the connections in use stay warm and the others expire after ``keepalive_expiry``.

Each connection speaks HTTP/1.1 through h11, the protocol engine httpcore uses (it writes the
request, validating every header, and parses the answer: status line, headers, Content-Length
or chunked bodies, keep-alive or close), over an httpcore network stream (:mod:`.network`'s
asyncio backend unless another is given; TLS as httpcore opens it). What the connection does
itself is what httpcore's ``AsyncHTTP11Connection`` does around h11, without its per-request
machinery: httpcore takes an anyio lock three times per request (each a shielded ``sleep(0)``, a
turn of the event loop) and wraps every step in trace and exception-mapping context managers,
which together cost about as much CPU as h11 and the socket. Here a connection is lent to one
request at a time, so it needs no lock; the request goes out in one write (head and body); the
answer is read whole, as the providers read it, and the connection goes back to the pool before
the answer is returned. Network errors are httpcore's and h11's errors are mapped to httpcore's,
and all become httpx's as in ``httpx.AsyncHTTPTransport``: a failure before anything was sent is a
connect error, a timeout or a dropped connection after the request left is a read/write timeout
or a remote protocol error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, NoReturn, cast

import h11
import httpcore
import httpx
from h11._headers import Headers as H11Headers
from h11._headers import get_comma_header, normalize_and_validate
from h11._readers import header_field_re, status_line_re

from services.dispatch.adapters.providers.network import AsyncioBackend

if TYPE_CHECKING:
    from httpx._client import UseClientDefault
    from httpx._types import AuthTypes

_httpx_log = logging.getLogger("httpx")

_Origin = tuple[bytes, bytes, int]

_READ_BYTES = 64 * 1024
"""Bytes asked of the network per read, and written at most per write of a streamed body."""
_MAX_HEAD = 100 * 1024
"""The largest answer head h11 accepts (httpcore's setting)."""

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


_VALID_FIELDS: set[tuple[bytes, bytes]] = set()
"""Header fields h11 found valid already. The same few (host, authorization, content type, user
agent, …) go with every request, and checking them is most of the CPU of writing a request."""
_VALID_FIELDS_MAX = 4096


def _checked_headers(raw: list[tuple[bytes, bytes]]) -> H11Headers:
    """``h11``'s ``normalize_and_validate(raw)``, with each field's own check (the name a token,
    the value without line breaks or control characters, a Content-Length of digits, only
    ``chunked`` as Transfer-Encoding: h11's, on that field alone, raising what h11 raises)
    done once per distinct field; the checks across fields (conflicting Content-Lengths, a
    second Transfer-Encoding) and the normalisation are h11's, every time."""
    for field in raw:
        if field not in _VALID_FIELDS:
            normalize_and_validate([field])
            if len(_VALID_FIELDS) >= _VALID_FIELDS_MAX:
                _VALID_FIELDS.clear()
            _VALID_FIELDS.add(field)
    return normalize_and_validate(raw, _parsed=True)


_STATUS_PREFIX = b"HTTP/1.1 "
_BLANK_LINE = re.compile(rb"\n\r?\n")
"""The end of a head, as h11 finds it (``ReceiveBuffer.maybe_extract_lines``)."""


def _simple_answer(data: bytearray) -> tuple[h11.Response, bytes] | bool:
    """A whole HTTP/1.1 answer in ``data`` in the one form nearly every provider answer takes,
    read as h11 reads it; True while ``data`` may still become one (wait for more bytes); False
    for anything else, which h11 must read (it gives the same answer, or its error).

    The form: ``HTTP/1.1 <status 2xx-5xx other than 204 and 304>``, header lines that h11's own
    expressions accept, split at CRLF (no obsolete line folding, no bare CR or LF), one
    Content-Length of digits, no Transfer-Encoding, Connection absent or ``keep-alive``, and
    exactly Content-Length bytes of body after the blank line, nothing more. h11 reads such an
    answer into a ``Response`` (built here as h11's reader builds it) and the body, and leaves
    the connection fit for the next request."""
    if data[: len(_STATUS_PREFIX)] != _STATUS_PREFIX[: len(data)]:
        return False
    blank = _BLANK_LINE.search(data)  # where h11 ends the head
    if blank is None:
        return len(data) <= _MAX_HEAD
    end = blank.start() - 1
    if end > _MAX_HEAD or data[end : blank.end()] != b"\r\n\r\n":
        return False
    lines = bytes(data[:end]).split(b"\r\n")
    status = status_line_re.fullmatch(lines[0])
    if status is None or status["http_version"] != b"1.1":
        return False
    code = int(status["status_code"])
    if code < 200 or code in (204, 304):
        return False
    fields: list[tuple[bytes, bytes]] = []
    length: int | None = None
    for line in lines[1:]:
        field = header_field_re.fullmatch(line)
        if field is None or line[:1] in (b" ", b"\t"):
            return False
        name, value = field["field_name"], field["field_value"]
        lowered = name.lower()
        if lowered == b"content-length":
            if length is not None or not value.isdigit() or len(value) > 20:
                return False
            length = int(value)
        elif lowered == b"transfer-encoding" or (
            lowered == b"connection" and value.lower() != b"keep-alive"
        ):
            return False
        fields.append((name, value))
    if length is None:
        return False
    start = end + 4
    if len(data) < start + length:
        return True
    if len(data) > start + length:
        return False
    head = h11.Response(
        status_code=code,
        headers=fields,
        reason=status["reason"] or b"",
        http_version=b"1.1",
        _parsed=True,
    )
    return head, bytes(data[start:])


def _translate(exc: Exception, request: httpx.Request) -> NoReturn:
    for kind in type(exc).__mro__:
        mapped = _ERRORS.get(kind)
        if mapped is not None:
            raise mapped(str(exc), request=request) from exc
    raise exc


def _request_bytes(head: h11.Request, body: bytes) -> bytes | None:
    """What h11 writes for ``head`` and ``body`` (``write_request``: the request line, Host
    first, the other fields in order, a blank line; then the body as it is, Content-Length
    framing), when the head declares a Content-Length equal to the body's length and no
    Transfer-Encoding, and the whole fits one write; else None (h11 writes it, or refuses)."""
    if head.http_version != b"1.1" or len(body) >= _READ_BYTES:
        return None
    length: bytes | None = None
    hosts: list[bytes] = []
    fields: list[bytes] = []
    for name, value in head.headers.raw_items():
        lowered = name.lower()
        if lowered == b"transfer-encoding":
            return None
        if lowered == b"content-length":
            length = value
        (hosts if lowered == b"host" else fields).append(b"%s: %s\r\n" % (name, value))
    if length is None or int(length) != len(body):
        return None
    return b"".join(
        [b"%s %s HTTP/1.1\r\n" % (head.method, head.target), *hosts, *fields, b"\r\n", body]
    )


async def _chunks(
    read: list[bytes] | None, stream: httpx.SyncByteStream | httpx.AsyncByteStream
) -> AsyncIterator[bytes]:
    """The chunks of a request body: those already read, else the stream's."""
    if read is not None:
        for chunk in read:
            yield chunk
        return
    async for chunk in stream:  # type: ignore[union-attr]  # an async client's request
        yield chunk


def _simple_request(request: httpx.Request) -> bool:
    """Whether h11 keeps the connection alive after this request's answer when the answer
    allows it, and frames that answer by its own headers: not HEAD or CONNECT (bodiless or a
    tunnel), not ``Connection: close``, no ``Expect`` (interim answers)."""
    if request.method in ("HEAD", "CONNECT"):
        return False
    connection: list[tuple[bytes, bytes]] = []
    for name, value in request.headers.raw:
        lowered = name.lower()
        if lowered in (b"expect", b"upgrade"):
            return False
        if lowered == b"connection" and value.lower() != b"keep-alive":  # httpx's own
            connection.append((name, value))
    return not connection or b"close" not in get_comma_header(
        normalize_and_validate(connection, _parsed=True), b"connection"
    )


class _Connection:
    """One HTTP/1.1 connection, lent to one request at a time."""

    __slots__ = (
        "_deferred",
        "_ended",
        "_expire_at",
        "_expiry",
        "_h11",
        "_simple",
        "_stream",
        "closed",
    )

    def __init__(self, stream: httpcore.AsyncNetworkStream, expiry: float) -> None:
        self._stream = stream
        self._expiry = expiry
        self._expire_at: float | None = None
        self._h11 = h11.Connection(our_role=h11.CLIENT, max_incomplete_event_size=_MAX_HEAD)
        self._ended = False  # the server closed its side
        self._simple: tuple[h11.Response, bytes] = (cast(h11.Response, None), b"")
        self._deferred: tuple[h11.Request, bytes] | None = None
        """A request written without h11 (``_send``), until its answer is read."""
        self.closed = False

    def fit(self) -> bool:
        """Whether an idle connection can take a request: open, within its keep-alive expiry,
        and with nothing from the server waiting (an idle connection can only receive its end,
        when the server closed it)."""
        if self.closed or (self._expire_at is not None and time.monotonic() > self._expire_at):
            return False
        return not self._stream.get_extra_info("is_readable")

    async def exchange(self, request: httpx.Request) -> tuple[h11.Response, bytes]:
        """Send ``request`` and read the whole answer. The connection stays open for another
        request only when both sides ended their message cleanly; an error or a cancellation
        closes it (what was left on it is unknown)."""
        timeouts = request.extensions.get("timeout", {})
        self._expire_at = None
        try:
            simple = _simple_request(request)
            await self._send(request, timeouts.get("write"), simple=simple)
            answer = await self._receive(timeouts.get("read"), simple=simple)
        except BaseException:
            await self.aclose()
            raise
        state = self._h11
        if answer is None:  # read by _simple_answer: h11 would be done too, and keep it alive
            answer = self._simple
            if self._deferred is None:  # h11 wrote the request: begin its next cycle afresh
                self._h11 = h11.Connection(our_role=h11.CLIENT, max_incomplete_event_size=_MAX_HEAD)
            self._deferred = None  # h11 never saw this exchange: it is ready for the next
            self._expire_at = time.monotonic() + self._expiry
        elif state.our_state is h11.DONE and state.their_state is h11.DONE and not self._ended:
            state.start_next_cycle()
            self._expire_at = time.monotonic() + self._expiry
        else:  # Connection: close, or a body the server did not wait for
            await self.aclose()
        return answer

    async def _send(self, request: httpx.Request, timeout: float | None, *, simple: bool) -> None:
        """Write the request. h11 checks it (headers, Host, method, target) and, when the
        request is ``simple`` with its whole body in memory and a Content-Length that matches
        it, :func:`_request_bytes` writes it as h11 would, and h11 is only told about it (in
        ``_receive``) if h11 must read the answer; otherwise h11 writes it."""
        state = self._h11
        self._deferred = None
        try:
            head = h11.Request(
                method=request.method,
                target=request.url.raw_path,
                headers=_checked_headers(request.headers.raw),
            )
            stream = request.stream
            chunks: list[bytes] | None = None
            if type(stream) is httpx.ByteStream:
                chunks = [chunk async for chunk in stream]
                if simple and state.our_state is h11.IDLE and state.their_state is h11.IDLE:
                    body = b"".join(chunks)
                    written = _request_bytes(head, body)
                    if written is not None:
                        self._deferred = (head, body)
                        # As httpcore: a write error is left for the answer to explain, since
                        # the server may have answered and closed before reading the whole
                        # request (a body it refuses).
                        with contextlib.suppress(httpcore.WriteError):
                            await self._stream.write(written, timeout=timeout)
                        return
            with contextlib.suppress(httpcore.WriteError):
                out = bytearray(state.send(head) or b"")
                async for chunk in _chunks(chunks, stream):
                    out += state.send(h11.Data(data=chunk)) or b""
                    if len(out) >= _READ_BYTES:
                        await self._stream.write(bytes(out), timeout=timeout)
                        out.clear()
                out += state.send(h11.EndOfMessage()) or b""
                await self._stream.write(bytes(out), timeout=timeout)
        except h11.LocalProtocolError as exc:  # e.g. a header holding a line break
            raise httpcore.LocalProtocolError(str(exc)) from exc

    async def _receive(
        self, timeout: float | None, *, simple: bool
    ) -> tuple[h11.Response, bytes] | None:
        """The answer, read by h11; or None when ``simple`` (h11 is about to read the first
        byte of the answer to a request that keeps the connection alive) and the answer is one
        :func:`_simple_answer` reads (then in ``self._simple``, and the h11 state is left
        behind: the caller starts a fresh one, as h11's next cycle would begin). Anything else
        is handed to h11 with the bytes already read, as if it had read them itself.

        ``timeout`` bounds the whole answer, not each read: a server that dribbles its answer a
        byte at a time within the timeout of every read would otherwise hold the send (and its
        slot) for as long as it likes, where the send timeout promises an ambiguous send."""
        left = _budget(timeout)
        state = self._h11
        taken: list[bytes] = []  # read from the network, not yet given to h11
        deferred = self._deferred
        if simple and (
            deferred is not None
            or (state.their_state is h11.SEND_RESPONSE and not state.trailing_data[0])
        ):
            got = bytearray()
            while True:
                chunk = await self._stream.read(_READ_BYTES, timeout=left())
                got += chunk
                verdict = _simple_answer(got) if chunk else False
                if verdict is True:
                    continue
                if verdict is not False:
                    self._simple = verdict
                    return None
                taken = [bytes(got)] if got else []
                if not chunk:
                    taken.append(b"")  # the end of the stream, read already
                break
        if deferred is not None:  # h11 reads the answer: tell it the request it answers
            self._deferred = None
            sent_head, sent_body = deferred
            state.send(sent_head)
            if sent_body:
                state.send(h11.Data(data=sent_body))
            state.send(h11.EndOfMessage())
        head: h11.Response | None = None
        body = bytearray()
        while True:
            try:
                event = state.next_event()
            except h11.RemoteProtocolError as exc:
                raise httpcore.RemoteProtocolError(str(exc)) from exc
            if event is h11.NEED_DATA:
                if taken:
                    data = taken.pop(0)
                else:
                    data = await self._stream.read(_READ_BYTES, timeout=left())
                if not data:
                    if state.their_state is h11.SEND_RESPONSE:
                        raise httpcore.RemoteProtocolError(
                            "Server disconnected without sending a response."
                        )
                    self._ended = True  # a body that ends with the connection
                state.receive_data(data)
            elif isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                if head is None:  # pragma: no cover - h11 ends a message after its head
                    raise httpcore.RemoteProtocolError("an answer without a status line")
                return head, bytes(body)
            elif not isinstance(event, h11.InformationalResponse):  # 1xx: the answer follows
                raise httpcore.RemoteProtocolError(f"unexpected {event!r} from the server")

    async def aclose(self) -> None:
        if not self.closed:
            self.closed = True
            await self._stream.aclose()


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
        # httpx's default (certifi's CAs), or the caller's (a private CA). HTTP/1.1 only.
        self._ssl = verify or httpx.create_ssl_context()
        self._ssl.set_alpn_protocols(["http/1.1"])
        self._free = asyncio.Semaphore(connections)
        self._idle: dict[_Origin, list[_Connection]] = {}
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
        """The answer, read whole (its connection is back in the pool when it returns)."""
        if self._closed:
            raise RuntimeError("the transport is closed")
        url = request.url
        port = url.port or (443 if url.raw_scheme == b"https" else 80)
        origin: _Origin = (url.raw_scheme, url.raw_host, port)
        await self._acquire(request)
        try:
            connection = await self._take(origin, request)
            try:
                head, body = await connection.exchange(request)
            finally:
                self._give_back(origin, connection)
        except Exception as exc:
            _translate(exc, request)
        finally:
            self._free.release()
        return httpx.Response(
            status_code=head.status_code,
            headers=head.headers.raw_items(),
            stream=httpx.ByteStream(body),
            extensions={"http_version": b"HTTP/" + head.http_version, "reason_phrase": head.reason},
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

    async def _take(self, origin: _Origin, request: httpx.Request) -> _Connection:
        """An idle connection to ``origin`` still fit for use, else a new one (replacing the
        least recently used idle connection to another origin when all exist)."""
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            if connection.fit():
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
        try:
            return await self._connect(origin, request)
        except BaseException:
            self._open -= 1
            raise

    async def _connect(self, origin: _Origin, request: httpx.Request) -> _Connection:
        """TCP, then TLS for https (checking the server's name, or the request's
        ``sni_hostname``), within the request's connect timeout, as httpcore connects."""
        scheme, host, port = origin
        timeout = request.extensions.get("timeout", {}).get("connect")
        name = host.decode("ascii")
        stream = await self._backend.connect_tcp(name, port, timeout=timeout)
        if scheme == b"https":
            try:
                stream = await stream.start_tls(
                    self._ssl,
                    server_hostname=request.extensions.get("sni_hostname") or name,
                    timeout=timeout,
                )
            except BaseException:
                await stream.aclose()
                raise
        elif scheme != b"http":
            await stream.aclose()
            raise httpcore.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}")
        return _Connection(stream, self._expiry)

    def _give_back(self, origin: _Origin, connection: _Connection) -> None:
        if self._closed or connection.closed:
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
        except httpx.RequestError as exc:
            exc.request = request
            raise
        response.request = request
        response.read()  # the transport read the body: this only decodes it (Content-Encoding)
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


def _budget(timeout: float | None) -> Callable[[], float | None]:
    """Seconds left of ``timeout`` from now, at each call; a ``ReadTimeout`` once none are."""
    if timeout is None:
        return lambda: None
    deadline = time.monotonic() + timeout

    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise httpcore.ReadTimeout(f"no whole answer within {timeout} s")
        return remaining

    return left
