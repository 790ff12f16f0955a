"""docs/operations.md describes only what exists: commands, settings, chart values, files."""

from __future__ import annotations

import re
from typing import Any

import click
import pytest
import yaml

from tests.deploy.conftest import DEPLOY, ROOT, known_settings

OPERATIONS = ROOT / "docs" / "operations.md"
VALUES = DEPLOY / "helm" / "ciclo" / "values.yaml"


@pytest.fixture(scope="module")
def text() -> str:
    return OPERATIONS.read_text()


def code_blocks(text: str) -> str:
    return "\n".join(re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.DOTALL))


def test_every_ciclo_command_exists(text: str) -> None:
    from services.cli import main

    # `ciclo` as a command: at a line's start, after `--`, `$(`, `exec -T <service>`, a backtick.
    command_position = r"(?:^|-- |\$\(|exec -T \w+ |`)ciclo ([a-z]+(?: [a-z]+)?)"
    commands = re.findall(command_position, code_blocks(text), flags=re.MULTILINE)
    commands += re.findall(command_position, text, flags=re.MULTILINE)
    assert len(commands) >= 10
    for command in commands:
        words = command.split()
        group: click.Command = main
        for word in words:
            if not isinstance(group, click.Group):
                break  # an argument (e.g. `serve ingest`)
            assert word in group.commands, f"`ciclo {command}`: no command {word!r}"
            group = group.commands[word]


def test_every_setting_mentioned_exists(text: str) -> None:
    mentioned = set(re.findall(r"\bCICLO_[A-Z0-9_]+[A-Z0-9]", text))
    assert len(mentioned) >= 15
    # compose.yaml's own variables (ports, bind address, image) are named in its section.
    compose_variables = set(re.findall(r"\$\{(\w+)", (DEPLOY / "compose.yaml").read_text()))
    unknown = mentioned - known_settings() - compose_variables
    assert not unknown, f"docs/operations.md names settings Ciclo does not have: {unknown}"


def test_every_chart_value_mentioned_exists(text: str) -> None:
    values: dict[str, Any] = yaml.safe_load(VALUES.read_text())
    keys = set(re.findall(r"`((?:[a-z]+|<service>)(?:\.[a-zA-Z]+)+)`", text))
    # Dotted names that start with a top-level key (topic names such as ciclo.events do not).
    keys = {k for k in keys if k.split(".")[0] in values or k.startswith("<service>.")}
    keys = {k for k in keys if not re.search(r"\.(db|md|yaml|json|txt|tgz)$", k)}  # file names
    assert len(keys) >= 15
    for key in keys:
        node: Any = values
        for part in key.replace("<service>", "ingest").split("."):
            assert isinstance(node, dict) and part in node, f"values.yaml has no {key}"
            node = node[part]


def test_every_repository_path_mentioned_exists(text: str) -> None:
    paths = set(re.findall(r"\b((?:deploy|docs|journeys|templates|bench)/[\w./-]*\w)", text))
    assert "deploy/compose.yaml" in paths
    # Files the guide has you create, and `kubectl … deploy/<name>` resources.
    made_by_you = {"bench/results.md", "deploy/.env"}
    for path in {p for p in paths - made_by_you if not p.startswith("deploy/ciclo-")}:
        assert (ROOT / path).exists(), f"docs/operations.md names a missing file: {path}"


def test_the_quickstart_matches_the_stack(text: str) -> None:
    compose = (DEPLOY / "compose.yaml").read_text()
    assert "INGEST_PORT:-8000" in compose
    assert "http://127.0.0.1:8000/v1/events" in text
    assert "DISPATCH_PORT:-8001" in compose
    assert "http://127.0.0.1:8001/v1/sink/messages" in text
