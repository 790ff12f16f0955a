"""``ciclo simulate``: run journeys over a file of events on a virtual clock.

The simulator drives the same code as the journey service — ``apply_event`` and ``apply_timer``
on a ``CustomerState`` per customer — with time taken from the events instead of the wall clock:

* events (JSON lines, each like a body of ``POST /v1/events``) are validated and normalised
  exactly as ingest does (``parse_event`` then the shared encoder), and applied in
  ``occurred_at`` order with ``now = occurred_at``;
* the customers' timers (waits, wait_for timeouts, held sends, date and inactivity triggers) fire
  in time order between events, and after the last one up to ``until``; a timer due at the same
  instant as an event fires first, as a durable timer would;
* every message the journeys send comes back as a ``message_sent`` event at the same instant (or
  ``message_failed`` when the customer has no address on the channel), as dispatch emits it, so
  journeys that listen to sends (sunset) run as they would in production.

Nothing here touches a database, the bus or a provider. The output is the customers' timelines:
one ``Activity`` per line.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from services.journey.domain import engine
from services.journey.domain.catalog import JourneyCatalog
from services.journey.domain.customer import (
    Activity,
    Changes,
    CustomerState,
    apply_event,
    apply_timer,
    drop_untracked,
    jsonable,
    rfc3339,
    timer_priority,
)
from services.journey.domain.definitions import Journey
from services.journey.domain.durations import DurationError, parse_duration
from services.journey.domain.localtime import zone
from services.journey.service_layer.handlers import message_request
from shared.contracts.events import EventEnvelope
from shared.contracts.messages import MessageRequest

DEFAULT_HORIZON = timedelta(days=90)
"""Without ``until``, the clock runs on this long after the last event."""


class BadInput(Exception):
    """The journeys or the events cannot be simulated; ``problems`` says each reason."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


# ── Inputs ────────────────────────────────────────────────────────────────────────────────────


def load_journeys(folder: Path, *, templates: Path | None) -> JourneyCatalog:
    """Every ``*.json`` journey in ``folder``, checked like ``ciclo journeys validate`` (with
    the template ids under ``templates``, unless None)."""
    from services.journey.adapters.files import check_document, read_document, template_ids
    from services.journey.errors import InvalidJourney

    if not folder.is_dir():
        raise BadInput([f"{folder}: not a directory"])
    paths = sorted(folder.glob("*.json"))
    if not paths:
        raise BadInput([f"{folder}: no journeys (*.json)"])
    known = template_ids(templates) if templates is not None else None
    if templates is not None and not templates.is_dir():
        raise BadInput([f"{templates}: templates directory not found"])
    problems: list[str] = []
    journeys: list[tuple[Path, Journey]] = []
    for path in paths:
        try:
            document = read_document(path)
        except InvalidJourney as exc:
            problems.append(str(exc))
            continue
        found = check_document(document, templates=known)
        problems.extend(f"{path}: {p}" for p in found)
        if not found:
            journeys.append((path, Journey.model_validate(document)))
    seen: dict[str, Path] = {}
    for path, journey in journeys:
        if journey.id in seen:
            problems.append(
                f"{path}: $.id: journey {journey.id!r} is also defined in {seen[journey.id]}"
            )
        seen.setdefault(journey.id, path)
    if problems:
        raise BadInput(problems)
    return JourneyCatalog(j for _, j in journeys)


@dataclass(frozen=True, slots=True)
class Events:
    events: list[EventEnvelope]
    """Valid events in ``occurred_at`` order (file order among equal times)."""
    warnings: list[str] = field(default_factory=list)


def read_events(path: Path, *, workspace_id: str) -> Events:
    """Parse a JSON-lines file of native events; BadInput lists every bad line and field."""
    try:
        # utf-8-sig: the byte-order mark Windows editors put first is no part of line 1.
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput([f"{path}: cannot read: {exc}"]) from exc
    # Lines end at "\n" (and "\r\n") only: str.splitlines() also splits at U+2028, U+0085 and
    # others, which JSON carries unescaped inside strings (JSON.stringify writes them so).
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return parse_events(lines, workspace_id=workspace_id, source=str(path))


