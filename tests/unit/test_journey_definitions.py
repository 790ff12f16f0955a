"""The journey language: conditions, durations and the definition models."""

from __future__ import annotations

from datetime import time, timedelta
from typing import Any

import jsonschema
import pytest
from pydantic import TypeAdapter, ValidationError

from services.journey.domain.conditions import Condition, evaluate
from services.journey.domain.definitions import (
    BranchStep,
    DateTrigger,
    EventTrigger,
    InactivityTrigger,
    Journey,
    JourneyDefinition,
    ReentryAfter,
    SegmentTrigger,
    SendStep,
    SplitStep,
    UntilDate,
    UntilTime,
    UpdateStep,
    WaitForStep,
    WaitStep,
    step_kind,
    targets,
)
from services.journey.domain.durations import DurationError, format_duration, parse_duration

CONDITION: TypeAdapter[Any] = TypeAdapter(Condition)


def condition(doc: object) -> Any:
    return CONDITION.validate_python(doc)


CONTEXT = {
    "event": {"type": "order_completed", "properties": {"total": 60, "items": ["a", "b"]}},
    "customer": {"email": "ana@example.com", "vip": True, "plan": None, "since": "2026-01-05"},
}


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"field": "event.properties.total", "op": "gte", "value": 50}, True),
        ({"field": "event.properties.total", "op": "gt", "value": 60}, False),
        ({"field": "event.properties.total", "op": "lte", "value": 60}, True),
        ({"field": "event.properties.total", "op": "lt", "value": 60.5}, True),
        ({"field": "event.properties.total", "op": "eq", "value": 60.0}, True),
        ({"field": "event.properties.total", "op": "eq", "value": "60"}, False),
        ({"field": "event.properties.total", "op": "gt", "value": "5"}, False),
        ({"field": "customer.vip", "op": "eq", "value": 1}, False),
        ({"field": "customer.vip", "op": "eq", "value": True}, True),
        ({"field": "customer.since", "op": "gte", "value": "2026-01-01"}, True),
        ({"field": "event.type", "op": "in", "value": ["signup", "order_completed"]}, True),
        ({"field": "event.type", "op": "ne", "value": "signup"}, True),
        ({"field": "customer.email", "op": "contains", "value": "@example."}, True),
        ({"field": "event.properties.items", "op": "contains", "value": "b"}, True),
        ({"field": "event.properties.items", "op": "contains", "value": "c"}, False),
        ({"field": "customer.email", "op": "exists"}, True),
        ({"field": "customer.plan", "op": "exists"}, False),
        ({"field": "customer.nothing", "op": "exists", "value": False}, True),
        ({"field": "customer.nothing", "op": "eq", "value": None}, False),
        ({"field": "customer.nothing", "op": "ne", "value": 3}, True),
        ({"field": "customer.email.domain", "op": "gt", "value": 1}, False),
    ],
)
def test_comparisons_are_typed(doc: dict[str, object], expected: bool) -> None:
    assert evaluate(condition(doc), CONTEXT) is expected


def test_all_any_not_combine() -> None:
    big = {"field": "event.properties.total", "op": "gte", "value": 50}
    vip = {"field": "customer.vip", "op": "eq", "value": True}
    assert evaluate(condition({"all": [big, vip]}), CONTEXT) is True
    assert evaluate(condition({"all": [big, {"not": vip}]}), CONTEXT) is False
    assert evaluate(condition({"any": [{"not": big}, vip]}), CONTEXT) is True
    assert evaluate(condition({"any": [{"not": big}, {"not": vip}]}), CONTEXT) is False


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"field": "x", "op": "in", "value": 3}, "'in' takes a non-empty list"),
        ({"field": "x", "op": "gt", "value": True}, "'gt' compares with a number or a string"),
        ({"field": "x", "op": "contains", "value": [1]}, "'contains' takes a string"),
        ({"field": "x", "op": "exists", "value": "yes"}, "'exists' takes true or false"),
        ({"field": "x", "op": "like", "value": "a"}, "Input should be 'eq'"),
        ({"field": "x..y", "op": "eq", "value": 1}, "String should match pattern"),
        ({"all": []}, "at least 1 item"),
        ({"maybe": []}, "a condition needs one of: all, any, not, field"),
        ({"field": "x", "op": "eq", "value": 1, "extra": 2}, "Extra inputs are not permitted"),
    ],
)
def test_malformed_conditions_are_refused(doc: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        condition(doc)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("P3D", timedelta(days=3)),
        ("P2W", timedelta(weeks=2)),
        ("PT2H30M", timedelta(hours=2, minutes=30)),
        ("P1DT12H", timedelta(days=1, hours=12)),
        ("PT90S", timedelta(seconds=90)),
        ("PT0.5S", timedelta(milliseconds=500)),
        ("-P1D", timedelta(days=-1)),
    ],
)
def test_durations_parse_and_print_back(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected
    assert parse_duration(format_duration(expected)) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("P3X", "expected PnW, PnD or PnDTnHnMnS"),
        ("3D", "starts with 'P'"),
        ("P", "no amount given"),
        ("P1DT", "no amount given"),
        ("P1M", "years and months have no fixed length"),
        ("P1Y2D", "years and months have no fixed length"),
        ("PT1D", "expected PnW"),
    ],
)
def test_bad_durations_say_why(text: str, reason: str) -> None:
    with pytest.raises(DurationError, match=f"^bad duration '{text}': .*{reason}"):
        parse_duration(text)


