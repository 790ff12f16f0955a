"""``ciclo simulate``: the real engine over a file of events, on a virtual clock."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from services.cli import main
from services.dispatch.domain.unsubscribe import verify
from services.dispatch.service_layer.handlers import message_variables
from services.journey.simulate import (
    SIMULATED_LINK_SECRET,
    BadInput,
    load_journeys,
    parse_cap,
    parse_events,
    rows,
    simulate,
)
from shared.contracts.messages import TEMPLATE_ROOTS

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "simulate"
JOURNEYS = REPO / "journeys"
TEMPLATES = REPO / "templates"


def invoke(*args: str | Path) -> Any:
    return CliRunner().invoke(
        main,
        ["simulate", "--journeys", str(JOURNEYS), "--templates", str(TEMPLATES)]
        + [str(a) for a in args],
    )


def lines_of(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines()]


def write_events(path: Path, *events: dict[str, Any]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


def signup(customer: str, at: str, **traits: Any) -> dict[str, Any]:
    return {"type": "signup", "customer_id": customer, "occurred_at": at, "traits": traits}


TINY: dict[str, Any] = {
    "id": "tiny",
    "version": 1,
    "name": "Tiny",
    "trigger": {"event": "signup"},
    "start": "hello",
    "steps": {
        "hello": {"send": {"channel": "email", "template": "welcome-1"}, "next": "later"},
        "later": {"wait": "PT1H", "next": "again"},
        "again": {"send": {"channel": "email", "template": "welcome-1"}},
    },
}


def tiny_folder(tmp_path: Path, *docs: dict[str, Any]) -> Path:
    folder = tmp_path / "journeys"
    folder.mkdir()
    for doc in docs or (TINY,):
        (folder / f"{doc['id']}.json").write_text(json.dumps(doc))
    return folder


# ── The command ───────────────────────────────────────────────────────────────────────────────


def test_prints_one_json_line_per_activity_in_time_order() -> None:
    result = invoke("--events", FIXTURES / "shop.jsonl")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    lines = lines_of(result.stdout)
    assert [line["at"] for line in lines] == sorted(line["at"] for line in lines)
    assert lines[0] == {
        "at": "2025-03-03T10:00:00Z",
        "customer_id": "ana",
        "journey_id": "welcome",
        "version": 1,
        "run_id": lines[0]["run_id"],
        "kind": "entered",
        "step": "hello",
        "detail": {"trigger": "signup"},
    }
    sent = lines[1]
    assert sent["kind"] == "sent"
    assert {k: sent[k] for k in ("channel", "template", "category", "step")} == {
        "channel": "email",
        "template": "welcome-1",
        "category": "marketing",
        "step": "hello",
    }
    assert sent["message_id"].startswith("msg_")
    assert "detail" not in sent and "reason" not in sent
    kinds = {line["kind"] for line in lines}
    assert {"entered", "sent", "waited", "branched", "updated", "exited", "goal"} <= kinds
    assert {
        (line["at"], line["customer_id"], line["template"])
        for line in lines
        if line["kind"] == "sent" and line["journey_id"] == "cart_abandonment"
    } == {
        # Updated 40 minutes after it was created: the hour starts again from the update.
        ("2025-03-10T15:40:00Z", "ana", "cart-reminder-1"),
        ("2025-03-11T14:40:00Z", "ana", "cart-reminder-2"),
    }


def test_the_same_file_gives_the_same_output() -> None:
    first = invoke("--events", FIXTURES / "shop.jsonl")
    second = invoke("--events", FIXTURES / "shop.jsonl")
    assert first.exit_code == second.exit_code == 0
    assert first.stdout == second.stdout


def test_table_is_aligned_and_readable() -> None:
    result = invoke("--events", FIXTURES / "shop.jsonl", "--table")
    assert result.exit_code == 0, result.output
    header, *body = result.stdout.splitlines()
    assert header.split() == ["AT", "CUSTOMER", "JOURNEY", "KIND", "STEP", "WHAT"]
    columns = [header.index(name) for name in ("CUSTOMER", "JOURNEY", "KIND", "STEP", "WHAT")]
    for line in body:
        for start in columns:
            assert line[start - 2 : start] == "  " and line[start] != " ", line
    assert body[0].split() == [
        "2025-03-03T10:00:00Z",
        "ana",
        "welcome",
        "v1",
        "entered",
        "hello",
        "on",
        "signup",
    ]
    assert "email welcome-1 (marketing)" in body[1]
    assert any("post_purchase v1" in b and "email order-thanks (transactional)" in b for b in body)
    assert any("survey_completed came" in b for b in body)
    assert any("held" not in b and "until 2025-03-06T10:00:00Z" in b for b in body)


def test_until_stops_the_clock(tmp_path: Path) -> None:
    events = write_events(
        tmp_path / "e.jsonl",
        signup("a", "2025-01-01T10:00:00Z"),
        signup("b", "2025-01-05T10:00:00Z"),  # after --until: not applied
    )
    result = invoke("--events", events, "--until", "2025-01-04T10:00:00+00:00")
    assert result.exit_code == 0, result.output
    sent = [
        (line["at"], line["template"]) for line in lines_of(result.stdout) if "template" in line
    ]
    # The discount is due at 2025-01-04T10:00:00Z, on the stop: it fires.
    assert sent == [
        ("2025-01-01T10:00:00Z", "welcome-1"),
        ("2025-01-04T10:00:00Z", "welcome-2-discount"),
    ]


def test_by_default_the_clock_runs_90_days_past_the_last_event(tmp_path: Path) -> None:
    folder = tiny_folder(
        tmp_path,
        {**TINY, "steps": {**TINY["steps"], "later": {"wait": "P90D", "next": "again"}}},
        {
            **TINY,
            "id": "later",
            "steps": {**TINY["steps"], "later": {"wait": "P91D", "next": "again"}},
        },
    )
    events = write_events(tmp_path / "e.jsonl", signup("a", "2025-01-01T00:00:00Z"))
    result = CliRunner().invoke(
        main,
        ["simulate", "--journeys", str(folder), "--events", str(events)],
        env={"CICLO_TEMPLATES_DIR": str(TEMPLATES)},
    )
    assert result.exit_code == 0, result.output
    last = lines_of(result.stdout)[-1]
    assert (last["at"], last["journey_id"], last["kind"]) == (
        "2025-04-01T00:00:00Z",
        "tiny",
        "exited",
    )
    assert all(line["at"] <= "2025-04-01T00:00:00Z" for line in lines_of(result.stdout))


def test_events_are_applied_in_occurred_at_order_not_file_order(tmp_path: Path) -> None:
    events = write_events(
        tmp_path / "e.jsonl",
        {
            "type": "order_completed",
            "customer_id": "a",
            "occurred_at": "2025-01-01T12:00:00+01:00",  # 11:00 UTC: before the signup
            "properties": {"order_id": "o1", "total": 10, "currency": "EUR"},
        },
        signup("a", "2025-01-01T11:30:00Z"),
    )
    result = invoke("--events", events, "--until", "2025-01-02T00:00:00Z")
    lines = lines_of(result.stdout)
    entered = [(line["at"], line["journey_id"]) for line in lines if line["kind"] == "entered"]
    assert entered[:2] == [
        ("2025-01-01T11:00:00Z", "post_purchase"),
        ("2025-01-01T11:30:00Z", "welcome"),
    ]


def test_frequency_caps_hold_marketing_sends(tmp_path: Path) -> None:
    events = write_events(
        tmp_path / "e.jsonl",
        signup("a", "2025-01-01T10:00:00Z", email="a@example.com"),
        {
            "type": "cart_updated",
            "customer_id": "a",
            "occurred_at": "2025-01-01T11:00:00Z",
            "properties": {"cart_id": "c1", "items": [{"product_id": "p", "price": 5}]},
        },
    )
    result = invoke("--events", events, "--until", "2025-01-02T12:00:00Z", "--cap", "email:1/P1D")
    assert result.exit_code == 0, result.output
    lines = lines_of(result.stdout)
    held = [line for line in lines if line["kind"] == "held"]
    assert [(h["at"], h["step"], h["reason"], h["detail"]) for h in held] == [
        (
            "2025-01-01T12:00:00Z",
            "reminder-1",
            "frequency_cap",
            {"until": "2025-01-02T10:00:00Z"},
        ),
    ]
    sent = [(line["at"], line["template"]) for line in lines if line["kind"] == "sent"]
    assert ("2025-01-02T10:00:00Z", "cart-reminder-1") in sent


def test_sends_held_to_the_same_instant_go_in_priority_order_as_the_poller_fires_them(
    tmp_path: Path,
) -> None:
    # Both sends are held by the send window until 09:00; the cap allows one that day. The
    # poller fires timers due together in descending priority (handle_timers), so the higher
    # journey sends, though the lower one was held first.
    def held_send(journey_id: str, trigger: str, priority: int) -> dict[str, Any]:
        return {
            **TINY,
            "id": journey_id,
            "trigger": {"event": trigger},
            "priority": priority,
            "send_window": {"from": "09:00", "to": "21:00"},
            "steps": {"hello": {"send": {"channel": "email", "template": "welcome-1"}}},
        }

    folder = tiny_folder(tmp_path, held_send("lo", "ping", 1), held_send("hi", "pong", 50))
    events = write_events(
        tmp_path / "e.jsonl",
        {
            "type": "ping",
            "customer_id": "a",
            "occurred_at": "2025-03-03T23:00:00Z",
            "traits": {"email": "a@example.com"},
        },
        {"type": "pong", "customer_id": "a", "occurred_at": "2025-03-03T23:30:00Z"},
    )
    result = CliRunner().invoke(
        main,
        [
            *("simulate", "--journeys", str(folder), "--events", str(events)),
            *("--cap", "email:1/P1D", "--until", "2025-03-06T00:00:00Z"),
        ],
        env={"CICLO_TEMPLATES_DIR": str(TEMPLATES)},
    )
    assert result.exit_code == 0, result.output
    lines = lines_of(result.stdout)
    sent = [(line["at"], line["journey_id"]) for line in lines if line["kind"] == "sent"]
    assert sent == [("2025-03-04T09:00:00Z", "hi"), ("2025-03-05T09:00:00Z", "lo")]
    held = [
        (line["at"], line["journey_id"], line["reason"]) for line in lines if line["kind"] == "held"
    ]
    assert held == [
        ("2025-03-03T23:00:00Z", "lo", "send_window"),
        ("2025-03-03T23:30:00Z", "hi", "send_window"),
        ("2025-03-04T09:00:00Z", "lo", "frequency_cap"),
    ]


def test_a_birthday_at_the_end_of_the_calendar_is_greeted_like_any(tmp_path: Path) -> None:
    # The shipped birthday journey on 1 January of year 1 in Tokyo: the worker once failed the
    # whole event on it (OverflowError), losing the customer's profile with it.
    events = write_events(
        tmp_path / "e.jsonl",
        signup(
            "a",
            "2025-12-20T10:00:00Z",
            email="a@example.com",
            birthday="0001-01-01",
            timezone="Asia/Tokyo",
        ),
    )
    result = invoke("--events", events, "--until", "2026-01-02T00:00:00Z")
    assert result.exit_code == 0, result.output
    sent = [
        (line["at"], line["template"]) for line in lines_of(result.stdout) if "template" in line
    ]
    assert ("2026-01-01T00:00:00Z", "birthday-offer") in sent  # 09:00 in Tokyo on 1 January


def test_timezone_is_the_default_for_customers_without_one(tmp_path: Path) -> None:
    events = write_events(
        tmp_path / "e.jsonl",
        {
            "type": "cart_updated",
            "customer_id": "a",
            "occurred_at": "2025-01-01T03:00:00Z",
            "properties": {"cart_id": "c1", "items": [{"product_id": "p", "price": 5}]},
        },
    )
    result = invoke(
        "--events", events, "--until", "2025-01-01T23:00:00Z", "--timezone", "America/New_York"
    )
    held = [line for line in lines_of(result.stdout) if line["kind"] == "held"]
    # 04:00 UTC is 23:00 in New York: the send window (09:00-21:00) opens at 14:00 UTC.
    assert [(h["at"], h["detail"]["until"]) for h in held] == [
        ("2025-01-01T04:00:00Z", "2025-01-01T14:00:00Z")
    ]


def test_sends_come_back_as_message_sent_unless_told_not_to(tmp_path: Path) -> None:
    events = write_events(
        tmp_path / "e.jsonl",
        signup("a", "2025-01-01T10:00:00Z", email="a@example.com"),
        signup("b", "2025-01-01T10:00:00Z"),  # no address: dispatch fails the message
    )
    result = invoke("--events", events, "--until", "2025-01-01T12:00:00Z")
    counted = [line["customer_id"] for line in lines_of(result.stdout) if line["kind"] == "entered"]
    assert counted == ["a", "b", "a"]  # welcome a, welcome b, sunset counts a's message_sent
    quiet = invoke("--events", events, "--until", "2025-01-01T12:00:00Z", "--no-feedback")
    assert [line["journey_id"] for line in lines_of(quiet.stdout) if line["kind"] == "entered"] == [
        "welcome",
        "welcome",
    ]


def test_a_timer_due_at_an_events_instant_fires_first(tmp_path: Path) -> None:
    cart = {"cart_id": "c1", "items": [{"product_id": "p", "price": 5}]}
    events = write_events(
        tmp_path / "e.jsonl",
        {
            "type": "cart_updated",
            "customer_id": "a",
            "occurred_at": "2025-01-01T10:00:00Z",
            "properties": cart,
        },
        {
            "type": "cart_updated",
            "customer_id": "a",
            "occurred_at": "2025-01-01T11:00:00Z",
            "properties": cart,
        },
    )
    result = invoke("--events", events, "--until", "2025-01-01T12:00:00Z", "--no-feedback")
    lines = [(x["at"], x["kind"], x.get("reason")) for x in lines_of(result.stdout)]
    assert lines == [
        ("2025-01-01T10:00:00Z", "entered", None),
        ("2025-01-01T10:00:00Z", "waited", None),
        ("2025-01-01T11:00:00Z", "waited", "timeout"),
        ("2025-01-01T11:00:00Z", "sent", None),
        ("2025-01-01T11:00:00Z", "waited", None),
    ]


def test_anonymous_visitors_are_simulated_under_their_anonymous_id(tmp_path: Path) -> None:
    events = write_events(
        tmp_path / "e.jsonl",
        {"type": "signup", "anonymous_id": "v1", "occurred_at": "2025-01-01T10:00:00Z"},
    )
    result = invoke("--events", events, "--until", "2025-01-01T11:00:00Z")
    assert {line["customer_id"] for line in lines_of(result.stdout)} == {"anon:v1"}


def test_a_repeated_event_id_is_skipped_with_a_warning(tmp_path: Path) -> None:
    events = write_events(
        tmp_path / "e.jsonl",
        {**signup("a", "2025-01-01T10:00:00Z"), "event_id": "e1"},
        {**signup("b", "2025-01-01T10:05:00Z"), "event_id": "e1"},
    )
    result = invoke("--events", events, "--until", "2025-01-01T11:00:00Z")
    assert result.exit_code == 0
    assert f"{events}:2: event_id 'e1' repeats line 1" in result.stderr
    assert {line["customer_id"] for line in lines_of(result.stdout)} == {"a"}


def test_events_after_until_are_named_in_a_warning(tmp_path: Path) -> None:
    events = write_events(
        tmp_path / "e.jsonl",
        signup("a", "2025-01-01T10:00:00Z"),
        signup("b", "2025-01-03T10:00:00Z"),
    )
    before = invoke("--events", events, "--until", "2024-12-31T00:00:00Z")
    assert before.exit_code == 0
    assert before.stdout == ""
    assert "warning: 2 of 2 events occur after --until 2024-12-31T00:00:00Z" in before.stderr
    between = invoke("--events", events, "--until", "2025-01-02T00:00:00Z")
    assert "warning: 1 of 2 events occur after --until" in between.stderr
    assert {line["customer_id"] for line in lines_of(between.stdout)} == {"a"}
    after = invoke("--events", events, "--until", "2025-01-04T00:00:00Z")
    assert after.stderr == ""


# ── Bad input: exit 2, every problem on stderr ────────────────────────────────────────────────


def test_bad_events_name_the_line_and_the_field(tmp_path: Path) -> None:
    events = tmp_path / "bad.jsonl"
    events.write_text(
        "\n".join(
            [
                json.dumps(signup("a", "2025-01-01T10:00:00Z")),
                "{not json",
                "",
                json.dumps(
                    {
                        "type": "order_completed",
                        "customer_id": "a",
                        "occurred_at": "2025-01-01T10:00:00",
                        "properties": {"order_id": "o1", "total": "ten", "currency": "EUR"},
                    }
                ),
                json.dumps({"type": "signup", "customer_id": "a"}),
                json.dumps({"type": "signup", "occurred_at": "2025-01-01T10:00:00Z"}),
                json.dumps(
                    {
                        "type": "signup",
                        "customer_id": "a",
                        "occurred_at": "2025-01-01T10:00:00Z",
                        "traits": {"email": "nope"},
                    }
                ),
                "[]",
            ]
        )
    )
    result = invoke("--events", events)
    assert result.exit_code == 2
    assert result.stdout == ""
    problems = result.stderr.splitlines()
    # The address check's wording is email-validator's own.
    assert problems[5].startswith(f"{events}:7: traits.email: not a valid email address: ")
    del problems[5]
    assert problems == [
        f"{events}:2: not valid JSON: Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1)",
        f"{events}:4: occurred_at: Input should have timezone info",
        f"{events}:4: properties.total: 'ten' is not a decimal amount: send a JSON number or a "
        "string such as \"59.90\" (ASCII digits and one point; no underscores, exponents or '+')",
        f"{events}:5: occurred_at: required in a simulation (RFC 3339 with a zone)",
        f"{events}:6: $: customer_id or anonymous_id is required",
        f"{events}:8: an event is a JSON object",
    ]


def test_a_line_separator_inside_a_json_string_does_not_split_the_line(tmp_path: Path) -> None:
    # JSON carries U+2028 and U+0085 unescaped in strings (JSON.stringify writes them so);
    # str.splitlines() split there, and a valid file was refused at lines that do not exist.
    events = tmp_path / "e.jsonl"
    lines = [
        {**signup("a", "2025-01-01T10:00:00Z", first_name="Ana\u2028Maria\x85")},
        signup("b", "2025-01-01T10:05:00Z"),
    ]
    events.write_text("".join(json.dumps(e, ensure_ascii=False) + "\r\n" for e in lines))
    result = invoke("--events", events, "--until", "2025-01-01T11:00:00Z")
    assert result.exit_code == 0, result.stderr
    assert {line["customer_id"] for line in lines_of(result.stdout)} == {"a", "b"}


def test_a_byte_order_mark_is_no_part_of_the_first_line(tmp_path: Path) -> None:
    events = tmp_path / "e.jsonl"
    events.write_text(json.dumps(signup("a", "2025-01-01T10:00:00Z")) + "\n", encoding="utf-8-sig")
    result = invoke("--events", events, "--until", "2025-01-01T11:00:00Z")
    assert result.exit_code == 0, result.stderr
    assert {line["customer_id"] for line in lines_of(result.stdout)} == {"a"}


def test_a_line_nested_too_deeply_is_named_not_a_traceback(tmp_path: Path) -> None:
    events = tmp_path / "e.jsonl"
    events.write_text(json.dumps(signup("a", "2025-01-01T10:00:00Z")) + "\n" + "[" * 100_000)
    result = invoke("--events", events)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [f"{events}:2: nested too deeply to be an event"]


def test_missing_events_file_is_bad_input(tmp_path: Path) -> None:
    result = invoke("--events", tmp_path / "nope.jsonl")
    assert result.exit_code == 2
    assert "nope.jsonl: cannot read" in result.stderr


def test_bad_journeys_are_reported_like_validate(tmp_path: Path) -> None:
    bad = json.loads(json.dumps(TINY))
    bad["steps"]["hello"]["send"]["template"] = "no-such-template"
    bad["steps"]["later"]["wait"] = "P1M"
    folder = tiny_folder(tmp_path, bad)
    events = write_events(tmp_path / "e.jsonl", signup("a", "2025-01-01T10:00:00Z"))
    command = ["simulate", "--journeys", str(folder), "--templates", str(TEMPLATES)]
    result = CliRunner().invoke(main, [*command, "--events", str(events)])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{folder / 'tiny.json'}: $.steps.later.wait: bad duration 'P1M': years and months have "
        "no fixed length; use weeks or days (P4W, P30D)",
    ]
    bad["steps"]["later"]["wait"] = "P1D"
    (folder / "tiny.json").write_text(json.dumps(bad))
    result = CliRunner().invoke(main, [*command, "--events", str(events)])
    assert result.exit_code == 2
    assert result.stderr == (
        f"{folder / 'tiny.json'}: $.steps.hello.send.template: unknown template "
        "'no-such-template'\n"
    )


def test_a_journey_id_defined_twice_is_bad_input(tmp_path: Path) -> None:
    folder = tiny_folder(tmp_path)
    (folder / "copy.json").write_text(json.dumps(TINY))
    with pytest.raises(BadInput, match=r"journey 'tiny' is also defined in .*copy\.json"):
        load_journeys(folder, templates=TEMPLATES)


def test_no_journeys_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="no journeys"):
        load_journeys(tmp_path, templates=TEMPLATES)
    with pytest.raises(BadInput, match="not a directory"):
        load_journeys(tmp_path / "nope", templates=TEMPLATES)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--until", "2025-01-01"], "--until '2025-01-01': needs a zone (Z or ±hh:mm)"),
        (["--until", "soon"], "--until 'soon': expected RFC 3339"),
        (["--timezone", "Mars/Base"], "--timezone 'Mars/Base': not an IANA time zone"),
        (["--cap", "push:1/P1D"], "--cap 'push:1/P1D': channel is email or sms"),
        (["--cap", "email:0/P1D"], "--cap 'email:0/P1D': limit is a whole number ≥ 1"),
        (["--cap", "email:2/P1M"], "--cap 'email:2/P1M': bad duration 'P1M'"),
        (["--cap", "email:2/P0D"], "--cap 'email:2/P0D': the period must be longer than zero"),
        (["--workspace", ""], "--workspace '': 1 to 64 characters"),
    ],
)
def test_bad_options_exit_2(args: list[str], message: str) -> None:
    result = invoke("--events", FIXTURES / "shop.jsonl", *args)
    assert result.exit_code == 2
    assert result.stderr.startswith(message), result.stderr


def test_parse_cap() -> None:
    cap = parse_cap("sms:2/PT12H")
    assert (cap.channel, cap.limit, cap.per.total_seconds()) == ("sms", 2, 12 * 3600)


# ── The library ───────────────────────────────────────────────────────────────────────────────


def test_events_are_normalised_like_ingested_ones() -> None:
    events = parse_events(
        [
            json.dumps(
                {
                    "type": "order_completed",
                    "customer_id": "a",
                    "occurred_at": "2025-01-01T12:00:00+02:00",
                    "properties": {"order_id": 7, "total": 9.5, "currency": "eur"},
                    "traits": {"email": "Ana@Example.COM"},
                }
            )
        ],
        workspace_id="w",
    ).events
    [event] = events
    assert event.event_id == "line-1"
    assert event.occurred_at.isoformat() == "2025-01-01T10:00:00+00:00"
    assert event.properties == {"order_id": "7", "total": "9.5", "currency": "EUR"}
    assert event.traits == {"email": "Ana@example.com"}
    assert event.source == "simulate"


def _links_of(variables: dict[str, Any]) -> dict[str, str]:
    return {k: variables[k] for k in ("unsubscribe_url", "preferences_url")}


def test_a_simulated_message_has_signed_links_to_its_address() -> None:
    catalog = load_journeys(JOURNEYS, templates=TEMPLATES)
    line = signup("a", "2025-01-01T10:00:00Z", email="ana@example.com")
    events = parse_events([json.dumps(line)], workspace_id="sim").events
    first = simulate(catalog, events, feedback=False).sent[0]
    token = first.variables()["unsubscribe_url"].removeprefix("http://localhost:8000/u/")
    claims = verify(token, secret=SIMULATED_LINK_SECRET)
    assert (claims.customer_id, claims.address, claims.message_id) == (
        "a",
        "ana@example.com",
        first.message_id,
    )


def test_simulate_exposes_what_dispatch_would_render() -> None:
    catalog = load_journeys(JOURNEYS, templates=TEMPLATES)
    events = parse_events(
        [json.dumps(signup("a", "2025-01-01T10:00:00Z", first_name="Ana"))], workspace_id="sim"
    ).events
    sim = simulate(catalog, events, feedback=False)
    first = sim.sent[0]
    variables = first.variables()
    # dispatch's own definition, given the request the journey service would send
    assert variables == message_variables(first.request(), _links_of(variables))
    assert set(variables) == TEMPLATE_ROOTS - {"codes"}  # codes are drawn at the render
    assert variables["customer"] == {"first_name": "Ana", "id": "a"}
    assert variables["event"] == {"type": "signup", "id": "line-1", "properties": {}}
    assert variables["message"] == {"id": first.message_id, "category": "marketing"}
    # customer intelligence as the journey knew it at the send
    assert (variables["stage"], variables["lead"]["band"]) == ("subscriber", "cold")
    assert variables["profile"]["order_count"] == 0
    assert (variables["rfm"], variables["predictions"], variables["segments"]) == ({}, {}, [])
    assert variables["unsubscribe_url"].startswith("http://localhost:8000/u/")
    assert variables["preferences_url"].startswith("http://localhost:8000/preferences/")
    assert [r["template"] for r in rows(sim) if r["kind"] == "sent"] == [
        "welcome-1",
        "welcome-2-discount",
        "welcome-3-survey-reminder",
    ]
