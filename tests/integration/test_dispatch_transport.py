"""The providers' HTTP client (providers/transport.py, providers/network.py) over real loopback
sockets: connections reused and bounded, stale ones replaced, errors mapped the way the send
errors need them, TLS, and the same behaviour on httpcore's own (anyio) network backend."""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpcore
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.dispatch.adapters.providers.base import post
from services.dispatch.adapters.providers.network import AsyncioBackend
from services.dispatch.adapters.providers.sendgrid import SendGridProvider
from services.dispatch.adapters.providers.transport import ProviderClient, provider_client
from services.dispatch.domain.messages import Outbound, Rendered
from services.dispatch.errors import AmbiguousSendError, TransientSendError
from tests.fakes.sendgrid import FakeSendGrid
from tests.fakes.server import serve

OK = b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nX-Message-Id: m-1\r\n"

# What the server does with a request once it has read it.
Behaviour = Callable[[bytes, asyncio.StreamWriter], Awaitable[bool]]
"""Answer (or not) the request; False closes the connection."""


async def answer(request: bytes, writer: asyncio.StreamWriter) -> bool:
    body = b'{"seen":%d}' % len(request)
    writer.write(OK + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    await writer.drain()
    return True


@dataclass
class RawServer:
    """A small HTTP/1.1 server on loopback that counts its connections and requests."""

    behaviour: Behaviour = answer
    connections: int = 0
    open: int = 0
    most_open: int = 0
    requests: list[bytes] = field(default_factory=list)
    url: str = ""
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.append(task)
        self.connections += 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        self.writers.append(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                if not await self.behaviour(request, writer):
                    return
        finally:
            self.open -= 1
            writer.close()

    def close_idle(self) -> None:
        """Close every connection from the server's side (its keep-alive timeout)."""
        for writer in self.writers:
            writer.close()

    async def stop(self, listening: asyncio.Server) -> None:
        listening.close()
        self.close_idle()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@pytest.fixture
async def server() -> AsyncIterator[RawServer]:
    raw = RawServer()
    listening = await asyncio.start_server(raw.handle, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    raw.url = f"http://127.0.0.1:{port}"
    try:
        yield raw
    finally:
        await raw.stop(listening)


@pytest.fixture(params=["asyncio", "anyio"])
def backend(request: pytest.FixtureRequest) -> httpcore.AsyncNetworkBackend:
    """Ours, and httpcore's own: the transport must behave the same on both."""
    return AsyncioBackend() if request.param == "asyncio" else httpcore.AnyIOBackend()


def client(
    backend: httpcore.AsyncNetworkBackend,
    *,
    connections: int = 4,
    timeout: float = 2.0,
    verify: ssl.SSLContext | None = None,
) -> ProviderClient:
    made = ProviderClient(
        timeout=timeout, connections=connections, network_backend=backend, verify=verify
    )
    # The short timeouts are for answers (an answer later than them is ambiguous); connecting to
    # the fake on this machine may wait longer while the whole suite runs in parallel.
    made.timeout = httpx.Timeout(timeout, connect=max(timeout, 10.0))
    return made


async def test_answers_come_back_whole_and_connections_are_reused(
    server: RawServer, backend: httpcore.AsyncNetworkBackend
) -> None:
    async with client(backend) as c:
        for n in range(5):
            response = await post(
                c, server.url + "/send", provider="test", json={"n": n}, headers={"X-Key": "k"}
            )
            assert response.status_code == 202
            assert response.json() == {"seen": len(server.requests[-1])}
            assert response.headers["x-message-id"] == "m-1"
            assert response.request.url == server.url + "/send"
            assert response.elapsed.total_seconds() > 0
        assert c.slots.in_use == 0
    assert server.connections == 1  # one keep-alive connection for five sequential requests
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    assert body == b'{"n":0}'
    assert b"content-type: application/json" in head.lower()
    assert b"x-key: k" in head.lower()
    assert b"user-agent: python-httpx/" in head.lower()  # the client's own headers still go


async def test_never_more_connections_than_allowed(
    server: RawServer, backend: httpcore.AsyncNetworkBackend
) -> None:
    async def slow(request: bytes, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(0.02)
        return await answer(request, writer)

    server.behaviour = slow
    async with client(backend, connections=3) as c:
        results = await asyncio.gather(
            *(post(c, server.url, provider="test", json={"n": n}) for n in range(30))
        )
        assert [r.status_code for r in results] == [202] * 30
        assert c.slots.in_use == 0
    assert server.most_open <= 3
    assert server.connections == 3  # the three were kept alive and reused


async def test_a_request_waits_at_most_the_pool_timeout_for_a_connection(
    server: RawServer, backend: httpcore.AsyncNetworkBackend
) -> None:
    released = asyncio.Event()

    async def held(request: bytes, writer: asyncio.StreamWriter) -> bool:
        await released.wait()
        return await answer(request, writer)

    server.behaviour = held
    async with client(backend, connections=1) as c:
        first = asyncio.create_task(post(c, server.url, provider="test", json={}))
        await asyncio.sleep(0.05)
        waits = {"connect": 2.0, "read": 2.0, "write": 2.0, "pool": 0.1}
        second = httpx.Request("POST", server.url, content=b"{}", extensions={"timeout": waits})
        with pytest.raises(httpx.PoolTimeout):
            await c.send(second)
        released.set()
        assert (await first).status_code == 202
        assert c.slots.in_use == 0
    assert len(server.requests) == 1  # the second never left


async def test_a_connection_the_server_closed_while_idle_is_replaced(
    server: RawServer, backend: httpcore.AsyncNetworkBackend
) -> None:
    async with client(backend) as c:
        assert (await post(c, server.url, provider="test", json={})).status_code == 202
        server.close_idle()
        await asyncio.sleep(0.05)  # the end of the connection reaches the client
        assert (await post(c, server.url, provider="test", json={})).status_code == 202
    assert server.connections == 2


async def test_an_answer_that_closes_the_connection_is_not_kept(
    server: RawServer, backend: httpcore.AsyncNetworkBackend
) -> None:
    async def closing(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(OK + b"Connection: close\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()
        return False

    server.behaviour = closing
    async with client(backend, connections=2) as c:
        for _ in range(4):
            assert (await post(c, server.url, provider="test", json={})).status_code == 202
        assert (c.slots.in_use, c.slots.idle) == (0, 0)
    assert server.connections == 4


async def test_refused_connection_is_transient(backend: httpcore.AsyncNetworkBackend) -> None:
    listening = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    listening.close()
    await listening.wait_closed()
    async with client(backend) as c:
        with pytest.raises(TransientSendError, match=r"unreachable.*ConnectError"):
            await post(c, f"http://127.0.0.1:{port}", provider="test", json={})
        assert c.slots.in_use == 0


async def test_no_answer_within_the_timeout_is_ambiguous(
    server: RawServer, backend: httpcore.AsyncNetworkBackend
) -> None:
    async def silent(request: bytes, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(5)
        return False

    server.behaviour = silent
    async with client(backend, timeout=0.2) as c:
        with pytest.raises(AmbiguousSendError, match="ReadTimeout"):
            await post(c, server.url, provider="test", json={})
        assert c.slots.in_use == 0
        server.behaviour = answer
        # The timed-out connection is not handed out again: the next request gets a new one.
        assert (await post(c, server.url, provider="test", json={})).status_code == 202
    assert server.connections == 2


async def test_an_answer_dribbled_past_the_timeout_is_ambiguous(
    server: RawServer, backend: httpcore.AsyncNetworkBackend
) -> None:
    """Each byte comes within the read timeout, the whole answer does not: the send timeout
    bounds the answer, so the send is ambiguous instead of held for as long as the server
    likes (here 2 s, ten times the timeout)."""

    async def dribble(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(OK + b"Content-Length: 40\r\n\r\n")
        for _ in range(40):
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(b" ")
        await writer.drain()
        return True

    server.behaviour = dribble
    async with client(backend, timeout=0.2) as c:
        started = asyncio.get_running_loop().time()
        with pytest.raises(AmbiguousSendError, match="ReadTimeout"):
            await post(c, server.url, provider="test", json={})
        assert asyncio.get_running_loop().time() - started < 1.5
        assert c.slots.in_use == 0


async def test_a_connection_dropped_before_the_answer_is_ambiguous(
    server: RawServer, backend: httpcore.AsyncNetworkBackend
) -> None:
    async def drop(request: bytes, writer: asyncio.StreamWriter) -> bool:
        return False

    server.behaviour = drop
    async with client(backend) as c:
        with pytest.raises(AmbiguousSendError, match="RemoteProtocolError"):
            await post(c, server.url, provider="test", json={})
        assert c.slots.in_use == 0


async def test_a_truncated_answer_is_ambiguous(
    server: RawServer, backend: httpcore.AsyncNetworkBackend
) -> None:
    async def truncated(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(OK + b"Content-Length: 100\r\n\r\n{")
        await writer.drain()
        return False

    server.behaviour = truncated
    async with client(backend) as c:
        with pytest.raises(AmbiguousSendError):
            await post(c, server.url, provider="test", json={})
        assert c.slots.in_use == 0


async def test_a_cancelled_request_gives_its_connection_back(
    server: RawServer, backend: httpcore.AsyncNetworkBackend
) -> None:
    async def silent(request: bytes, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(5)
        return False

    server.behaviour = silent
    async with client(backend, connections=1) as c:
        sending = asyncio.create_task(post(c, server.url, provider="test", json={}))
        await asyncio.sleep(0.05)
        assert c.slots.in_use == 1
        sending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sending
        assert c.slots.in_use == 0
        server.behaviour = answer
        assert (await post(c, server.url, provider="test", json={})).status_code == 202


async def test_connections_are_shared_between_origins(
    backend: httpcore.AsyncNetworkBackend,
) -> None:
    servers = [RawServer() for _ in range(3)]
    listening = []
    for raw in servers:
        started = await asyncio.start_server(raw.handle, "127.0.0.1", 0)
        raw.url = f"http://127.0.0.1:{started.sockets[0].getsockname()[1]}"
        listening.append(started)
    try:
        async with client(backend, connections=2) as c:
            for _ in range(2):
                for raw in servers:
                    assert (await post(c, raw.url, provider="test", json={})).status_code == 202
            assert c.slots.in_use == 0
            assert c.slots.idle <= 2  # an idle connection gave way to another origin
    finally:
        for raw, started in zip(servers, listening, strict=True):
            await raw.stop(started)
    assert all(len(raw.requests) == 2 for raw in servers)


def _certificate(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_https_with_the_servers_certificate_checked(
    tmp_path: Path, backend: httpcore.AsyncNetworkBackend
) -> None:
    cert, key = _certificate(tmp_path)
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)
    raw = RawServer()
    listening = await asyncio.start_server(raw.handle, "127.0.0.1", 0, ssl=served)
    url = f"https://localhost:{listening.sockets[0].getsockname()[1]}/v3"
    try:
        trusting = ssl.create_default_context(cafile=str(cert))
        async with client(backend, verify=trusting) as c:
            for _ in range(3):
                response = await post(c, url, provider="test", json={"secure": True})
                assert response.status_code == 202
        assert raw.connections == 1
        assert raw.requests[0].endswith(b'{"secure":true}')
        # A client that does not trust the certificate refuses before anything is sent.
        async with client(backend) as untrusting:
            with pytest.raises(TransientSendError, match="ConnectError"):
                await post(untrusting, url, provider="test", json={})
        assert len(raw.requests) == 3
    finally:
        await raw.stop(listening)


async def test_auth_and_forms_take_the_clients_own_path(
    server: RawServer, backend: httpcore.AsyncNetworkBackend
) -> None:
    async with client(backend) as c:
        response = await post(
            c, server.url, provider="test", data={"To": "+14155550100"}, auth=("sid", "token")
        )
        assert response.status_code == 202
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    assert b"Authorization: Basic c2lkOnRva2Vu" in head
    assert body == b"To=%2B14155550100"


async def test_sendgrid_through_the_dispatch_client() -> None:
    fake = FakeSendGrid()
    message = Outbound(
        message_id="msg_1",
        workspace_id="demo",
        customer_id="c1",
        channel="email",
        template="welcome-1",
        category="marketing",
        to="ana@example.com",
        sender="shop@example.com",
        sender_name="Shop, Inc.",
        content=Rendered(subject="Hi Ana — €5 off", html="<p>Hi</p>", text="Hi"),
        headers={"List-Unsubscribe": "<https://example.com/u/t>"},
    )
    with serve(fake.app) as url:
        async with provider_client(timeout=2.0, connections=4) as c:
            receipt = await SendGridProvider(c, api_key=fake.api_key, base_url=url).send(message)
            wrong = SendGridProvider(c, api_key="SG.revoked", base_url=url)
            with pytest.raises(Exception, match="sendgrid answered 401"):
                await wrong.send(message)
    assert receipt.provider_message_id
    [mail] = fake.accepted
    assert mail["subject"] == "Hi Ana — €5 off"
    assert mail["from"] == {"email": "shop@example.com", "name": "Shop, Inc."}
    assert mail["headers"] == {"List-Unsubscribe": "<https://example.com/u/t>"}


class _Recorded(httpcore.AsyncNetworkStream):
    """A network stream that keeps what each write was given."""

    def __init__(self, stream: httpcore.AsyncNetworkStream, writes: list[bytes]) -> None:
        self._stream = stream
        self._writes = writes

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._stream.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._writes.append(buffer)
        await self._stream.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._stream.aclose()

    def get_extra_info(self, info: str) -> object:
        return self._stream.get_extra_info(info)


class _RecordingBackend(AsyncioBackend):
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    async def connect_tcp(self, *args: object, **kwargs: object) -> httpcore.AsyncNetworkStream:
        stream = await super().connect_tcp(*args, **kwargs)  # type: ignore[arg-type]
        return _Recorded(stream, self.writes)


async def test_the_request_goes_out_in_one_write(server: RawServer) -> None:
    """Head and body in one write: one system call, one packet for a small request."""
    backend = _RecordingBackend()
    async with client(backend) as c:
        for n in range(3):
            response = await post(c, server.url, provider="test", json={"n": n})
            assert response.status_code == 202
    assert len(backend.writes) == 3
    assert [w.endswith(b'\r\n\r\n{"n":%d}' % n) for n, w in enumerate(backend.writes)] == [True] * 3
    assert server.requests == backend.writes


async def test_a_large_body_arrives_whole(
    server: RawServer, backend: httpcore.AsyncNetworkBackend
) -> None:
    body = bytes(range(256)) * 1024  # 256 KiB: written in several parts
    async with client(backend) as c:
        response = await post(c, server.url, provider="test", content=body)
        assert response.status_code == 202
    assert server.requests[0].endswith(b"\r\n\r\n" + body)


async def test_a_header_with_a_line_break_never_leaves(
    server: RawServer, backend: httpcore.AsyncNetworkBackend
) -> None:
    async with client(backend) as c:
        with pytest.raises(TransientSendError, match="LocalProtocolError"):
            await post(c, server.url, provider="test", json={}, headers={"X-Key": "k\r\nX-Evil: 1"})
        assert c.slots.in_use == 0
        # The connection it would have used was closed; the next request gets another.
        assert (await post(c, server.url, provider="test", json={})).status_code == 202
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    "answer_bytes",
    [
        # chunked
        b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'4\r\n{"a"\r\n3\r\n:1}\r\n0\r\n\r\n',
        # an informational answer first
        b'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\nContent-Length: 7\r\n\r\n{"a":1}',
    ],
    ids=["chunked", "100-continue"],
)
async def test_answers_framed_otherwise_are_read_whole_and_the_connection_kept(
    server: RawServer, backend: httpcore.AsyncNetworkBackend, answer_bytes: bytes
) -> None:
    async def framed(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(answer_bytes)
        await writer.drain()
        return True

    server.behaviour = framed
    async with client(backend) as c:
        for _ in range(2):
            response = await post(c, server.url, provider="test", json={})
            assert (response.status_code, response.json()) == (202, {"a": 1})
    assert server.connections == 1


async def test_an_answer_ended_by_closing_is_read_whole(
    server: RawServer, backend: httpcore.AsyncNetworkBackend
) -> None:
    async def until_close(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\n\r\n{}")
        await writer.drain()
        return False  # closes: the end of the body

    server.behaviour = until_close
    async with client(backend) as c:
        for _ in range(2):
            response = await post(c, server.url, provider="test", json={})
            assert (response.status_code, response.json()) == (202, {})
        assert (c.slots.in_use, c.slots.idle) == (0, 0)
    assert server.connections == 2


async def test_a_compressed_answer_is_decoded(
    server: RawServer, backend: httpcore.AsyncNetworkBackend
) -> None:
    body = gzip.compress(b'{"id":"m-9"}')

    async def gzipped(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body)
            + body
        )
        await writer.drain()
        return True

    server.behaviour = gzipped
    async with client(backend) as c:
        response = await post(c, server.url, provider="test", json={})
    assert response.json() == {"id": "m-9"}


def test_at_least_one_connection() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ProviderClient(timeout=1.0, connections=0)


async def test_a_closed_client_refuses_to_send(server: RawServer) -> None:
    c = provider_client(timeout=1.0, connections=2)
    await c.aclose()
    with pytest.raises(RuntimeError):
        await c.send(httpx.Request("POST", server.url, content=b"{}"))


# ── Shortcuts that must behave as the code they replace ────────────────────────────────────────

_FIELDS: list[list[tuple[bytes, bytes]]] = [
    [(b"Host", b"a.example"), (b"Content-Length", b"12"), (b"X-Key", b"k")],
    [(b"Host", b"a.example"), (b"Content-Length", b"12, 12")],
    [(b"Host", b"a.example"), (b"Content-Length", b"12"), (b"content-length", b"13")],
    [(b"Host", b"a.example"), (b"Content-Length", b"1x")],
    [(b"Host", b"a.example"), (b"Content-Length", b"9" * 30)],
    [(b"Host", b"a.example"), (b"Transfer-Encoding", b"Chunked")],
    [(b"Host", b"a.example"), (b"Transfer-Encoding", b"gzip")],
    [(b"Host", b"a.example"), (b"Transfer-Encoding", b"chunked")] * 2,
    [(b"Host", b"a.example"), (b"X-Key", b"k\r\nX-Evil: 1")],
    [(b"Host", b"a.example"), (b"X Key", b"k")],
    [(b"Host", b"a.example"), (b"X-Key", b" padded ")],
    [(b"Host", b"a.example"), (b"X-Key", b"")],
]


@pytest.mark.parametrize("fields", _FIELDS)
def test_header_checks_remembered_answer_as_h11(fields: list[tuple[bytes, bytes]]) -> None:
    """Twice each (the second time from what was remembered): h11's headers or h11's error."""
    import h11
    from h11._headers import normalize_and_validate

    from services.dispatch.adapters.providers.transport import _checked_headers

    def outcome(check: Callable[[list[tuple[bytes, bytes]]], object]) -> object:
        try:
            return list(check(fields))  # type: ignore[call-overload]
        except h11.LocalProtocolError as exc:
            return f"LocalProtocolError: {exc}"

    expected = outcome(normalize_and_validate)
    assert outcome(_checked_headers) == expected
    assert outcome(_checked_headers) == expected


def test_requests_get_the_headers_the_client_has_now() -> None:
    """The merged headers are remembered by what they are built from: a change to the client's
    headers or the provider's shows in the next request, and the remembered ones never change."""
    from services.dispatch.adapters.providers.base import request

    c = provider_client(timeout=5, connections=1)
    first = request(c, "http://a.example/x", json={"a": 1}, headers={"Authorization": "Bearer 1"})
    first.headers["X-Changed"] = "by the caller"
    c.headers["User-Agent"] = "ciclo-test"
    second = request(c, "http://a.example/x", json={"a": 1}, headers={"Authorization": "Bearer 2"})
    raw = request(c, "http://a.example/x", content=b"raw", headers=None)
    assert dict(second.headers) == {
        "host": "a.example",
        "accept": "*/*",
        "accept-encoding": "gzip, deflate",
        "connection": "keep-alive",
        "user-agent": "ciclo-test",
        "authorization": "Bearer 2",
        "content-type": "application/json",
        "content-length": "7",
    }
    assert "x-changed" not in second.headers
    assert "content-type" not in raw.headers and "authorization" not in raw.headers
    assert raw.headers["content-length"] == "3"
    assert second.content == b'{"a":1}'


_BODY = b'{"ok":true}'
_ANSWERS: list[bytes] = [
    b"HTTP/1.1 202 Accepted\r\nX-Message-Id: m-1\r\nContent-Length: 11\r\n\r\n" + _BODY,
    b"HTTP/1.1 202 \r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 202\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 400 Bad Request\r\ncontent-length:11\r\n\r\n" + _BODY,
    b"HTTP/1.1 429 Too Many\r\nRetry-After: 3\r\nContent-Length: 11\r\n\r\n" + _BODY,
    b"HTTP/1.1 503 Unavailable\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive\r\nX-Empty:\r\nX-Pad:  v  \r\n"
    b"Content-Length: 11\r\n\r\n" + _BODY,
    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 11\r\n\r\n" + _BODY,
    b"HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nContent-Length: 11\r\n\r\n" + _BODY,
    b"HTTP/1.1 204 No Content\r\nContent-Length: 11\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
    b"HTTP/1.1 200 OK\r\nBad Header: x\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-Bad: a\rb\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n" + _BODY + b"HTTP/1.1 200 OK\r\n",
    b"HTTP/1.1 200 OK\r\n\r\nthe body ends with the connection",
    b"\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"garbage\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n" + _BODY[:5],
    b"HTTP/1.1 200 OK\r\nContent-Len",
    b"",
]


def _read_by_h11(answer: bytes, *, closed: bool = True) -> tuple[object, ...]:
    """What h11 makes of ``answer`` to a POST, the server closing the connection after it or
    not: (status, reason, version, headers, body, whether the connection is kept), or its
    error, or "incomplete"."""
    import h11

    conn = h11.Connection(our_role=h11.CLIENT)
    conn.send(
        h11.Request(method="POST", target="/", headers=[("Host", "a"), ("Content-Length", "0")])
    )
    conn.send(h11.EndOfMessage())
    if answer:
        conn.receive_data(answer)  # (no bytes would say the connection closed)
    if closed:
        conn.receive_data(b"")
    head: h11.Response | None = None
    body = b""
    try:
        while True:
            event = conn.next_event()
            if isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            elif event is h11.NEED_DATA or event is h11.PAUSED:  # pragma: no cover
                return ("incomplete",)
            elif isinstance(event, h11.ConnectionClosed):
                return ("closed early",)
    except h11.RemoteProtocolError as exc:
        return (f"RemoteProtocolError: {exc}",)
    assert head is not None
    kept = conn.our_state is h11.DONE and conn.their_state is h11.DONE
    return (head.status_code, head.reason, head.http_version, head.headers.raw_items(), body, kept)


@pytest.mark.parametrize("answer", _ANSWERS)
def test_simple_answers_are_read_as_h11_reads_them(answer: bytes) -> None:
    """Whatever the shortcut reads whole, h11 reads the same way, and keeps the connection;
    whatever it does not, it leaves to h11 (False), or waits for more (True) only while h11
    could not have read an answer either."""
    from services.dispatch.adapters.providers.transport import _simple_answer

    verdict = _simple_answer(bytearray(answer))
    if isinstance(verdict, tuple):
        head, body = verdict
        got = (head.status_code, head.reason, head.http_version, head.headers.raw_items(), body)
        assert (*got, True) == _read_by_h11(answer)
    elif verdict is True:  # h11 too waits for more
        assert _read_by_h11(answer, closed=False) == ("incomplete",)


def test_the_shortcut_takes_the_usual_answers() -> None:
    from services.dispatch.adapters.providers.transport import _simple_answer

    taken = [a for a in _ANSWERS if isinstance(_simple_answer(bytearray(a)), tuple)]
    assert len(taken) == 7  # the first seven: a test of the shortcut, not only of h11


@pytest.mark.parametrize("answer", _ANSWERS[:24])
async def test_answers_read_the_same_with_and_without_the_shortcut(
    answer: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over a real socket, the answer written in two parts: the response, the error, and
    whether the next request reuses the connection, the same with h11 alone."""
    from services.dispatch.adapters.providers import transport

    async def scripted(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(answer[:20])
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(answer[20:])
        await writer.drain()
        return True

    async def run() -> list[object]:
        server = RawServer(behaviour=scripted)
        listening = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        server.url = f"http://127.0.0.1:{listening.sockets[0].getsockname()[1]}"
        seen: list[object] = []
        try:
            async with client(AsyncioBackend(), timeout=0.3) as c:
                for _ in range(2):
                    try:
                        r = await post(c, server.url, provider="test", json={})
                        seen.append((r.status_code, r.headers.raw, r.content, r.http_version))
                    except (AmbiguousSendError, TransientSendError) as exc:
                        seen.append(type(exc).__name__)
        finally:
            await server.stop(listening)
        seen.append(server.connections)
        return seen

    with_shortcuts = await run()
    monkeypatch.setattr(transport, "_simple_answer", lambda data: False)
    assert with_shortcuts == await run()  # the request written without h11, the answer by it
    monkeypatch.setattr(transport, "_request_bytes", lambda head, body: None)
    assert with_shortcuts == await run()  # h11 alone


@pytest.mark.parametrize(
    ("method", "headers", "simple"),
    [
        ("POST", {}, True),
        ("POST", {"Connection": "Keep-Alive"}, True),
        ("POST", {"Connection": "close"}, False),
        ("POST", {"Connection": "keep-alive, Close"}, False),
        ("POST", {"Connection": "upgrade"}, True),
        ("POST", {"Expect": "100-continue"}, False),
        ("HEAD", {}, False),
        ("CONNECT", {}, False),
    ],
)
def test_which_requests_may_take_the_shortcut(
    method: str, headers: dict[str, str], simple: bool
) -> None:
    """Only where h11 would keep the connection alive after a simple answer, and frame that
    answer by its headers."""
    from services.dispatch.adapters.providers.transport import _simple_request

    c = provider_client(timeout=5, connections=1)
    request = c.build_request(method, "http://a.example/", headers=headers)
    assert _simple_request(request) is simple


async def test_a_request_that_closes_its_connection_gets_a_new_one_next(
    server: RawServer,
) -> None:
    async with client(AsyncioBackend()) as c:
        for _ in range(2):
            response = await post(
                c, server.url, provider="test", json={}, headers={"Connection": "close"}
            )
            assert response.status_code == 202
    assert server.connections == 2


@pytest.mark.parametrize(
    ("url", "headers", "body"),
    [
        ("http://a.example/v3/mail/send", {"Authorization": "Bearer k"}, b'{"a":1}'),
        ("http://a.example:8080/x?y=1&z=%20", {}, b""),
        ("https://b.example/", {"X-Two": "1", "x-two": "2", "Host": "c.example"}, "é".encode()),
        ("http://a.example/", {"Content-Length": "3"}, b"abc"),
    ],
)
def test_requests_written_without_h11_are_the_bytes_h11_writes(
    url: str, headers: dict[str, str], body: bytes
) -> None:
    import h11

    from services.dispatch.adapters.providers.base import request
    from services.dispatch.adapters.providers.transport import _checked_headers, _request_bytes

    r = request(provider_client(timeout=5, connections=1), url, content=body, headers=headers)
    head = h11.Request(
        method=r.method, target=r.url.raw_path, headers=_checked_headers(r.headers.raw)
    )
    conn = h11.Connection(our_role=h11.CLIENT)
    expected = (conn.send(head) or b"") + (conn.send(h11.Data(data=body)) or b"")
    expected += conn.send(h11.EndOfMessage()) or b""
    assert _request_bytes(head, body) == expected


def test_requests_h11_must_write_are_left_to_it() -> None:
    import h11

    from services.dispatch.adapters.providers.transport import _request_bytes

    def head(*fields: tuple[str, str]) -> h11.Request:
        return h11.Request(method="POST", target="/", headers=[("Host", "a"), *fields])

    assert _request_bytes(head(("Content-Length", "3")), b"abcd") is None  # h11 refuses
    assert _request_bytes(head(("Content-Length", "3")), b"ab") is None
    assert _request_bytes(head(("Transfer-Encoding", "chunked")), b"ab") is None
    assert _request_bytes(head(), b"") is None  # no Content-Length: h11's framing
    big = b"x" * (64 * 1024)
    assert _request_bytes(head(("Content-Length", str(len(big)))), big) is None