def document(**overrides: object) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": "welcome-series",
        "version": 3,
        "name": "Welcome series",
        "trigger": {"event": "signup"},
        "reentry": "never",
        "exit_when": [{"event": "order_completed"}],
        "goal": {"event": "order_completed", "within": "P14D"},
        "holdout_percent": 10,
        "send_window": {"from": "09:00", "to": "20:00", "timezone": "customer"},
        "priority": 5,
        "frequency_cap": "skip",
        "start": "hello",
        "steps": {
            "hello": {"send": {"channel": "email", "template": "welcome-1"}, "next": "wait-3d"},
            "wait-3d": {"wait": "P3D", "next": "morning"},
            "morning": {"wait": {"until": "09:30", "weekdays": ["mon", "tue"]}, "next": "vip"},
            "vip": {
                "branch": {"field": "customer.vip", "op": "eq", "value": True},
                "then": "split",
                "else": "survey",
            },
            "split": {
                "split": {"a": {"percent": 30, "next": "score"}, "b": {"percent": 70}},
            },
            "score": {"update": {"add_score": "engagement", "by": 5}, "next": "flag"},
            "flag": {"update": {"set_trait": "welcomed", "value": True}, "next": "bday"},
            "bday": {"wait": {"until_trait": "birthday", "offset": "-P1D"}, "next": "survey"},
            "survey": {
                "wait_for": {"event": "survey_completed", "match": "survey_id", "timeout": "P6D"},
                "on_event": "end",
                "on_timeout": "end",
            },
            "end": {"exit": True},
        },
    }
    doc.update(overrides)
    return doc


def test_every_step_kind_parses_into_its_model() -> None:
    journey = JourneyDefinition.model_validate(document())
    steps = journey.steps
    assert isinstance(steps["wait-3d"], WaitStep)
    assert steps["wait-3d"].wait == timedelta(days=3)
    assert isinstance(steps["morning"], WaitStep)
    assert steps["morning"].wait == UntilTime(until=time(9, 30), weekdays=["mon", "tue"])
    assert isinstance(steps["bday"], WaitStep)
    assert isinstance(steps["bday"].wait, UntilDate)
    assert steps["bday"].wait.offset == timedelta(days=-1)
    assert isinstance(steps["vip"], BranchStep)
    assert (steps["vip"].then, steps["vip"].else_) == ("split", "survey")
    assert isinstance(steps["split"], SplitStep)
    assert isinstance(steps["score"], UpdateStep)
    assert isinstance(steps["survey"], WaitForStep)
    assert steps["survey"].wait_for.match == "survey_id"
    assert journey.goal is not None
    assert journey.goal.within == timedelta(days=14)
    assert journey.send_window is not None
    assert journey.send_window.from_ == time(9)


@pytest.mark.parametrize(
    ("trigger", "kind"),
    [
        ({"segment": "vip", "on": "exited"}, SegmentTrigger),
        ({"date_trait": "birthday", "offset": "-P7D", "timezone": "Europe/Madrid"}, DateTrigger),
        ({"inactivity": {"event": "order_completed", "for": "P60D"}}, InactivityTrigger),
    ],
)
def test_other_trigger_kinds_parse(trigger: dict[str, object], kind: type) -> None:
    assert isinstance(JourneyDefinition.model_validate(document(trigger=trigger)).trigger, kind)


