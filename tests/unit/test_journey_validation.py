"""Checks across a journey's step graph, engine limits, and loading from files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from services.journey.adapters.files import load_catalog, load_journey
from services.journey.domain.definitions import JourneyDefinition
from services.journey.domain.validation import (
    Problem,
    engine_limits,
    json_path,
    validate_journey,
)
from services.journey.errors import InvalidJourney

REPO = Path(__file__).resolve().parents[2]


def journey(steps: dict[str, Any], **overrides: object) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": "j",
        "version": 1,
        "name": "J",
        "trigger": {"event": "signup"},
        "start": next(iter(steps)),
        "steps": steps,
    }
    doc.update(overrides)
    return doc


def send(template: str = "welcome-1", **rest: object) -> dict[str, Any]:
    return {"send": {"channel": "email", "template": template}, **rest}


def messages(problems: list[Problem]) -> list[str]:
    return [str(p) for p in problems]


def test_a_valid_journey_has_no_problems() -> None:
    doc = journey({"a": send(next="w"), "w": {"wait": "P1D", "next": "b"}, "b": {"exit": True}})
    assert validate_journey(doc, templates={"welcome-1"}) == []


def test_unknown_references_are_reported_at_each_field() -> None:
    doc = journey(
        {
            "a": send(next="w"),
            "w": {"wait_for": {"event": "e", "timeout": "P1D"}, "on_event": "x", "on_timeout": "b"},
            "b": {"branch": {"field": "f", "op": "exists"}, "then": "y", "else": "s"},
            "s": {"split": {"left": {"percent": 50, "next": "z"}, "right": {"percent": 50}}},
        },
        start="nowhere",
    )
    assert messages(validate_journey(doc)) == [
        "$.start: unknown step 'nowhere'",
        "$.steps.w.on_event: unknown step 'x'",
        "$.steps.b.then: unknown step 'y'",
        "$.steps.s.split.left.next: unknown step 'z'",
    ]


def test_unreachable_steps_are_reported() -> None:
    doc = journey({"a": send(), "orphan": send(next="a"), "end": {"exit": True}})
    assert messages(validate_journey(doc)) == [
        "$.steps.orphan: unreachable from start 'a'",
        "$.steps.end: unreachable from start 'a'",
    ]


def test_a_loop_without_a_wait_is_reported_once_with_its_path() -> None:
    doc = journey(
        {
            "a": send(next="b"),
            "b": {"branch": {"field": "f", "op": "exists"}, "then": "c", "else": "end"},
            "c": {"update": {"add_score": "s", "by": 1}, "next": "a"},
            "end": {"exit": True},
        }
    )
    assert messages(validate_journey(doc)) == ["$.steps.a: loop without a wait: a -> b -> c -> a"]


def test_a_step_leading_to_itself_is_a_loop() -> None:
    doc = journey({"a": {"update": {"add_score": "s", "by": 1}, "next": "a"}})
    assert messages(validate_journey(doc)) == ["$.steps.a: loop without a wait: a -> a"]


@pytest.mark.parametrize(
    "waiting",
    [
        {"wait": "P1D", "next": "a"},
        {"wait_for": {"event": "e", "timeout": "P1D"}, "on_event": "end", "on_timeout": "a"},
    ],
)
def test_a_loop_through_a_wait_is_fine(waiting: dict[str, Any]) -> None:
    doc = journey({"a": send(next="w"), "w": waiting, "end": {"exit": True}})
    if "wait" in waiting:  # the plain wait has no way out to "end"; keep every step reachable
        del doc["steps"]["end"]
    assert validate_journey(doc) == []


def test_unknown_templates_are_reported_only_when_templates_are_given() -> None:
    doc = journey({"a": send("welcome-1", next="b"), "b": send("gone")})
    assert messages(validate_journey(doc, templates={"welcome-1"})) == [
        "$.steps.b.send.template: unknown template 'gone'"
    ]
    assert validate_journey(doc, templates=None) == []


def test_schema_problems_carry_json_paths_and_all_are_returned() -> None:
    doc = journey(
        {
            "a": {"wait": "P3X", "next": "b"},
            "b": {"split": {"x": {"percent": 60}, "y": {"percent": 30}}},
            "c": {"send": {"channel": "fax", "template": "t"}},
            "Bad Name": {"exit": True},
        }
    )
    assert messages(validate_journey(doc)) == [
        "$.steps.a.wait: bad duration 'P3X': expected PnW, PnD or PnDTnHnMnS "
        "(e.g. 'P3D', 'PT2H30M', 'P1DT12H')",
        "$.steps.b: split percentages sum to 90, not 100",
        "$.steps.c.send.channel: Input should be 'email' or 'sms'",
        "$.steps['Bad Name']: bad name: String should match pattern '^[a-z0-9][a-z0-9_-]{0,99}$'",
    ]


def test_json_paths_bracket_keys_that_are_not_plain_names() -> None:
    assert json_path(["steps", "wait-3d", "next"]) == "$.steps.wait-3d.next"
    assert json_path(["exit_when", 0, "where", "all", 1]) == "$.exit_when[0].where.all[1]"
    assert json_path(["steps", "a b"]) == "$.steps['a b']"


def test_engine_limits_name_everything_the_engine_cannot_run_yet() -> None:
    doc = journey(
        {
            "a": {"send": {"channel": "email", "template": "t", "holdout_percent": 5}, "next": "w"},
            "w": {"wait": "P1D"},
        },
        trigger={"segment": "vip"},
        reentry={"after": "P30D"},
        goal={"event": "order_completed", "within": "P7D"},
        frequency_cap="defer",
    )
    assert messages(engine_limits(JourneyDefinition.model_validate(doc))) == [
        "$.trigger: trigger kind 'segment' is not run by this version of the engine yet",
        "$.reentry: reentry after a duration is not run by this version of the engine yet",
        "$.goal: 'goal' is not run by this version of the engine yet",
        "$.frequency_cap: 'frequency_cap' is not run by this version of the engine yet",
        "$.steps.a.send.holdout_percent: a step holdout is not run by this version of the engine "
        "yet",
        "$.steps.w: step kind 'wait' is not run by this version of the engine yet",
    ]


def test_engine_limits_accept_what_the_engine_runs() -> None:
    doc = journey({"a": send(next="end"), "end": {"exit": True}}, reentry="always")
    assert engine_limits(JourneyDefinition.model_validate(doc)) == []


def write(tmp_path: Path, doc: object, name: str = "j.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def test_loading_refuses_a_step_kind_the_engine_does_not_run(tmp_path: Path) -> None:
    path = write(tmp_path, journey({"a": send(next="w"), "w": {"wait": "P3D"}}))
    with pytest.raises(InvalidJourney, match="step kind 'wait' is not run by this version"):
        load_journey(path)


def test_loading_refuses_a_trigger_filter_the_engine_does_not_apply(tmp_path: Path) -> None:
    where = {"field": "event.properties.plan", "op": "eq", "value": "pro"}
    path = write(tmp_path, journey({"a": send()}, trigger={"event": "signup", "where": where}))
    with pytest.raises(InvalidJourney, match=r"\$\.trigger\.where: a trigger filter is not run"):
        load_journey(path)


def test_loading_reports_language_problems_with_the_file_name(tmp_path: Path) -> None:
    path = write(tmp_path, journey({"a": send(next="gone")}))
    with pytest.raises(InvalidJourney, match=r"j\.json: \$\.steps\.a\.next: unknown step 'gone'"):
        load_journey(path)


@pytest.mark.parametrize(("content", "message"), [("{", "not valid JSON"), ("[]", "JSON object")])
def test_loading_refuses_what_is_not_a_journey_object(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "j.json"
    path.write_text(content)
    with pytest.raises(InvalidJourney, match=message):
        load_journey(path)


def test_the_shipped_journeys_load() -> None:
    catalog = load_catalog(REPO / "journeys")
    assert [j.id for j in catalog.triggered_by("signup")] == ["welcome"]
