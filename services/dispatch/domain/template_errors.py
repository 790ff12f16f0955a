"""Why a template could not be used, with the part, line and variable to point at.

Every class here is a :class:`~services.dispatch.errors.TemplateError`, so the dispatcher's
``except TemplateError`` turns any of them into a failed message; the HTTP routes turn them into a
422 (404 for ``TemplateNotFound``) naming the part and the line.

TemplateError                    (services/dispatch/errors.py)
├── TemplateNotFound             no saved version and no file for this id and channel
├── InvalidTemplate              a part does not parse (syntax, unknown filter, a partial tag,
│                                ``codes`` not written ``codes.<pool>``): part, line, column
├── RenderFailed                 a part fails while rendering (division by zero, a loop too long)
│   └── UndefinedVariable        strict mode: the variable the part used is not there
├── MissingPart                  a required part is missing or renders empty (no subject, ...)
└── NoCodeLeft                   the discount pool the template uses has no free, unexpired code
"""

from __future__ import annotations

from services.dispatch.errors import TemplateError


class TemplateNotFound(TemplateError):
    def __init__(self, template_id: str, channel: str, *, detail: str = "") -> None:
        super().__init__(
            f"no {channel} template {template_id!r} (neither saved nor in templates/){detail}"
        )
        self.template_id = template_id
        self.channel = channel


class PartError(TemplateError):
    """A problem located in one part of a template (``subject``, ``html``, ``text``, ``sms``)."""

    def __init__(
        self,
        problem: str,
        *,
        template: str,
        part: str,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        where = f" (line {line}, column {column})" if line is not None else ""
        super().__init__(f"template {template} {part}: {problem}{where}")
        self.problem = problem
        self.template = template
        self.part = part
        self.line = line
        self.column = column


class InvalidTemplate(PartError):
    pass


class RenderFailed(PartError):
    pass


class UndefinedVariable(RenderFailed):
    def __init__(
        self,
        variable: str,
        *,
        template: str,
        part: str,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        super().__init__(
            f"{variable} is undefined", template=template, part=part, line=line, column=column
        )
        self.variable = variable


class MissingPart(PartError):
    pass


class NoCodeLeft(TemplateError):
    def __init__(self, pool: str) -> None:
        super().__init__(
            f"discount pool {pool!r} has no free, unexpired code left: add codes with "
            f"POST /v1/discount-pools/{pool}/codes"
        )
        self.pool = pool
