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
from typing import Any, TextIO, cast

from liquid import BoundTemplate, Environment, Node, RenderContext, StrictDefaultUndefined, escape
from liquid.builtin.expressions import Filter, FilteredExpression, PositionalArgument
from liquid.builtin.expressions import Path as LiquidPath
from liquid.builtin.expressions.primitive import IntegerLiteral, StringLiteral
from liquid.builtin.filters.misc import default as default_filter
from liquid.builtin.output import OutputNode
from liquid.exceptions import LiquidError, UndefinedError
from liquid.span import Span
from liquid.stringify import to_liquid_string

from services.dispatch.adapters.money import money
from services.dispatch.adapters.providers.registry import SMS_TEXT_LIMITS
from services.dispatch.domain.messages import Rendered
from services.dispatch.domain.sms import characters, measure
from services.dispatch.domain.template_errors import (
    InvalidTemplate,
    MissingPart,
    RenderFailed,
    UndefinedVariable,
)
from services.dispatch.domain.templates import (
    PARTS,
    Channel,
    is_pool,
    is_template_id,
)

SMS_LONGEST = max(SMS_TEXT_LIMITS.items(), key=lambda kv: kv[1])
"""(provider, characters): the most any SMS provider takes. A message that renders longer fails
at render, whichever provider it was for: none would send it."""
SMS_STRICTEST = min(SMS_TEXT_LIMITS.items(), key=lambda kv: kv[1])
"""(provider, characters): the least an SMS provider takes. A draft's sample render must fit it
to be saved: a message may go through any SMS provider the workspace configures, primary or
fallback, and each refuses a longer text at send."""

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
        # Standard Liquid prints money as the bare decimal string the event carries.
        self.filters["money"] = money


@functools.cache
def _environment(*, html: bool) -> _Environment:
    return _Environment(autoescape=html)


_ABSENT = object()
"""A name not in scope, or a key missing from a plain dict on the way."""
_OTHER = object()
"""Anything a plain-dict walk does not decide: python-liquid's own lookup must."""


_SPECIAL_KEYS = frozenset({"size", "first", "last"})


def _plain_lookup(context: RenderContext, path: tuple[str, ...]) -> object:
    """What ``context.get(path)`` finds when the name and every key are found in plain dicts
    (its ``get_item`` reads ``obj[key]`` first, even for ``size``, ``first`` and ``last``);
    ``_ABSENT`` when the name is not in scope or a plain dict lacks the key (python-liquid
    then returns an undefined), unless the key is ``size``, ``first`` or ``last``, which
    python-liquid answers from the dict itself; ``_OTHER`` otherwise. Reads dicts only: no
    side effects."""
    try:
        obj = context.scope[path[0]]
    except KeyError:
        return _ABSENT
    except (TypeError, IndexError):
        return _OTHER
    for key in path[1:]:
        if type(obj) is not dict:
            return _OTHER
        try:
            obj = obj[key]
        except KeyError:
            # A dict without the key still has a size, a first and a last item to Liquid:
            # ``event.properties.size`` is the number of properties, not undefined.
            return _OTHER if key in _SPECIAL_KEYS else _ABSENT
    return obj


class _PlainOutput(OutputNode):
    """``{{ a.b.c }}`` or ``{{ a.b.c | default: <string or integer> }}``, written straight when
    the value is a string or an integer in plain dicts (the variables of a message are JSON),
    or, with its default, undefined; every other case is python-liquid's ``OutputNode``.

    Exactly python-liquid's answer: ``default`` keeps a non-empty string and any integer, and
    gives its argument for an undefined (strict-default undefined, whose ``force_liquid_default``
    makes ``default`` return the argument); ``to_liquid_string`` leaves a string as it is and
    writes an integer with ``str``, and escapes when autoescape is on. The empty string (which
    ``default`` replaces), booleans, None, lists, Markup, drops and an undefined without a
    literal default all go the original way. python-liquid evaluates a filter's argument even
    when it does not use it; a literal's evaluation does nothing."""

    __slots__ = ("_default", "_has_default", "_path")

    def __init__(
        self,
        node: OutputNode,
        path: tuple[str, ...],
        default: StringLiteral | IntegerLiteral | None,
        has_default: bool,
    ) -> None:
        super().__init__(node.token, node.expression)
        self._path = path
        self._default = default
        self._has_default = has_default

    def render_to_output(self, context: RenderContext, buffer: TextIO) -> int:
        value = _plain_lookup(context, self._path)
        kind = type(value)
        if kind is str:
            if not value and self._has_default:
                return super().render_to_output(context, buffer)
            text = cast(str, value)
        elif kind is int:
            text = str(value)
        elif value is _ABSENT and self._default is not None:
            return buffer.write(
                to_liquid_string(self._default.evaluate(context), context.autoescape)
            )
        else:
            return super().render_to_output(context, buffer)
        return buffer.write(escape(text) if context.autoescape else text)


