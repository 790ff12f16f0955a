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
    return ProviderClient(
        timeout=timeout, connections=connections, network_backend=backend, verify=verify
    )


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
