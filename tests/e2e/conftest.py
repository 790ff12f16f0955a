from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.processes import CicloProcess


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[list[CicloProcess]]:
    """Every process a test starts is put here and stopped at the end, pass or fail."""
    started: list[CicloProcess] = []
    yield started
    for p in started:
        if p.proc is not None and p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait()