def _plain_output(node: Node) -> Node:
    """``node`` as a :class:`_PlainOutput` when it is an output of that form, else itself."""
    if type(node) is not OutputNode:
        return node
    expression = node.expression
    if type(expression) is not FilteredExpression:
        return node
    left, filters = expression.left, expression.filters or []
    if type(left) is not LiquidPath or not all(type(k) is str for k in left.path):
        return node
    path = tuple(cast(list[str], left.path))
    if not filters:
        return _PlainOutput(node, path, None, has_default=False)
    if len(filters) != 1:
        return node
    only: Filter = filters[0]
    if only.name != "default" or len(only.args) != 1:
        return node
    argument = only.args[0]
    if type(argument) is not PositionalArgument:
        return node
    literal = argument.value
    # Another argument (a path, say): python-liquid's output when the value is missing.
    fixed = literal if isinstance(literal, StringLiteral | IntegerLiteral) else None
    return _PlainOutput(node, path, fixed, has_default=True)


def _speed_up(template: BoundTemplate) -> None:
    """Replace the outputs :class:`_PlainOutput` renders the same, at every depth of the tree
    (the top level, and every block of an if, for, case, capture, …), in place."""
    if template.env.filters.get("default") is not default_filter:
        return
    if template.env.undefined is not StrictDefaultUndefined:
        return
    static = RenderContext(template)
    pending: list[Node] = []

    def replace(nodes: list[Node]) -> None:
        nodes[:] = [_plain_output(n) for n in nodes]
        pending.extend(nodes)

    replace(template.nodes)
    while pending:
        node = pending.pop()
        for child in node.children(static, include_partials=False):
            block = getattr(child, "nodes", None)
            if isinstance(block, list):
                replace(block)
            else:
                pending.append(child)


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


_EXPECTED_END = re.compile(r"^expected tag end(?P<name>\w+), found end of ")
_TAG = re.compile(r"\{%-?\s*(?P<name>\w+)")
_VERBATIM = {"raw", "comment"}
"""Blocks whose content is not parsed: a tag inside them is text."""


def _unclosed(source: str, message: str) -> tuple[int, int, str]:
    """Line, column and message for a syntax error python-liquid could not place: it reports a
    missing ``{% endif %}`` (and every other end tag) at the end of the template, a position
    its error does not carry. The opening tag is what the author must find, so the error points
    there; anything else the end of the template, where the parser gave up."""
    start = len(source)
    found = _EXPECTED_END.match(message)
    if found is not None:
        wanted = found.group("name")
        open_tags: list[tuple[str, int]] = []
        verbatim: str | None = None
        for tag in _TAG.finditer(source):
            name = tag.group("name")
            if verbatim is not None:
                if name == f"end{verbatim}":
                    verbatim = None
            elif name in _VERBATIM:
                verbatim = name
            elif name.startswith("end"):
                for i in range(len(open_tags) - 1, -1, -1):
                    if open_tags[i][0] == name[3:]:
                        del open_tags[i:]
                        break
            else:
                open_tags.append((name, tag.start()))
        opened = next((at for name, at in reversed(open_tags) if name == wanted), None)
        if opened is not None:
            start = opened
            message = f"{{% {wanted} %}} is never closed: {message}"
    line = source.count("\n", 0, start) + 1
    return line, start - (source.rfind("\n", 0, start) + 1) + 1, message


def parse_part(template: str, part: str, source: str) -> BoundTemplate:
    """Parse one part; InvalidTemplate names the line and the problem."""
    env = _environment(html=part == "html")
    try:
        parsed = env.from_string(source)
        analysis = parsed.analyze(include_partials=False)
    except LiquidError as exc:
        line, column = _where(exc)
        message = str(exc.message)
        if line is None:
            line, column, message = _unclosed(source, message)
        raise InvalidTemplate(
            message, template=template, part=part, line=line, column=column
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
    _speed_up(parsed)
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

    @property
    def draft(self) -> bool:
        """Parts being checked (or previewed) before they are saved, never sent as they are."""
        return self.version == 0 and not self.from_file

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
            text = out["sms"]
            if not text:
                raise self._missing("sms")
            self._check_sms_length(text)
            return Rendered(subject=None, html=None, text=text)
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

    def _check_sms_length(self, text: str) -> None:
        """A draft's sample render must fit the strictest SMS provider; a message must fit at
        least the most generous one (the provider it goes to checks its own limit at send).
        Characters as providers count them: UTF-16 code units, an emoji 2."""
        provider, limit = SMS_STRICTEST if self.draft else SMS_LONGEST
        if characters(text) <= limit:
            return
        size = measure(text).describe()
        if self.draft:
            others = ", ".join(f"{p.title()} {n}" for p, n in sorted(SMS_TEXT_LIMITS.items()))
            problem = (
                f"renders {size} with the sample; {provider.title()} takes at most {limit} "
                f"characters (SMS providers' limits: {others}), and a message may go through "
                "any SMS provider the workspace configures: shorten it"
            )
        else:
            problem = (
                f"renders {size}; no SMS provider takes more than {limit} characters "
                f"({provider.title()}'s limit): shorten it"
            )
        raise RenderFailed(problem, template=self.label, part="sms")

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
