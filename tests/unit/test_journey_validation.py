"""Checks across a journey's step graph, and loading from files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from services.journey.adapters.definitions import PublishedVersion, build_catalog
from services.journey.adapters.files import load_catalog, load_journey
from services.journey.domain.definitions import EventTrigger, JourneyDefinition, WaitStep
from services.journey.domain.validation import Problem, json_path, loads_document, validate_journey
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


CART_WAIT = {
    "wait_for": {"event": "order_completed", "match": "cart_id", "timeout": "PT24H"},
    "on_timeout": "remind",
}


@pytest.mark.parametrize(
    ("trigger", "kind"),
    [
        ({"segment": "vip"}, "a segment trigger"),
        ({"date_trait": "birthday"}, "a date trigger"),
        ({"inactivity": {"event": "order_completed", "for": "P60D"}}, "an inactivity trigger"),
    ],
)
def test_match_needs_an_event_trigger(trigger: dict[str, Any], kind: str) -> None:
    doc = journey(
        {"wait_cart": CART_WAIT, "remind": send()},
        trigger=trigger,
        exit_when=[{"event": "logout"}, {"event": "cart_emptied", "match": "cart_id"}],
    )
    assert messages(validate_journey(doc)) == [
        "$.steps.wait_cart.wait_for.match: 'match' needs an event trigger (the run has no "
        "triggering event to match against)",
        "$.exit_when[1].match: 'match' needs an event trigger (the run has no triggering event "
        "to match against)",
    ]
    keyed = journey({"a": send()}, trigger={**trigger, "key": "cart_id"})
    assert messages(validate_journey(keyed)) == [
        f"$.trigger.key: 'key' needs an event trigger ({kind} carries no event properties to "
        "key runs on)"
    ]


def test_match_and_key_with_an_event_trigger_are_fine() -> None:
    doc = journey(
        {"wait_cart": CART_WAIT, "remind": send()},
        trigger={"event": "cart_updated", "key": "cart_id"},
        exit_when=[{"event": "cart_emptied", "match": "cart_id"}],
    )
    assert validate_journey(doc) == []
    parsed = JourneyDefinition.model_validate(doc)
    assert isinstance(parsed.trigger, EventTrigger)
    assert parsed.trigger.key == "cart_id"


def test_a_bad_key_property_name_is_refused() -> None:
    doc = journey({"a": send()}, trigger={"event": "cart_updated", "key": "cart id"})
    [problem] = validate_journey(doc)
    assert problem.path == "$.trigger.key"
    assert "String should match pattern" in problem.message


def test_other_extra_trigger_fields_read_as_usual() -> None:
    doc = journey({"a": send()}, trigger={"segment": "vip", "colour": "red"})
    assert messages(validate_journey(doc)) == ["$.trigger.colour: Extra inputs are not permitted"]


def test_graph_problems_come_all_at_once() -> None:
    doc = journey(
        {"a": send("gone", next="nope"), "w": CART_WAIT, "remind": send()},
        trigger={"segment": "vip"},
    )
    assert messages(validate_journey(doc, templates={"welcome-1"})) == [
        "$.steps.a.next: unknown step 'nope'",
        "$.steps.a.send.template: unknown template 'gone'",
        "$.steps.w.wait_for.match: 'match' needs an event trigger (the run has no triggering "
        "event to match against)",
        "$.steps.w: unreachable from start 'a'",
        "$.steps.remind: unreachable from start 'a'",
    ]


def test_a_bad_duration_in_a_wait_for_timeout_and_an_offset() -> None:
    doc = journey(
        {
            "w": {"wait_for": {"event": "e", "timeout": "P0D"}, "on_timeout": "u"},
            "u": {"wait": {"until_trait": "birthday", "offset": "-P1M"}},
        }
    )
    assert messages(validate_journey(doc)) == [
        "$.steps.w.wait_for.timeout: must be longer than zero, got P0D",
        "$.steps.u.wait.offset: bad duration '-P1M': years and months have no fixed length; use "
        "weeks or days (P4W, P30D)",
    ]


def write(tmp_path: Path, doc: object, name: str = "j.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def test_loading_returns_the_whole_language(tmp_path: Path) -> None:
    where = {"field": "event.properties.plan", "op": "eq", "value": "pro"}
    doc = journey(
        {"a": send(next="w"), "w": {"wait": "P3D", "next": "b"}, "b": send()},
        trigger={"event": "signup", "where": where},
        reentry={"after": "P30D"},
        goal={"event": "order_completed", "within": "P7D"},
        send_window={"from": "09:00", "to": "20:00"},
        priority=3,
    )
    loaded = load_journey(write(tmp_path, doc))
    assert loaded == JourneyDefinition.model_validate(doc)
    assert isinstance(loaded.steps["w"], WaitStep)
    assert loaded.priority == 3


def test_loading_reports_every_problem(tmp_path: Path) -> None:
    doc = journey({"w": CART_WAIT, "remind": send(next="gone")}, trigger={"segment": "vip"})
    with pytest.raises(InvalidJourney) as caught:
        load_journey(write(tmp_path, doc))
    assert str(caught.value) == (
        f"{tmp_path / 'j.json'}: $.steps.remind.next: unknown step 'gone'; "
        "$.steps.w.wait_for.match: 'match' needs an event trigger (the run has no triggering "
        "event to match against)"
    )


def test_loading_does_not_check_templates(tmp_path: Path) -> None:
    assert load_journey(write(tmp_path, journey({"a": send("anything")}))).id == "j"


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
    assert len(catalog) == len(list((REPO / "journeys").glob("*.json")))
    assert "welcome" in [j.id for j in catalog.view("any").by_event["signup"]]


def test_a_journey_id_defined_twice_is_refused(tmp_path: Path) -> None:
    write(tmp_path, journey({"a": send()}), "one.json")
    write(tmp_path, journey({"a": send()}), "two.json")
    with pytest.raises(ValueError, match="journey 'j' is defined twice"):
        load_catalog(tmp_path)


def test_a_missing_folder_is_an_empty_catalog(tmp_path: Path) -> None:
    assert len(load_catalog(tmp_path / "none")) == 0


def test_stored_versions_load_leniently_and_a_broken_one_is_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Published before the language took JSON types strictly: still runs as published.
    lax = journey({"a": send()}, id="lax", priority="5", holdout_percent="10")
    # A time with an offset cannot be compared with a local time: left out, not crashed on.
    broken = journey({"a": send()}, id="broken", send_window={"from": "09:00Z", "to": "20:00"})
    rows = [PublishedVersion("shop", doc["id"], 1, doc, "published", True) for doc in (lax, broken)]
    with caplog.at_level("ERROR"):
        catalog = build_catalog([], rows)
    view = catalog.view("shop")
    loaded = view.get("lax")
    assert loaded is not None
    assert (loaded[0].priority, loaded[0].holdout_percent) == (5, 10.0)
    assert view.get("broken") is None
    assert [r.getMessage() for r in caplog.records] == [
        "stored journey no longer valid; left out of the catalog"
    ]
    # The same documents are refused when validated to be saved or published.
    assert messages(validate_journey(lax)) == [
        "$.holdout_percent: Input should be a valid number",
        "$.priority: Input should be a valid integer",
    ]


def test_a_number_json_reads_as_infinity_is_refused_where_it_is() -> None:
    # 1e400 reads as infinity; stored, it would come back as null and mean something else.
    where = {"field": "event.properties.total", "op": "eq", "value": 1e400}
    doc = journey({"a": send()}, trigger={"event": "signup", "where": where})
    assert messages(validate_journey(doc)) == ["$.trigger.where.value: not a finite number"]
    text = json.dumps(journey({"a": send()})).replace('"version": 1', '"version": 1e999')
    assert messages(validate_journey(loads_document(text))) == ["$.version: not a finite number"]


def test_a_send_step_takes_no_data_so_none_can_shadow_a_template_variable() -> None:
    """The variables a send renders with are dispatch's (``TEMPLATE_ROOTS``): a step has no
    ``data`` to replace ``customer`` or the unsubscribe link with."""
    hello = send()
    hello["send"]["data"] = {"customer": {"first_name": "Mallory"}}
    document = journey({"hello": hello})
    assert messages(validate_journey(document)) == [
        "$.steps.hello.send.data: Extra inputs are not permitted"
    ]