def test_reentry_after_a_duration() -> None:
    journey = JourneyDefinition.model_validate(document(reentry={"after": "P30D"}))
    assert journey.reentry == ReentryAfter(after=timedelta(days=30))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"reentry": "sometimes"}, "Input should be 'never' or 'always'"),
        ({"reentry": {"after": "P0D"}}, "must be longer than zero"),
        ({"holdout_percent": 101}, "less than or equal to 100"),
        ({"send_window": {"from": "09:00", "to": "09:00"}}, "the window would never open"),
        ({"send_window": {"from_": "09:00", "to": "20:00"}}, "from_\n  Extra inputs"),
        ({"send_window": {"from": "09:00", "to": "20:00", "timezone": "Mars/Base"}}, "Mars/Base"),
        ({"frequency_cap": "drop"}, "Input should be 'defer' or 'skip'"),
        ({"trigger": {"segmnt": "vip"}}, "a trigger needs one of: event, segment"),
        ({"steps": {"x": {"split": {"a": {"percent": 60}, "b": {"percent": 30}}}}}, "sum to 90"),
        ({"steps": {"x": {"wait": {"until": "25:00"}}}}, "time"),
        ({"steps": {"x": {"wait": "P3D", "send": {}}}}, "Extra inputs are not permitted"),
    ],
)
def test_local_mistakes_are_refused(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        JourneyDefinition.model_validate(document(**change))


def test_the_json_schema_accepts_the_example_and_refuses_a_bad_step() -> None:
    schema = JourneyDefinition.model_json_schema()
    jsonschema.validate(document(), schema)
    bad = document(steps={"hello": {"send": {"channel": "fax", "template": "a"}}})
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_durations_serialise_as_written() -> None:
    journey = JourneyDefinition.model_validate(document())
    dumped = journey.model_dump(mode="json", by_alias=True)
    assert dumped["steps"]["wait-3d"]["wait"] == "P3D"
    assert dumped["goal"]["within"] == "P14D"
    assert JourneyDefinition.model_validate(dumped) == journey


def test_journey_is_the_whole_language() -> None:
    assert Journey is JourneyDefinition


def test_a_keyed_trigger_and_matches_parse() -> None:
    journey = JourneyDefinition.model_validate(
        document(
            trigger={"event": "cart_updated", "key": "cart_id"},
            exit_when=[{"event": "cart_emptied", "match": "cart_id"}],
        )
    )
    assert isinstance(journey.trigger, EventTrigger)
    assert journey.trigger.key == "cart_id"
    assert journey.exit_when[0].match == "cart_id"


@pytest.mark.parametrize(
    "change",
    [
        {"trigger": {"event": "cart_updated", "key": "cart id"}},
        {"exit_when": [{"event": "x", "match": "a.b"}]},
        {"trigger": {"event": "cart_updated", "key": ""}},
    ],
)
def test_key_and_match_name_a_plain_property(change: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match="String should"):
        JourneyDefinition.model_validate(document(**change))


def test_step_kinds_and_targets() -> None:
    steps = JourneyDefinition.model_validate(document()).steps
    assert {name: step_kind(step) for name, step in steps.items()} == {
        "hello": "send",
        "wait-3d": "wait",
        "morning": "wait",
        "vip": "branch",
        "split": "split",
        "score": "update",
        "flag": "update",
        "bday": "wait",
        "survey": "wait_for",
        "end": "exit",
    }
    assert targets(steps["hello"]) == {"next": "wait-3d"}
    assert targets(steps["vip"]) == {"then": "split", "else": "survey"}
    assert targets(steps["split"]) == {"split.a.next": "score"}  # b ends the journey
    assert targets(steps["survey"]) == {"on_event": "end", "on_timeout": "end"}
    assert targets(steps["end"]) == {}


def test_send_defaults() -> None:
    hello = JourneyDefinition.model_validate(document()).steps["hello"]
    assert isinstance(hello, SendStep)
    assert (hello.send.category, hello.send.holdout_percent) == ("marketing", 0)


@pytest.mark.parametrize(
    ("op", "value", "total", "holds"),
    [
        ("gte", 50, "63.90", True),
        ("gte", 50, "49.99", False),
        ("lt", 100, "63.90", True),
        ("gt", 99.5, "100", True),  # as numbers, not as text ("100" < "99.5" as text)
        ("eq", 63.9, "63.90", True),
        ("in", [10, 63.9], "63.90", True),
        ("gte", 50, "a lot", False),
        ("eq", "63.90", "63.90", True),
        ("eq", 1, True, False),
    ],
)
def test_money_as_decimal_strings_compares_as_numbers(
    op: str, value: object, total: object, holds: bool
) -> None:
    """Ingest carries money as decimal strings; a condition written with a number means it."""
    cond = condition({"field": "event.properties.total", "op": op, "value": value})
    assert evaluate(cond, {"event": {"properties": {"total": total}}}) is holds


@pytest.mark.parametrize("text", ["P99999999999999W", "P36526D", "PT99999999999999999H"])
def test_absurdly_long_durations_are_refused_not_crashed_on(text: str) -> None:
    from services.journey.domain.durations import DurationError, parse_duration

    with pytest.raises(DurationError, match="longer than 100 years"):
        parse_duration(text)


WRONG_TYPES = [
    ({"version": True}, "version"),
    ({"version": "1"}, "version"),
    ({"priority": "5"}, "priority"),
    ({"holdout_percent": "10"}, "holdout_percent"),
    ({"steps": {"x": {"split": {"a": {"percent": "50"}, "b": {"percent": 50}}}}}, "percent"),
    ({"trigger": {"date_trait": "birthday", "yearly": "yes"}}, "yearly"),
    ({"send_window": {"from": 32400, "to": "20:00"}}, "from"),
    ({"send_window": {"from": "09:00Z", "to": "20:00"}}, "from"),
    ({"send_window": {"from": "09:00", "to": "20:00+02:00"}}, "to"),
    ({"steps": {"x": {"wait": {"until": "10:00-05:00"}}}}, "until"),
    ({"steps": {"x": {"wait": {"until_trait": "trial_end", "at": "9"}}}}, "at"),
]


@pytest.mark.parametrize(("change", "field"), WRONG_TYPES)
def test_values_of_the_wrong_type_are_refused_as_the_schema_refuses_them(
    change: dict[str, object], field: str
) -> None:
    doc = document(**change)
    with pytest.raises(ValidationError) as caught:
        JourneyDefinition.model_validate(doc)
    assert [e["loc"][-1] for e in caught.value.errors()] == [field]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, JourneyDefinition.model_json_schema())