def parse_events(lines: Iterable[str], *, workspace_id: str, source: str = "events") -> Events:
    """Validate and normalise events as ingest does (``parse_event`` and the shared encoder).

    ``occurred_at`` is required (the virtual clock runs on it). An event without ``event_id``
    gets ``line-<n>``, so that runs and message ids are the same on every simulation of the
    file. A repeated ``event_id`` is skipped, as the journey service skips a retried event.
    """
    from services.ingest.catalogue import error_field, parse_event
    from services.ingest.envelope import encode_event

    if not 1 <= len(workspace_id) <= 64:
        raise BadInput([f"--workspace {workspace_id!r}: 1 to 64 characters"])
    problems: list[str] = []
    warnings: list[str] = []
    events: list[EventEnvelope] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        try:
            data = json.loads(line)
        except ValueError as exc:
            problems.append(f"{where}: not valid JSON: {exc}")
            continue
        except RecursionError:
            problems.append(f"{where}: nested too deeply to be an event")
            continue
        if not isinstance(data, dict):
            problems.append(f"{where}: an event is a JSON object")
            continue
        if data.get("occurred_at") is None:
            problems.append(
                f"{where}: occurred_at: required in a simulation (RFC 3339 with a zone)"
            )
            continue
        try:
            event = parse_event(data)
        except ValidationError as exc:
            for error in exc.errors():
                message = error["msg"].removeprefix("Value error, ")
                problems.append(f"{where}: {error_field(error['loc'])}: {message}")
            continue
        event_id = event.event_id or f"line-{number}"
        if event_id in first_line:
            warnings.append(
                f"{where}: event_id {event_id!r} repeats line {first_line[event_id]}: skipped, "
                "as the journey service skips a retried event"
            )
            continue
        first_line[event_id] = number
        assert event.occurred_at is not None
        try:
            record = encode_event(
                event,
                workspace_id=workspace_id,
                received_at=event.occurred_at,
                source="simulate",
                event_id=event_id,
            )
        except TypeError as exc:
            problems.append(f"{where}: the event cannot be encoded: {exc}")
            continue
        events.append(EventEnvelope.from_json(record.value))
    if problems:
        raise BadInput(problems)
    events.sort(key=lambda e: e.occurred_at)  # stable: file order among equal times
    return Events(events, warnings)


def parse_cap(text: str) -> engine.Cap:
    """``email:3/P7D`` → at most 3 marketing emails per 7 days."""
    name, _, rest = text.partition(":")
    limit, _, per = rest.partition("/")
    channel: engine.Channel
    if name == "email":
        channel = "email"
    elif name == "sms":
        channel = "sms"
    else:
        raise BadInput([f"--cap {text!r}: channel is email or sms (e.g. 'email:3/P7D')"])
    try:
        count = int(limit)
    except ValueError:
        count = 0
    if count < 1:
        raise BadInput([f"--cap {text!r}: limit is a whole number ≥ 1 (e.g. 'email:3/P7D')"])
    try:
        period = parse_duration(per)
    except DurationError as exc:
        raise BadInput([f"--cap {text!r}: {exc}"]) from exc
    if period <= timedelta(0):
        raise BadInput([f"--cap {text!r}: the period must be longer than zero"])
    return engine.Cap(channel=channel, limit=count, per=period)


def parse_policy(*, timezone: str = "UTC", caps: Iterable[str] = ()) -> engine.Policy:
    try:
        zone(timezone)
    except (ValueError, KeyError) as exc:  # ZoneInfoNotFoundError is a KeyError
        raise BadInput([f"--timezone {timezone!r}: not an IANA time zone"]) from exc
    return engine.Policy(caps=tuple(parse_cap(c) for c in caps), default_timezone=timezone)


def parse_instant(text: str, *, option: str = "--until") -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise BadInput(
            [f"{option} {text!r}: expected RFC 3339, e.g. 2025-06-01T00:00:00Z"]
        ) from exc
    if value.tzinfo is None:
        raise BadInput([f"{option} {text!r}: needs a zone (Z or ±hh:mm)"])
    return value.astimezone(UTC)


# ── The virtual clock ─────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class Sent:
    """A message a run asked for, with what dispatch would render it from."""

    at: datetime
    customer_id: str
    journey_id: str
    version: int
    step: str
    channel: str
    template: str
    category: str
    message_id: str
    message: MessageRequest
    """The request the journey service would put on ``ciclo.messages`` (built by the same
    ``message_request``): the profile snapshot at the send and the event that started the run."""

    def request(self) -> MessageRequest:
        return self.message

    @property
    def recipient(self) -> Mapping[str, Any]:
        return self.message.recipient

    def variables(self) -> dict[str, Any]:
        """The template variables dispatch renders this message with: dispatch's own
        ``message_variables`` of the request, with links signed as a real send's are (with
        the development secret and URL: they are shown, never followed). A customer without
        an address gets links to nobody: dispatch would fail that message unrendered."""
        from services.dispatch.domain.unsubscribe import preferences_url, unsubscribe_url
        from services.dispatch.service_layer.handlers import message_variables
        from services.dispatch.service_layer.links import SignedLinks

        request = self.request()
        address = self.recipient.get("email" if self.channel == "email" else "phone")
        links = SignedLinks(public_url=SIMULATED_PUBLIC_URL, secret=SIMULATED_LINK_SECRET)
        try:
            _, link_variables = links.for_message(request, str(address or ""))
        except ValueError:  # no address, or one dispatch would refuse
            link_variables = {
                "unsubscribe_url": unsubscribe_url(SIMULATED_PUBLIC_URL, "no-address"),
                "preferences_url": preferences_url(SIMULATED_PUBLIC_URL, "no-address"),
            }
        return message_variables(request, link_variables)


