"""The rules of a message template, independent of Liquid and of storage.

A template is an id and a channel. Email has three parts — ``subject`` and at least one of
``text`` and ``html`` — and SMS one, ``sms``. The variables a template sees are the same at every
send; the sample variables used to check and preview a template are a default sample (the
variables every message has) with the template's own sample merged over it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

Channel = Literal["email", "sms"]

PARTS: dict[Channel, tuple[str, ...]] = {"email": ("subject", "html", "text"), "sms": ("sms",)}

TEMPLATE_ID = r"^[a-z0-9][a-z0-9_-]{0,99}$"
"""Template ids: what a journey's ``send.template`` may name (a-z, 0-9, '_', '-'); also the folder
names under templates/."""

POOL = r"^[a-z0-9][a-z0-9_-]{0,63}$"
"""Discount pool names, as a template writes them: ``{{ codes.welcome10 }}``."""

CODE = r"^[!-~]{1,100}$"
"""A discount code: printable ASCII without spaces (customers type it at checkout)."""

MAX_PART_CHARS: dict[str, int] = {
    "subject": 4 * 1024,
    "html": 512 * 1024,
    "text": 128 * 1024,
    "sms": 4 * 1024,
}
"""Largest Liquid source per part, in characters."""

_TEMPLATE_ID_RE = re.compile(TEMPLATE_ID)
_POOL_RE = re.compile(POOL)


def is_template_id(value: str) -> bool:
    return bool(_TEMPLATE_ID_RE.fullmatch(value))


def is_pool(value: str) -> bool:
    return bool(_POOL_RE.fullmatch(value))


def part_problems(channel: Channel, parts: Mapping[str, str | None]) -> list[tuple[str, str]]:
    """(part, problem) for each part that is missing, blank, too long or foreign to the channel;
    empty when the parts make a complete template."""
    problems: list[tuple[str, str]] = []
    allowed = PARTS[channel]
    for name, source in parts.items():
        if source is None:
            continue
        if name not in allowed:
            problems.append(
                (name, f"not a part of an {channel} template (use {', '.join(allowed)})")
            )
        elif len(source) > MAX_PART_CHARS[name]:
            problems.append((name, f"longer than {MAX_PART_CHARS[name]} characters"))

    def given(name: str) -> bool:
        source = parts.get(name)
        return source is not None and source.strip() != ""

    if channel == "sms":
        if not given("sms"):
            problems.append(("sms", "an sms template needs an sms part"))
    else:
        if not given("subject"):
            problems.append(("subject", "an email template needs a subject"))
        if not given("text") and not given("html"):
            problems.append(("text", "an email template needs a text part, an html part or both"))
    return problems


INTELLIGENCE_OBJECTS = ("profile", "lead", "rfm", "predictions")
"""What customer intelligence puts in a message request's recipient as objects (besides
``stage``, a name, and ``segments``, a list): each a template variable, empty when unknown."""


def default_sample(channel: Channel) -> dict[str, Any]:
    """The variables every message has, as a check or a preview sees them when the template's
    sample says nothing else. Deliberately lean: a trait that some customers lack (first name)
    is not here, so a template that uses it without ``| default:`` is caught before it fails a
    real send. So are customer intelligence's objects empty and ``stage`` nil: a workspace may
    turn intelligence off, and a message requested before it existed carries none of them."""
    address = {"email": "ana@example.com"} if channel == "email" else {"phone": "+14155550100"}
    return {
        "customer": {"id": "c_sample", **address},
        "event": {"type": "sample", "id": "evt_sample", "properties": {}},
        "message": {"id": "msg_sample", "category": "marketing"},
        "scores": {},
        **{root: {} for root in INTELLIGENCE_OBJECTS},
        "stage": None,
        "segments": [],
        "unsubscribe_url": "https://example.com/unsubscribe/sample",
        "preferences_url": "https://example.com/preferences/sample",
    }


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``: objects merge key by key, any other value replaces."""
    merged = dict(base)
    for key, value in over.items():
        below = merged.get(key)
        if isinstance(value, Mapping) and isinstance(below, Mapping):
            merged[key] = merge(below, value)
        else:
            merged[key] = value
    return merged


def preview_code(pool: str) -> str:
    """What ``{{ codes.<pool> }}`` shows in a check or a preview: visibly not a real code."""
    return f"PREVIEW-{pool.upper()}"