def test_numbers_take_integers_and_local_times_take_seconds() -> None:
    journey = JourneyDefinition.model_validate(
        document(
            holdout_percent=10,
            send_window={"from": "09:00:30", "to": "20:00"},
            steps={"x": {"update": {"add_score": "engagement", "by": 2}}},
        )
    )
    assert journey.holdout_percent == 10.0
    assert journey.send_window is not None and journey.send_window.from_ == time(9, 0, 30)
    jsonschema.validate(
        journey.model_dump(mode="json", by_alias=True), JourneyDefinition.model_json_schema()
    )


@pytest.mark.parametrize("number", [float("nan"), float("inf")])
def test_a_score_is_a_finite_number(number: float) -> None:
    with pytest.raises(ValidationError, match="finite number"):
        JourneyDefinition.model_validate(
            document(steps={"x": {"update": {"add_score": "engagement", "by": number}}})
        )


@pytest.mark.parametrize("text", ["P1D\n", "P\uff11D", "PT\u0661H"])
def test_a_duration_is_written_in_ascii_digits_and_nothing_after(text: str) -> None:
    with pytest.raises(DurationError, match="expected PnW"):
        parse_duration(text)


def test_an_unknown_time_zone_is_named_in_the_message() -> None:
    doc = document(send_window={"from": "09:00", "to": "20:00", "timezone": "Mars/Base"})
    with pytest.raises(ValidationError) as caught:
        JourneyDefinition.model_validate(doc)
    [error] = caught.value.errors()
    assert error["msg"].startswith("unknown time zone 'Mars/Base': use 'customer' or")


@pytest.mark.parametrize("step", ["x", 3, ["send"], None])
def test_a_step_that_is_no_object_is_told_what_a_step_is(step: object) -> None:
    with pytest.raises(ValidationError) as caught:
        JourneyDefinition.model_validate(document(steps={"x": step}))
    [error] = caught.value.errors()
    assert error["msg"].startswith("a step needs one of: send, exit, wait")
