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


def test_validate_reports_a_document_nested_too_deeply_not_a_traceback(
    tmp_path: Path, templates: Path
) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text(
        '{"id": "j", "trigger": {"event": "signup", "where": '
        + "[" * 100_000
        + "]" * 100_000
        + "}}"
    )
    result = CliRunner().invoke(main, ["journeys", "validate", str(deep)])
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.output == f"{deep}: $: not valid JSON: nested too deeply to read " + (
        "(a journey needs a few levels, not hundreds)\n"
    )


def test_validate_reports_a_key_given_twice(tmp_path: Path, templates: Path) -> None:
    # JSON keeps the last of two equal keys: the send written first under "hello" would be
    # dropped without a word, and the journey would start with a wait.
    path = tmp_path / "twice.json"
    text = json.dumps(GOOD).replace(
        '"steps": {', '"steps": {"hello": {"wait": "P1D", "next": "wait"}, ', 1
    )
    path.write_text(text.replace('"name": "J"', '"name": "J", "name": "K"'))
    result = CliRunner().invoke(main, ["journeys", "validate", str(path)])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"{path}: $.name: given twice in one object; JSON keeps only the last",
        f"{path}: $.steps.hello: given twice in one object; JSON keeps only the last",
    ]


def test_validate_accepts_the_whole_language(tmp_path: Path, templates: Path) -> None:
    doc = json.loads(json.dumps(GOOD))
    doc.update(
        trigger={"event": "cart_updated", "key": "cart_id"},
        reentry={"after": "P30D"},
        exit_when=[{"event": "cart_emptied", "match": "cart_id"}],
        goal={"event": "order_completed", "within": "P7D"},
        holdout_percent=10,
        send_window={"from": "22:00", "to": "06:00", "timezone": "Europe/Madrid"},
        priority=2,
        frequency_cap="skip",
    )
    doc["steps"]["wait"] = {
        "wait_for": {"event": "order_completed", "match": "cart_id", "timeout": "PT24H"},
        "on_event": "end",
        "on_timeout": "split",
    }
    doc["steps"]["split"] = {
        "split": {"a": {"percent": 50, "next": "score"}, "b": {"percent": 50, "next": "end"}}
    }
    doc["steps"]["score"] = {"update": {"add_score": "carts", "by": 1}, "next": "end"}
    path = write(tmp_path, "full.json", doc)
    result = CliRunner().invoke(main, ["journeys", "validate", str(path)])
    assert (result.exit_code, result.output) == (0, f"{path}: ok\n")


def test_validate_reports_a_match_without_an_event_trigger(tmp_path: Path, templates: Path) -> None:
    doc = json.loads(json.dumps(GOOD))
    doc["trigger"] = {"segment": "vip"}
    doc["exit_when"] = [{"event": "order_completed", "match": "cart_id"}]
    path = write(tmp_path, "seg.json", doc)
    result = CliRunner().invoke(main, ["journeys", "validate", str(path)])
    assert result.exit_code == 1
    assert result.output == (
        f"{path}: $.exit_when[0].match: 'match' needs an event trigger (the run has no "
        "triggering event to match against)\n"
    )


def test_validate_has_no_runnable_option_any_more(tmp_path: Path, templates: Path) -> None:
    path = write(tmp_path, "good.json", GOOD)
    result = CliRunner().invoke(main, ["journeys", "validate", "--runnable", str(path)])
    assert result.exit_code == 2
    assert "--runnable" in result.output
