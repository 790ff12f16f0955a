"""Checks on a journey document beyond its schema, reported as (JSON path, message) problems.

``validate_journey`` runs in two passes: the schema (every field error pydantic finds, with its
path), then, once the document has the right shape, the step graph — unknown step references,
unreachable steps, loops that pass no wait, unknown templates, and a ``match`` (in a wait_for
or exit_when) in a journey whose trigger is not an event. A ``key`` on such a trigger is a schema
error, reported with the same reason. Every problem of a pass is returned, not just the first.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError

from services.journey.domain.definitions import (
    EventTrigger,
    JourneyDefinition,
    SendStep,
    WaitForStep,
    WaitStep,
    targets,
)


@dataclass(frozen=True, slots=True)
class Problem:
    path: str
    """JSON path of the offending value, e.g. ``$.steps.hello.next``."""
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def json_path(parts: Iterable[str | int]) -> str:
    """``$.steps.hello.next`` from ``("steps", "hello", "next")``; odd keys in brackets."""
    path = "$"
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(part):
            path += f".{part}"
        else:
            path += f"[{part!r}]"
    return path


_NO_EVENT = {
    "segment": "a segment trigger",
    "date_trait": "a date trigger",
    "inactivity": "an inactivity trigger",
}
"""Triggers that start a run without an event of the customer's: nothing to match or key on."""


def schema_problems(exc: ValidationError) -> list[Problem]:
    """Translate pydantic's errors into problems with JSON paths."""
    problems = []
    for error in exc.errors():
        # Union tags ("~send") are pydantic's bookkeeping, not part of the document.
        raw = error["loc"]
        loc = [p for p in raw if not (isinstance(p, str) and p.startswith("~"))]
        message = error["msg"].removeprefix("Value error, ")
        if loc and loc[-1] == "[key]":
            loc, message = loc[:-1], f"bad name: {message}"
        elif (
            error["type"] == "extra_forbidden"
            and len(raw) == 3
            and raw[0] == "trigger"
            and raw[2] == "key"
            and isinstance(raw[1], str)
            and raw[1][1:] in _NO_EVENT
        ):
            # The key is only a field of event triggers; say why rather than "extra input".
            message = (
                f"'key' needs an event trigger ({_NO_EVENT[raw[1][1:]]} carries no event "
                "properties to key runs on)"
            )
        problems.append(Problem(json_path(loc), message))
    return problems


class _Object(dict[str, Any]):
    """A JSON object as ``loads_document`` read it, with the keys it gave more than once."""

    __slots__ = ("repeated",)

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__(pairs)
        seen: set[str] = set()
        self.repeated: list[str] = []
        for key, _ in pairs:
            if key in seen and key not in self.repeated:
                self.repeated.append(key)
            seen.add(key)


def loads_document(text: str | bytes) -> Any:
    """A JSON text as ``json.loads`` reads it, each object remembering the keys it repeats,
    for ``json_problems``: ``json.loads`` keeps the last value of a key given twice, so a step
    written twice under one name would silently lose the first. Raises ``ValueError`` when the
    text is not JSON, ``TooDeep`` (a ValueError) when it nests deeper than the parser follows."""
    try:
        return json.loads(text, object_pairs_hook=_Object)
    except RecursionError:
        raise TooDeep(
            "nested too deeply to read (a journey needs a few levels, not hundreds)"
        ) from None


class TooDeep(ValueError):
    """A JSON text nested deeper than ``json.loads`` can follow (it raised RecursionError)."""