SIMULATED_PUBLIC_URL = "http://localhost:8000"
SIMULATED_LINK_SECRET = "ciclo-simulate"  # signs links nobody follows


_TIMER, _EVENT = 0, 1  # at one instant, due timers fire before events


@dataclass
class Simulation:
    """Customers' states on a virtual clock: a queue of events and timers, taken in time order.

    After ``run``: ``activity`` holds every line of every customer's timeline, ``sent`` every
    message asked for, and ``states`` each customer's final state."""

    catalog: JourneyCatalog
    policy: engine.Policy = field(default_factory=engine.Policy)
    workspace_id: str = "sim"
    feedback: bool = True
    """Feed each send back as dispatch's ``message_sent`` (or ``message_failed``) event."""
    states: dict[str, CustomerState] = field(default_factory=dict)
    activity: list[Activity] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)
    _queue: list[tuple[datetime, int, tuple[int, str, str], int, Any]] = field(
        default_factory=list, init=False, repr=False
    )
    """(at, timer or event, order of timers due together, sequence, payload). Timers due
    together fire as the poller fires them (``handle_timers``): higher journey priority
    first, then by customer and timer name."""
    _seq: int = field(default=0, init=False, repr=False)
    _timers: dict[str, dict[str, datetime]] = field(default_factory=dict, init=False, repr=False)
    """Per customer, the timers queued: name → due (the queue may hold stale entries too)."""

    def run(self, events: Iterable[EventEnvelope], *, until: datetime | None = None) -> None:
        """Apply ``events`` and the timers they set, in time order, up to ``until`` (default:
        the last event + ``DEFAULT_HORIZON``). Events after ``until`` are not applied."""
        events = list(events)
        if until is None:
            last = max((e.occurred_at for e in events), default=None)
            if last is None:
                return
            until = last + DEFAULT_HORIZON
        for event in events:
            self._push(event.occurred_at, _EVENT, event)
        while self._queue and self._queue[0][0] <= until:
            at, kind, _, _, payload = heapq.heappop(self._queue)
            if kind == _TIMER:
                self._fire(payload, at)
            else:
                self._apply(payload, at)

    # ── internals ──

    def _push(self, at: datetime, kind: int, payload: Any) -> None:
        self._seq += 1
        order = (0, "", "")
        if kind == _TIMER:
            subject, name = payload
            priority = timer_priority(self.states.get(subject), name, self.catalog)
            order = (-priority, subject, name)
        heapq.heappush(self._queue, (at, kind, order, self._seq, payload))

    def _state(self, subject: str) -> CustomerState:
        state = self.states.get(subject)
        if state is None:
            state = self.states[subject] = CustomerState(
                workspace_id=self.workspace_id, customer_id=subject
            )
        return state

    def _apply(self, event: EventEnvelope, now: datetime) -> None:
        state = self._state(event.subject)
        drop_untracked(state, now)
        changes = apply_event(
            state, event, catalog=self.catalog, policy=self.policy, now=now, live=True
        )
        self._record(state, changes, now)

    def _fire(self, timer: tuple[str, str], now: datetime) -> None:
        subject, name = timer
        queued = self._timers.get(subject, {})
        if queued.get(name) != now:
            return  # moved or cancelled since it was queued
        del queued[name]
        state = self.states[subject]
        if state.timers().get(name) != now:  # pragma: no cover - _timers mirrors timers()
            return
        drop_untracked(state, now)
        changes = apply_timer(state, name, catalog=self.catalog, policy=self.policy, now=now)
        self._record(state, changes, now)

    def _record(self, state: CustomerState, changes: Changes, now: datetime) -> None:
        self.activity.extend(changes.activity)
        for outgoing in changes.messages:
            send, instance = outgoing.send, outgoing.instance
            sent = Sent(
                at=now,
                customer_id=state.customer_id,
                journey_id=instance.journey_id,
                version=instance.version,
                step=send.step,
                channel=send.channel,
                template=send.template,
                category=send.category,
                message_id=send.message_id,
                message=message_request(outgoing, state, now),
            )
            self.sent.append(sent)
            if self.feedback:
                self._push(now, _EVENT, self._dispatched(sent))
        # Queue the state's timers that are new or moved; stale queue entries are skipped.
        wanted = state.timers()
        queued = self._timers.setdefault(state.customer_id, {})
        for name, due in wanted.items():
            if queued.get(name) != due:
                self._push(due, _TIMER, (state.customer_id, name))
        queued.clear()
        queued.update(wanted)

    def _dispatched(self, sent: Sent) -> EventEnvelope:
        """The event dispatch emits for a message (see the dispatch handler's ``_event``)."""
        address = "email" if sent.channel == "email" else "phone"
        status = "sent" if sent.recipient.get(address) else "failed"
        properties: dict[str, Any] = {
            "message_id": sent.message_id,
            "channel": sent.channel,
            "template": sent.template,
            "category": sent.category,
            "journey_id": sent.journey_id,
            "journey_version": sent.version,
            "step": sent.step,
            "provider": "simulate",
            "attempts": 1 if status == "sent" else 0,
        }
        if status == "failed":
            properties["reason"] = f"recipient has no {address}"
        return EventEnvelope(
            event_id=f"{sent.message_id}:{status}",
            workspace_id=self.workspace_id,
            customer_id=sent.customer_id,
            type=f"message_{status}",
            occurred_at=sent.at,
            received_at=sent.at,
            source="dispatch",
            properties=properties,
        )


