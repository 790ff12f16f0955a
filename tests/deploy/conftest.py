"""Shared helpers for the deployment tests: paths, Ciclo's own settings, a probe target."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def known_settings() -> set[str]:
    """Every CICLO_* variable some settings class reads (the table in docs/configuration.md)."""
    from services.config_table import SECTIONS

    return {f"CICLO_{name.upper()}" for _, cls in SECTIONS for name in cls.model_fields}


def check_settings_accept(env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Build every settings class from exactly ``env``, as a process started with it would.

    Raises what Ciclo raises at start for a bad value (a production env with the sink, a SendGrid
    provider without a key, a bus URL that is not kafka:// or sqlite://, a non-integer…).
    """
    from services.config_table import SECTIONS

    for name in list(os.environ):
        if name.startswith("CICLO_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for _, cls in SECTIONS:
        cls()


class _Probe(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        code = self.status if self.path in ("/livez", "/readyz") else 404
        self.send_response(code)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def probe_target() -> Iterator[tuple[int, type[_Probe]]]:
    """A loopback HTTP server answering /livez and /readyz with ``handler.status``."""
    handler = type("Probe", (_Probe,), {"status": 200})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def run_python_healthcheck(code: str, env: Mapping[str, str]) -> int:
    """Run a health check one-liner the way a container runtime does: `python -c CODE`."""
    return subprocess.run(
        [sys.executable, "-c", code], env=dict(env), capture_output=True, timeout=20
    ).returncode
