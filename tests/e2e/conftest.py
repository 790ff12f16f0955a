from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.stack import Stack
from tests.fakes.sendgrid import FakeSendGrid
from tests.fakes.server import serve
from tests.fixtures.processes import CicloProcess


@pytest.fixture
def sendgrid() -> Iterator[tuple[FakeSendGrid, str]]:
    """A fake SendGrid on a real loopback port."""
    fake = FakeSendGrid()
    with serve(fake.app) as url:
        yield fake, url


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[list[CicloProcess]]:
    """Every process a test starts is put here and stopped at the end, pass or fail."""
    started: list[CicloProcess] = []
    yield started
    for p in started:
        if p.proc is not None and p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait()


@pytest.fixture
def stack(
    tmp_path: Path,
    processes: list[CicloProcess],
    fresh_broker: str,
    postgres_url: str,
    sendgrid: tuple[FakeSendGrid, str],
) -> Stack:
    """The distributed mode on this test's own broker and database (tests/e2e/stack.py)."""
    fake, url = sendgrid
    return Stack(tmp_path, processes, fresh_broker, postgres_url, fake, url)
