"""``ciclo journeys schema`` and ``ciclo journeys validate``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from services.cli import main

GOOD = {
    "id": "j",
    "version": 1,
    "name": "J",
    "trigger": {"event": "signup"},
    "start": "hello",
    "steps": {
        "hello": {"send": {"channel": "email", "template": "welcome-1"}, "next": "wait"},
        "wait": {"wait": "P1D", "next": "end"},
        "end": {"exit": True},
    },
}


@pytest.fixture
def templates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "templates"
    (folder / "welcome-1").mkdir(parents=True)
    monkeypatch.setenv("CICLO_TEMPLATES_DIR", str(folder))
    return folder


def write(folder: Path, name: str, doc: object) -> Path:
    path = folder / name
    path.write_text(json.dumps(doc))
    return path


def test_schema_prints_the_json_schema_of_the_language() -> None:
    result = CliRunner().invoke(main, ["journeys", "schema"])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.output)
    assert schema["title"] == "JourneyDefinition"
    assert {"trigger", "steps", "start", "send_window"} <= set(schema["properties"])


def test_validate_says_ok_and_exits_0(tmp_path: Path, templates: Path) -> None:
    path = write(tmp_path, "good.json", GOOD)
    result = CliRunner().invoke(main, ["journeys", "validate", str(path)])
    assert (result.exit_code, result.output) == (0, f"{path}: ok\n")


def test_validate_prints_every_problem_and_exits_1(tmp_path: Path, templates: Path) -> None:
    bad = json.loads(json.dumps(GOOD))
    bad["steps"]["hello"]["send"]["template"] = "missing"
    bad["steps"]["wait"]["next"] = "x"
    good = write(tmp_path, "good.json", GOOD)
    path = write(tmp_path, "bad.json", bad)
    result = CliRunner().invoke(main, ["journeys", "validate", str(good), str(path)])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"{good}: ok",
        f"{path}: $.steps.hello.send.template: unknown template 'missing'",
        f"{path}: $.steps.wait.next: unknown step 'x'",
        f"{path}: $.steps.end: unreachable from start 'hello'",
    ]


def test_validate_reads_templates_from_the_configured_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CICLO_TEMPLATES_DIR", str(tmp_path / "empty"))
    path = write(tmp_path, "good.json", GOOD)
    result = CliRunner().invoke(main, ["journeys", "validate", str(path)])
    assert result.exit_code == 1
    assert "unknown template 'welcome-1'" in result.output


def test_validate_reports_unreadable_json(tmp_path: Path, templates: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{")
    result = CliRunner().invoke(main, ["journeys", "validate", str(path)])
    assert result.exit_code == 1
    assert result.output.startswith(f"{path}: $: not valid JSON")


def test_validate_runnable_adds_what_the_engine_cannot_run(tmp_path: Path, templates: Path) -> None:
    path = write(tmp_path, "good.json", GOOD)
    result = CliRunner().invoke(main, ["journeys", "validate", "--runnable", str(path)])
    assert result.exit_code == 1
    assert result.output == (
        f"{path}: $.steps.wait: step kind 'wait' is not run by this version of the engine yet\n"
    )
