"""The provider of the dispatch benchmark: ``python -m bench.fake_provider --port N``.

The test suite's fake SendGrid (``tests/fakes/sendgrid.py``: it checks auth, content type and the
body the way the real v3 Mail Send API does, and answers 202 with ``X-Message-Id``), answering
after a fixed latency that stands in for the provider's round trip. Served by uvicorn in
processes of its own, so its CPU never counts against the dispatch process under test.

The fake keeps every accepted body for the tests' assertions; a benchmark sends hundreds of
thousands, so this app forgets them every ``KEEP`` bodies.
"""

from __future__ import annotations

import argparse
import os

import uvicorn
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.fakes.sendgrid import FakeSendGrid

API_KEY = "SG.ciclo-bench"
KEEP = 1000
_LATENCY_ENV = "CICLO_BENCH_FAKE_LATENCY"


def create_app() -> ASGIApp:
    """The app of one uvicorn worker (``--factory``); the latency comes from the environment
    because uvicorn's worker processes import the app by name."""
    fake = FakeSendGrid(API_KEY, latency=float(os.environ.get(_LATENCY_ENV, "0.05")))

    async def health(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    fake.app.add_route("/health", health, methods=["GET"])
    inner = fake.app

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await inner(scope, receive, send)
        if len(fake.accepted) >= KEEP:
            fake.accepted.clear()

    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fake_provider", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds before each answer")
    args = parser.parse_args()
    os.environ[_LATENCY_ENV] = str(args.latency)
    uvicorn.run(
        "bench.fake_provider:create_app",
        factory=True,
        host="127.0.0.1",
        port=args.port,
        workers=args.workers,
        log_level="warning",
        access_log=False,
        backlog=4096,
        timeout_keep_alive=60,
    )


if __name__ == "__main__":
    main()