def simulate(
    catalog: JourneyCatalog,
    events: Iterable[EventEnvelope],
    *,
    until: datetime | None = None,
    policy: engine.Policy | None = None,
    workspace_id: str = "sim",
    feedback: bool = True,
) -> Simulation:
    sim = Simulation(
        catalog, policy or engine.Policy(), workspace_id=workspace_id, feedback=feedback
    )
    sim.run(events, until=until)
    return sim


# ── Output ────────────────────────────────────────────────────────────────────────────────────


_SEND_FIELDS = ("channel", "template", "message_id")


def row(activity: Activity, categories: Mapping[str, str] | None = None) -> dict[str, Any]:
    """One output line: at, customer_id, journey_id, version, run_id, kind, step; for sends
    channel, template, category and message_id; reason and detail when present."""
    out: dict[str, Any] = {
        "at": rfc3339(activity.at),
        "customer_id": activity.customer_id,
        "journey_id": activity.journey_id,
        "version": activity.version,
        "run_id": activity.run_id,
        "kind": activity.kind,
        "step": activity.step,
    }
    detail = dict(activity.detail)
    if activity.kind == "sent":
        for name in _SEND_FIELDS:
            out[name] = detail.pop(name, None)
        if categories is not None and out["message_id"] in categories:
            out["category"] = categories[out["message_id"]]
    if activity.reason is not None:
        out["reason"] = activity.reason
    if detail:
        out["detail"] = jsonable(detail)
    return out


def rows(sim: Simulation) -> list[dict[str, Any]]:
    categories = {s.message_id: s.category for s in sim.sent}
    return [row(a, categories) for a in sim.activity]


def json_lines(lines: Iterable[Mapping[str, Any]]) -> str:
    return "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)


def _what(line: Mapping[str, Any]) -> str:
    """The last column of the table: what happened, in a few words."""
    detail: Mapping[str, Any] = line.get("detail", {})
    reason = line.get("reason")
    kind = line["kind"]
    if kind == "sent":
        category = line.get("category")
        return f"{line['channel']} {line['template']}" + (f" ({category})" if category else "")
    if kind == "entered":
        return f"on {detail.get('trigger')}"
    if kind == "waited":
        if reason is not None:
            event = detail.get("event")
            return f"{event} came" if reason == "event" else f"timeout ({event})"
        if "event" in detail:
            return f"for {detail['event']} until {detail.get('until')}"
        return f"until {detail.get('until')}"
    if kind == "held":
        return f"{reason} until {detail.get('until')}"
    if kind == "branched":
        return str(detail.get("branch"))
    if kind == "updated":
        if "trait" in detail:
            return f"trait {detail['trait']}"
        if "by" in detail:
            return f"score {detail['score']} {detail['by']:+g}"
        return f"score {detail.get('score')} = {detail.get('value')}"
    if kind == "goal":
        return f"{detail.get('event')}"
    parts = [str(reason)] if reason is not None else []
    parts.extend(f"{k}={v}" for k, v in detail.items())
    return " ".join(parts)


def table(lines: Sequence[Mapping[str, Any]]) -> str:
    """The lines as an aligned, readable table (one row per activity)."""
    header = ("AT", "CUSTOMER", "JOURNEY", "KIND", "STEP", "WHAT")
    body = [
        (
            str(line["at"]),
            str(line["customer_id"]),
            f"{line['journey_id']} v{line['version']}",
            str(line["kind"]),
            str(line["step"] or "-"),
            _what(line),
        )
        for line in lines
    ]
    widths = [max(len(r[i]) for r in (header, *body)) for i in range(len(header) - 1)]
    out = []
    for r in (header, *body):
        cells = [c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)]
        out.append("  ".join([*cells, r[-1]]).rstrip())
    return "\n".join(out) + "\n"
