"""Liquid templates from files: ``templates/<id>/subject.liquid``, ``html.liquid``, ``text.liquid``
for email; ``sms.liquid`` for SMS.

Strict: an undefined variable is an error (``| default: …`` still works), so a message never goes
out with a blank where a name should be.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from liquid import Environment, StrictDefaultUndefined
from liquid.exceptions import LiquidError

from services.dispatch.domain.messages import Rendered
from services.dispatch.errors import TemplateError

_PARTS = {"email": ("subject", "html", "text"), "sms": ("sms",)}


class TemplateStore:
    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._env = Environment(undefined=StrictDefaultUndefined, autoescape=False)
        self._html_env = Environment(undefined=StrictDefaultUndefined, autoescape=True)
        self._cache: dict[tuple[str, str], Any] = {}

    def _template(self, template_id: str, part: str) -> Any | None:
        key = (template_id, part)
        if key not in self._cache:
            path = self._folder / template_id / f"{part}.liquid"
            if not path.is_file():
                self._cache[key] = None
            else:
                env = self._html_env if part == "html" else self._env
                try:
                    self._cache[key] = env.from_string(path.read_text(encoding="utf-8"))
                except LiquidError as exc:
                    raise TemplateError(f"template {template_id}/{part}: {exc}") from exc
        return self._cache[key]

    def exists(self, template_id: str, channel: str) -> bool:
        return any(self._template(template_id, p) is not None for p in _PARTS[channel])

    def render(self, template_id: str, channel: str, variables: dict[str, Any]) -> Rendered:
        out: dict[str, str | None] = {}
        for part in _PARTS[channel]:
            template = self._template(template_id, part)
            if template is None:
                out[part] = None
                continue
            try:
                out[part] = (
                    template.render(**variables).strip()
                    if part != "html"
                    else template.render(**variables)
                )
            except LiquidError as exc:
                raise TemplateError(f"template {template_id}/{part}: {exc}") from exc
        if channel == "sms":
            if not out["sms"]:
                raise TemplateError(f"template {template_id}: sms.liquid is missing or empty")
            return Rendered(subject=None, html=None, text=out["sms"] or "")
        if not out["subject"]:
            raise TemplateError(f"template {template_id}: subject.liquid is missing or empty")
        if not out["text"] and not out["html"]:
            raise TemplateError(f"template {template_id}: needs text.liquid or html.liquid")
        return Rendered(subject=out["subject"], html=out["html"], text=out["text"] or "")
