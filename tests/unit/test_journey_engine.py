from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from services.journey.domain import engine
from services.journey.domain.definitions import Journey
from shared.clock import VirtualClock

START = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def welcome(**overrides: object) -> Journey:
    doc: dict[str, object] = {
        "id": "welcome",
        "version": 1,
        "name": "Welcome",
        "trigger": {"event": "signup"},
        "start": "hello",
        "steps": {
            "hello": {"send": {"channel": "email", "template": "welcome-1"}, "next": "end"},
            "end": {"exit": True},
        },
    }
    doc.update(overrides)
    return Journey.model_validate(doc)


def test_entering_sends_the_first_step_and_completes() -> None:
    clock = VirtualClock(START)
    journey = welcome()
    instance, effects = engine.enter(
        journey, workspace_id="demo", customer_id="c1", run_id="r1", now=clock.now()
    )
    sends = [e for e in effects if isinstance(e, engine.RequestMessage)]
    assert [(s.step, s.channel, s.template) for s in sends] == [("hello", "email", "welcome-1")]
    assert instance.status == "completed"
    assert instance.step == "end"
    assert instance.entered_at == START


def test_replaying_an_entry_asks_for_the_same_message() -> None:
    journey = welcome()
    run_id = engine.run_id_for(journey, workspace_id="demo", customer_id="c1", event_id="e1")
    first = engine.enter(journey, workspace_id="demo", customer_id="c1", run_id=run_id, now=START)
    later = START + timedelta(hours=5)
    again = engine.enter(journey, workspace_id="demo", customer_id="c1", run_id=run_id, now=later)
    assert first[1][0] == again[1][0]


def test_different_triggering_events_give_different_runs() -> None:
    journey = welcome()
    a = engine.run_id_for(journey, workspace_id="demo", customer_id="c1", event_id="e1")
    b = engine.run_id_for(journey, workspace_id="demo", customer_id="c1", event_id="e2")
    assert a != b


def test_two_sends_in_a_row_each_get_their_own_message() -> None:
    journey = welcome(
        steps={
            "hello": {"send": {"channel": "email", "template": "a"}, "next": "sms"},
            "sms": {"send": {"channel": "sms", "template": "b"}},
        }
    )
    _, effects = engine.enter(journey, workspace_id="w", customer_id="c", run_id="r", now=START)
    sends = [e for e in effects if isinstance(e, engine.RequestMessage)]
    assert [s.step for s in sends] == ["hello", "sms"]
    assert len({s.message_id for s in sends}) == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"start": "nope"}, "start: unknown step 'nope'"),
        (
            {"steps": {"hello": {"send": {"channel": "email", "template": "a"}, "next": "gone"}}},
            "steps.hello.next: unknown step 'gone'",
        ),
        ({"steps": {"hello": {"wait_forever": True}}}, "a step needs one of: send, exit"),
        ({"steps": {"hello": {"send": {"channel": "fax", "template": "a"}}}}, "channel"),
        ({"version": 0}, "greater than or equal to 1"),
    ],
)
def test_invalid_definitions_say_where(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(")):
        welcome(**change)