def json_problems(document: Any, at: tuple[str | int, ...] = ()) -> list[Problem]:
    """What JSON parsing hid: each key given twice in one object of a document
    ``loads_document`` read (a document read otherwise has none to report), and each number
    that is no finite number (``1e400`` reads as infinity, stored as null)."""
    problems: list[Problem] = []
    if isinstance(document, dict):
        for key in getattr(document, "repeated", ()):
            problems.append(
                Problem(
                    json_path((*at, key)), "given twice in one object; JSON keeps only the last"
                )
            )
        for key, value in document.items():
            problems += json_problems(value, (*at, key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            problems += json_problems(value, (*at, index))
    elif isinstance(document, float) and not math.isfinite(document):
        problems.append(Problem(json_path(at), "not a finite number"))
    return problems


def validate_journey(
    document: Mapping[str, Any], *, templates: Set[str] | None = None
) -> list[Problem]:
    """Every problem of a journey document; empty when it is valid.

    ``templates`` is the set of template ids that exist; ``None`` skips that check. Keys given
    twice (in a document ``loads_document`` read) and numbers that are not finite come first,
    then the schema's problems or, with none, the graph's.
    """
    parsing = json_problems(document)
    if parsing:
        return parsing
    try:
        journey = JourneyDefinition.model_validate(document)
    except ValidationError as exc:
        return schema_problems(exc)
    return graph_problems(journey, templates=templates)


def graph_problems(
    journey: JourneyDefinition, *, templates: Set[str] | None = None
) -> list[Problem]:
    problems: list[Problem] = []
    steps = journey.steps
    if journey.start not in steps:
        problems.append(Problem("$.start", f"unknown step {journey.start!r}"))
    edges: dict[str, list[str]] = {}
    for name, step in steps.items():
        edges[name] = []
        for field, target in targets(step).items():
            if target in steps:
                edges[name].append(target)
            else:
                path = json_path(["steps", name, *field.split(".")])
                problems.append(Problem(path, f"unknown step {target!r}"))
        if (
            templates is not None
            and isinstance(step, SendStep)
            and step.send.template not in templates
        ):
            path = json_path(["steps", name, "send", "template"])
            problems.append(Problem(path, f"unknown template {step.send.template!r}"))
    problems.extend(_match_problems(journey))
    if journey.start in steps:
        reached = _reachable(journey.start, edges)
        problems.extend(
            Problem(json_path(["steps", name]), f"unreachable from start {journey.start!r}")
            for name in steps
            if name not in reached
        )
    # A wait or wait_for breaks a cycle in time; a cycle of other steps would spin at once.
    instant = {n: [t for t in ts if not _waits(steps[t])] for n, ts in edges.items()}
    for cycle in _cycles({n: ts for n, ts in instant.items() if not _waits(steps[n])}):
        loop = " -> ".join([*cycle, cycle[0]])
        problems.append(Problem(json_path(["steps", cycle[0]]), f"loop without a wait: {loop}"))
    return problems


def _match_problems(journey: JourneyDefinition) -> list[Problem]:
    """``match`` compares with the event that started the run: only an event trigger has one."""
    if isinstance(journey.trigger, EventTrigger):
        return []
    message = "'match' needs an event trigger (the run has no triggering event to match against)"
    problems = [
        Problem(json_path(["steps", name, "wait_for", "match"]), message)
        for name, step in journey.steps.items()
        if isinstance(step, WaitForStep) and step.wait_for.match is not None
    ]
    problems.extend(
        Problem(json_path(["exit_when", i, "match"]), message)
        for i, condition in enumerate(journey.exit_when)
        if condition.match is not None
    )
    return problems


def _waits(step: BaseModel) -> bool:
    return isinstance(step, WaitStep | WaitForStep)


def _reachable(start: str, edges: Mapping[str, Sequence[str]]) -> set[str]:
    seen = {start}
    todo = [start]
    while todo:
        for target in edges[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def _cycles(edges: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """One cycle per strongly connected component that has one (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in edges:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            succ = edges[node]
            if i < len(succ):
                work.append((node, i + 1))
                nxt = succ[i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
    cycles = []
    for component in components:
        members = set(component)
        if len(component) > 1 or component[0] in edges[component[0]]:
            cycles.append(_cycle_in(min(members), members, edges))
    return sorted(cycles)


def _cycle_in(start: str, members: set[str], edges: Mapping[str, Sequence[str]]) -> list[str]:
    """A cycle through ``start`` inside one strongly connected component (breadth first)."""
    parent: dict[str, str] = {}
    todo = [start]
    while todo:
        node = todo.pop(0)
        for nxt in edges[node]:
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return path[::-1]
            if nxt in members and nxt not in parent:
                parent[nxt] = node
                todo.append(nxt)
    return [start]  # pragma: no cover - every member of a component lies on a cycle


def not_a_bool(value: Any) -> Any:
    """A ``mode="before"`` validator of a number: JSON true or false is refused, though pydantic
    would read it as 1 or 0 (a score of true points, a lifecycle factor of true)."""
    if isinstance(value, bool):
        raise PydanticCustomError(
            "float_type",
            "must be a number such as 5, not {value}",
            {"value": "true" if value else "false"},
        )
    return value
