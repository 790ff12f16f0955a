"""Liquid templates: parsing and strict rendering of a template's parts, and templates from files
(``templates/<id>/subject.liquid``, ``html.liquid``, ``text.liquid`` for email; ``sms.liquid``
for SMS).

Strict: an undefined variable is an error (``| default: …`` still works), so a message never goes
out with a blank where a name should be. The html part is autoescaped. A part is checked when it
is parsed — syntax, unknown filters, partial tags (there is nothing to include from), and
discount codes written other than ``codes.<pool>`` — so what can be caught before a send is.
Rendering has resource limits (loop iterations, output size, assigned values): a template is
code that admins write, and one must not stall the process that sends everyone's mail.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from liquid import BoundTemplate, Environment, StrictDefaultUndefined
from liquid.exceptions import LiquidError, UndefinedError
from liquid.span import Span

from services.dispatch.domain.messages import Rendered
from services.dispatch.domain.template_errors import (
    InvalidTemplate,
    MissingPart,
    RenderFailed,
    UndefinedVariable,
)
from services.dispatch.domain.templates import PARTS, Channel, is_pool, is_template_id

_UNDEFINED = re.compile(r"^'?(?P<name>.*?)'? is undefined$", re.DOTALL)
_LINE_BREAKS = re.compile(r"\s*[\r\n]+\s*")


class _Environment(Environment):
    loop_iteration_limit = 50_000
    output_stream_limit = 2 * 1024 * 1024
    local_namespace_limit = 1024 * 1024

    def __init__(self, *, autoescape: bool) -> None:
        super().__init__(undefined=StrictDefaultUndefined, autoescape=autoescape)
        # Partials would need a loader, and a template is self-contained: refuse them at parse
        # time rather than fail at the first send.
        for tag in ("include", "render"):
            self.tags.pop(tag, None)


@functools.cache
def _environment(*, html: bool) -> _Environment:
    return _Environment(autoescape=html)


def _where(exc: LiquidError) -> tuple[int | None, int | None]:
    """Line and column (from 1) of an error, when Liquid knows them."""
    try:
        context = exc.context()
    except ValueError:  # a position outside the source
        return None, None
    return (context[0], context[1] + 1) if context is not None else (None, None)


def _at(span: Span, source: str) -> tuple[int | None, int | None]:
    try:
        line, column = span.line_col(source)
    except ValueError:
        return None, None
    return line, column + 1


def parse_part(template: str, part: str, source: str) -> BoundTemplate:
    """Parse one part; InvalidTemplate names the line and the problem."""
    env = _environment(html=part == "html")
    try:
        parsed = env.from_string(source)
        analysis = parsed.analyze(include_partials=False)
    except LiquidError as exc:
        line, column = _where(exc)
        raise InvalidTemplate(
            str(exc.message), template=template, part=part, line=line, column=column
        ) from exc
    except RecursionError as exc:
        raise InvalidTemplate("nested too deeply", template=template, part=part) from exc
    except Exception as exc:
        # The parser meeting input it was not written for: still the template's fault.
        raise InvalidTemplate(
            f"cannot be parsed ({exc.__class__.__name__}: {exc})", template=template, part=part
        ) from exc
    for name, spans in analysis.filters.items():
        if name not in env.filters:
            line, column = _at(spans[0], source)
            raise InvalidTemplate(
                f"unknown filter {name!r}", template=template, part=part, line=line, column=column
            )
    return parsed


def pools_of(template: str, part: str, parsed: BoundTemplate, source: str) -> set[str]:
    """The discount pools a part draws from: every ``codes.<pool>`` it uses. ``codes`` written
    any other way (``codes[name]``, a loop over ``codes``) cannot be known before rendering,
    so it is refused: the codes must be claimed before the render."""
    pools: set[str] = set()
    for variable in parsed.analyze(include_partials=False).globals.get("codes", []):
        segments = variable.segments
        pool = segments[1] if len(segments) >= 2 else None
        if not isinstance(pool, str) or not is_pool(pool):
            line, column = _at(variable.span, source)
            raise InvalidTemplate(
                f"write a discount code as codes.<pool>, with a pool name of a-z, 0-9, '_' and "
                f"'-' (found {variable})",
                template=template,
                part=part,
                line=line,
                column=column,
            )
        pools.add(pool)
    return pools


@dataclass(frozen=True, slots=True)
class CompiledTemplate:
    """A template's parts, parsed, with the discount pools they draw from. Version 0 is the file
    in templates/; saved versions count from 1."""

    template_id: str
    version: int
    """0 for a file, and for a draft being checked or previewed before it is saved."""
    channel: Channel
    parts: Mapping[str, BoundTemplate]
    pools: frozenset[str]
    from_file: bool = False

    @property
    def label(self) -> str:
        return self.template_id if self.version == 0 else f"{self.template_id} v{self.version}"

    def render_parts(self, variables: Mapping[str, Any]) -> dict[str, str | None]:
        """Every part rendered (None where the template has no such part), none required."""
        out: dict[str, str | None] = {}
        for part in PARTS[self.channel]:
            template = self.parts.get(part)
            out[part] = None if template is None else self._render(part, template, variables)
        return out

    def render(self, variables: Mapping[str, Any]) -> Rendered:
        """The message content; MissingPart when a required part is absent or renders empty."""
        out = self.render_parts(variables)
        if self.channel == "sms":
            if not out["sms"]:
                raise self._missing("sms")
            return Rendered(subject=None, html=None, text=out["sms"] or "")
        if not out["subject"]:
            raise self._missing("subject")
        if not out["text"] and not out["html"]:
            problem = (
                "needs text.liquid or html.liquid"
                if self.from_file
                else "needs a text or an html part that renders something"
            )
            raise MissingPart(problem, template=self.label, part="text")
        return Rendered(subject=out["subject"], html=out["html"], text=out["text"] or "")

    def _missing(self, part: str) -> MissingPart:
        problem = (
            f"{part}.liquid is missing or empty"
            if self.from_file
            else f"{part} is missing or renders empty"
        )
        return MissingPart(problem, template=self.label, part=part)

    def _render(self, part: str, template: BoundTemplate, variables: Mapping[str, Any]) -> str:
        try:
            text = template.render(**variables)
        except UndefinedError as exc:
            line, column = _where(exc)
            match = _UNDEFINED.match(str(exc.message))
            raise UndefinedVariable(
                match.group("name") if match else str(exc.message),
                template=self.label,
                part=part,
                line=line,
                column=column,
            ) from exc
        except LiquidError as exc:
            line, column = _where(exc)
            raise RenderFailed(
                str(exc.message), template=self.label, part=part, line=line, column=column
            ) from exc
        except Exception as exc:
            # A filter meeting a value it was not written for (Python's own errors): the
            # template's fault, and one message's failure, never the batch's.
            raise RenderFailed(
                f"{exc.__class__.__name__}: {exc}", template=self.label, part=part
            ) from exc
        if part == "html":
            return text
        text = text.strip()
        # A header cannot hold a line break: a subject assembled over several lines is one line.
        return _LINE_BREAKS.sub(" ", text) if part == "subject" else text


def compile_template(
    template_id: str,
    channel: Channel,
    sources: Mapping[str, str | None],
    *,
    version: int,
    from_file: bool = False,
) -> CompiledTemplate:
    """Parse the parts of ``channel`` found in ``sources`` (others are ignored)."""
    label = template_id if version == 0 else f"{template_id} v{version}"
    parts: dict[str, BoundTemplate] = {}
    pools: set[str] = set()
    for part in PARTS[channel]:
        source = sources.get(part)
        if source is None:
            continue
        parsed = parse_part(label, part, source)
        pools |= pools_of(label, part, parsed, source)
        parts[part] = parsed
    return CompiledTemplate(template_id, version, channel, parts, frozenset(pools), from_file)


class TemplateStore:
    """Templates from files: read and parsed once per process, then served from memory."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._sources: dict[tuple[str, str], str | None] = {}
        self._compiled: dict[tuple[str, str], CompiledTemplate | None] = {}

    def source(self, template_id: str, part: str) -> str | None:
        key = (template_id, part)
        if key not in self._sources:
            path = self._folder / template_id / f"{part}.liquid"
            valid = is_template_id(template_id)
            self._sources[key] = (
                path.read_text(encoding="utf-8") if valid and path.is_file() else None
            )
        return self._sources[key]

    def sources(self, template_id: str, channel: Channel) -> dict[str, str]:
        """The Liquid source of each part of ``channel`` the folder has."""
        found = {part: self.source(template_id, part) for part in PARTS[channel]}
        return {part: text for part, text in found.items() if text is not None}

    def load(self, template_id: str, channel: Channel) -> CompiledTemplate | None:
        """The file template (version 0), or None when the folder has no part of ``channel``."""
        key = (template_id, channel)
        if key not in self._compiled:
            sources = self.sources(template_id, channel)
            self._compiled[key] = (
                compile_template(template_id, channel, sources, version=0, from_file=True)
                if sources
                else None
            )
        return self._compiled[key]

    def templates(self) -> list[tuple[str, Channel]]:
        """Every (id, channel) the folder holds, by id (the folder is read again each time)."""
        if not self._folder.is_dir():
            return []
        found: list[tuple[str, Channel]] = []
        for path in sorted(self._folder.iterdir()):
            if not (path.is_dir() and is_template_id(path.name)):
                continue
            for channel in cast(tuple[Channel, ...], ("email", "sms")):
                if any((path / f"{part}.liquid").is_file() for part in PARTS[channel]):
                    found.append((path.name, channel))
        return found

    def exists(self, template_id: str, channel: str) -> bool:
        return self.load(template_id, _channel(channel)) is not None

    def render(self, template_id: str, channel: str, variables: dict[str, Any]) -> Rendered:
        known = _channel(channel)
        template = self.load(template_id, known) or CompiledTemplate(
            template_id, 0, known, {}, frozenset(), from_file=True
        )
        return template.render(variables)


def _channel(channel: str) -> Channel:
    if channel not in PARTS:
        raise ValueError(f"unknown channel {channel!r}")
    return channel
