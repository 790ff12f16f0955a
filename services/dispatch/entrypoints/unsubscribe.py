"""Unsubscribe over HTTP: the RFC 8058 one-click POST, the page a person sees, the preference
centre.

``POST /u/{token}`` is what a mailbox provider sends when the reader presses its unsubscribe
button: no cookies, no credentials, any body (``List-Unsubscribe=One-Click``, empty, or our own
page's form). It unsubscribes at once and answers 200 with a page, never a redirect. ``GET
/u/{token}`` is a person (or a link scanner prefetching it): it only shows a confirmation button.
``/preferences/{token}`` shows and changes the marketing subscription of the token's address;
the token names one address of one channel, and that is all the page manages.
Both pages answer HEAD as they answer GET (link checkers ask HEAD), and every route answers
its path with a trailing slash as well, never with a redirect; a query string (a link tracker's
``utm_*``) is ignored.

Every change is one transaction: the suppression row plus its events in the outbox
(``consent_updated`` for the journey service's consent trait, ``message_unsubscribed`` for
engagement). The suppression row is the idempotency key, so a repeated POST, or two racing ones,
record one unsubscribe. A re-subscribe lifts only an ``unsubscribe`` suppression; hard bounces
and complaints stay, and the page says why.

A link whose message is no longer in the ledger belongs to an erased customer: it still
suppresses (or lifts) the address, but names nobody, with no customer on the row and no event.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from html import escape
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from prometheus_client import Counter

from services.dispatch.adapters.suppressions import Suppression
from services.dispatch.adapters.suppressions import key as suppression_key
from services.dispatch.domain.events import consent_record, event_record
from services.dispatch.domain.unsubscribe import BadToken, Subscriber, verify
from services.dispatch.service_layer.uow import DispatchUnitOfWork
from shared.bus.ports import OutgoingRecord
from shared.clock import Clock
from shared.http import Conflict, HTTPProblem, PayloadTooLarge, UnsupportedMediaType, problem

log = logging.getLogger(__name__)

UNSUBSCRIBES = Counter(
    "ciclo_unsubscribes_total",
    "Marketing unsubscribes recorded, by source (one-click, preference-centre) and channel",
    ["source", "channel"],
)
RESUBSCRIBES = Counter(
    "ciclo_resubscribes_total", "Unsubscribes lifted in the preference centre", ["channel"]
)

ONE_CLICK = "one-click"
PREFERENCE_CENTRE = "preference-centre"
_MAX_FORM_BYTES = 4096

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:36rem;margin:2rem auto;padding:0 1rem;"
    "line-height:1.5;color:#1a1a1a;background:#fff}"
    "button{font-size:1rem;padding:.5rem 1.25rem;cursor:pointer}"
    "fieldset{border:1px solid #767676;padding:1rem}label{display:block;margin:.5rem 0}"
    ".notice{background:#e7f4e7;padding:.5rem 1rem}.blocked{background:#fbe9e9;padding:.5rem 1rem}"
)
# Scripts are forbidden outright (default-src 'none'); the one inline style is allowed by hash.
_CSP = (
    "default-src 'none'; "
    f"style-src 'sha256-{base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()}'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": _CSP,
    # The token in the URL is a credential: never hand it on in a Referer.
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Robots-Tag": "noindex",
}

_WORDS = {
    "email": {
        "marketing": "marketing email",
        "orders": "Emails about your orders (confirmations, shipping updates) still arrive.",
        "other": "Text message preferences are changed from the link in our text messages.",
    },
    "sms": {
        "marketing": "marketing text messages",
        "orders": "Text messages about your orders (shipping updates) still arrive.",
        "other": "Email preferences are changed from the link at the bottom of our emails.",
    },
}
_BLOCKED = {
    "hard_bounce": "messages to it bounced: the receiving server said the address does not exist",
    "complaint": "one of our messages to it was reported as spam",
    "manual": "the shop blocked it",
}


def unsubscribe_router(
    *,
    uow: Callable[[], DispatchUnitOfWork],
    secret: str,
    clock: Clock,
    older_secrets: Sequence[str] = (),
    shop_name: str = "",
) -> APIRouter:
    """The routes; ``older_secrets`` keep links signed before a secret rotation working, and
    ``shop_name`` names the sender on the pages ("us" without it)."""
    if not secret:
        raise ValueError("unsubscribe_router needs a non-empty secret")
    router = APIRouter(tags=["unsubscribe"])
    sender = shop_name or "us"
    page: dict[str, Any] = {"content": {"text/html": {}}}
    documented: dict[int | str, dict[str, Any]] = {
        400: {"description": "The link is damaged or not ours", **page},
    }

    def subscriber(token: str) -> Subscriber:
        try:
            return verify(token, secret, older_secrets=older_secrets)
        except BadToken as exc:
            log.info("unsubscribe link refused: %s", exc)
            raise HTTPProblem(f"token: {exc}", field="token") from None

    @router.get(
        "/u/{token}",
        response_class=HTMLResponse,
        responses=documented,
        summary="Unsubscribe confirmation page (never unsubscribes by itself)",
    )
    @_also_head_and_slash(router, "/u/{token}")
    async def confirm(request: Request, token: str) -> Response:
        try:
            who = subscriber(token)
        except HTTPProblem as exc:
            return _error(request, exc)
        async with uow() as u:
            standing = await _standing(u, who)
        return _page("Unsubscribe", _confirm_body(_up(request), token, who, standing, sender))

    @router.post(
        "/u/{token}",
        response_class=HTMLResponse,
        responses=documented,
        summary="One-click unsubscribe (RFC 8058): unsubscribes at once, answers 200",
    )
    @_also_slash(router, "/u/{token}", "POST")
    async def one_click(request: Request, token: str) -> Response:
        # The body is not read: RFC 8058 makes it List-Unsubscribe=One-Click, some senders send
        # none, our own page posts its form; the signed token alone decides.
        try:
            who = subscriber(token)
        except HTTPProblem as exc:
            return _error(request, exc)
        async with uow() as u:
            named = await _named(u, who)
            added = await _unsubscribe(u, who, source=ONE_CLICK, at=clock.now(), named=named)
            await u.commit()
        if added:
            _count(who, ONE_CLICK, named=named)
        return _page("You are unsubscribed", _done_body(_up(request), token, who, sender))

    @router.get(
        "/preferences/{token}",
        response_class=HTMLResponse,
        responses=documented,
        summary="Preference centre: the marketing subscription of the link's address",
    )
    @_also_head_and_slash(router, "/preferences/{token}")
    async def preferences(request: Request, token: str) -> Response:
        try:
            who = subscriber(token)
        except HTTPProblem as exc:
            return _error(request, exc)
        async with uow() as u:
            standing = await _standing(u, who)
        return _page("Your preferences", _preferences_body(who, standing, sender))

    @router.post(
        "/preferences/{token}",
        response_class=HTMLResponse,
        responses={
            **documented,
            409: {"description": "A bounced or complaining address cannot re-subscribe", **page},
            413: {"description": "The form is too large"},
            415: {"description": "Not a form (application/x-www-form-urlencoded)"},
        },
        summary="Preference centre: save (unsubscribe or re-subscribe)",
    )
    @_also_slash(router, "/preferences/{token}", "POST")
    async def save_preferences(request: Request, token: str) -> Response:
        try:
            who = subscriber(token)
            wanted = _wanted(who, await _form(request))
        except HTTPProblem as exc:
            return _error(request, exc)
        at = clock.now()
        marketing = _WORDS[who.channel]["marketing"]
        unsubscribed = resubscribed = False
        async with uow() as u:
            standing = await _standing(u, who)
            if wanted is True and standing is not None and standing.reason != "unsubscribe":
                refused = Conflict(
                    f"{who.channel}: this address cannot be subscribed again: "
                    f"{_BLOCKED.get(standing.reason, 'it is blocked')}",
                    field=who.channel,
                )
                return _error(request, refused, body=_preferences_body(who, standing, sender))
            named = await _named(u, who)
            if wanted is False:
                unsubscribed = await _unsubscribe(
                    u, who, source=PREFERENCE_CENTRE, at=at, named=named
                )
            elif wanted is True:
                resubscribed = await _resubscribe(u, who, at=at, named=named)
            after = await _standing(u, who) if unsubscribed or resubscribed else standing
            await u.commit()
        if unsubscribed:
            _count(who, PREFERENCE_CENTRE, named=named)
            notice = f"Saved. You get no more {marketing}."
        elif resubscribed:
            RESUBSCRIBES.labels(who.channel).inc()
            notice = f"Saved. Welcome back: you get our {marketing} again."
        else:
            notice = "Saved. Nothing changed."
        return _page("Your preferences", _preferences_body(who, after, sender, notice=notice))

    return router


_Handler = Callable[[Request, str], Awaitable[Response]]


def _also_slash(router: APIRouter, path: str, *methods: str) -> Callable[[_Handler], _Handler]:
    """Answer ``path`` with a trailing slash too, as the same page. Without this the router
    redirects (307) to the path without it: RFC 8058 wants the one-click POST answered 200, never
    redirected, and the redirect, built from the Host header, would lose a proxy's path prefix.
    Left out of the OpenAPI document: it is the same operation."""

    def register(handler: _Handler) -> _Handler:
        router.add_api_route(
            path + "/",
            handler,
            methods=list(methods),
            response_class=HTMLResponse,
            include_in_schema=False,
        )
        return handler

    return register


def _also_head_and_slash(router: APIRouter, path: str) -> Callable[[_Handler], _Handler]:
    """A page also answers HEAD (link checkers and mail scanners ask it before or instead of
    GET; a 405 reads as a broken link), with and without a trailing slash. HEAD runs the GET
    handler, so it changes nothing either; the server sends no body."""

    def register(handler: _Handler) -> _Handler:
        router.add_api_route(
            path,
            handler,
            methods=["HEAD"],
            response_class=HTMLResponse,
            include_in_schema=False,
        )
        return _also_slash(router, path, "GET", "HEAD")(handler)

    return register


def _up(request: Request) -> str:
    """The relative way from the page's URL up to the root of Ciclo's pages (``/u/{token}`` or
    ``/u/{token}/``), so links between the pages work under whatever path prefix
    ``public_url`` has."""
    return "../../" if request.url.path.endswith("/") else "../"


async def _standing(u: DispatchUnitOfWork, who: Subscriber) -> Suppression | None:
    found = await u.suppressions.find(who.workspace_id, who.channel, [who.address])
    # Keyed as the list keys it (email lower-cased): Ana.Garcia@… is found as ana.garcia@….
    return found.get(suppression_key(who.channel, who.address))


async def _named(u: DispatchUnitOfWork, who: Subscriber) -> bool:
    """Whether the link may still name its customer: False once the customer was erased. An
    erasure deletes the customer's messages from the ledger, and nothing else does, so a link
    whose message is gone came from mail sent before the erasure (however long ago: the
    erased-customer hashes are pruned after 30 days, the ledger's silence is not)."""
    return who.message_id in await u.ledger.statuses([who.message_id])


async def _unsubscribe(
    u: DispatchUnitOfWork, who: Subscriber, *, source: str, at: datetime, named: bool
) -> bool:
    """Suppress the address for marketing and tell the journey service; False when it already
    was (by an unsubscribe, or by a bounce or complaint, which stop all mail anyway).

    The link of an erased customer (``named`` False) still suppresses the address, since the
    opt-out must hold if the address comes back, but names nobody: the row has no customer and
    no event is emitted, because an event naming the customer would rebuild their profile in
    the journey service."""
    added = await u.suppressions.add(
        workspace_id=who.workspace_id,
        channel=who.channel,
        address=who.address,
        reason="unsubscribe",
        source=source,
        customer_id=who.customer_id if named else None,
        at=at,
    )
    if added and named:
        await u.emit(
            [
                _consent(who, "revoked", source, at=at),
                _event(who, "message_unsubscribed", {"source": source}, at=at),
            ]
        )
    return added


async def _resubscribe(
    u: DispatchUnitOfWork, who: Subscriber, *, at: datetime, named: bool
) -> bool:
    """Lift an unsubscribe (never a bounce or complaint) and grant consent again. Only a change
    counts as consent: a box left ticked that was ticked already grants nothing. The link of an
    erased customer lifts the suppression of the address and grants consent to nobody."""
    lifted = await u.suppressions.remove(
        who.workspace_id, who.channel, who.address, reasons=["unsubscribe"]
    )
    if lifted and named:
        await u.emit([_consent(who, "granted", PREFERENCE_CENTRE, at=at)])
    return lifted


def _event_id(who: Subscriber, type: str) -> str:
    # A fresh id per change: unsubscribing again after a re-subscribe, from the same message, is
    # a new fact that the journey service must not drop as a duplicate.
    return f"{who.message_id}:{type}:{uuid.uuid4().hex}"


def _consent(who: Subscriber, status: str, source: str, *, at: datetime) -> OutgoingRecord:
    return consent_record(
        event_id=_event_id(who, "consent_updated"),
        workspace_id=who.workspace_id,
        customer_id=who.customer_id,
        channel=who.channel,
        status=status,
        source=source,
        at=at,
        message_id=who.message_id,
    )


def _event(
    who: Subscriber, type: str, properties: dict[str, Any], *, at: datetime
) -> OutgoingRecord:
    return event_record(
        event_id=_event_id(who, type),
        workspace_id=who.workspace_id,
        customer_id=who.customer_id,
        type=type,
        at=at,
        properties={
            "channel": who.channel,
            "category": "marketing",
            "message_id": who.message_id,
            **properties,
        },
    )


def _count(who: Subscriber, source: str, *, named: bool) -> None:
    UNSUBSCRIBES.labels(source, who.channel).inc()
    # An erased customer's id stays out of the logs as well.
    customer = who.customer_id if named else "(erased)"
    log.info("unsubscribed %s:%s from %s (%s)", who.workspace_id, customer, who.channel, source)


async def _form(request: Request) -> dict[str, list[str]]:
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType(
            f"send the form as application/x-www-form-urlencoded, not {media or 'nothing'!r}",
            field="Content-Type",
        )
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM_BYTES:
            raise PayloadTooLarge(f"the form is larger than {_MAX_FORM_BYTES} bytes", field="body")
    try:
        return parse_qs(
            body.decode("ascii"), keep_blank_values=True, strict_parsing=False, max_num_fields=20
        )
    except (UnicodeDecodeError, ValueError):
        raise HTTPProblem("body: not a valid URL-encoded form", field="body") from None


def _wanted(who: Subscriber, form: dict[str, list[str]]) -> bool | None:
    """Subscribed (True), unsubscribed (False), or None when the form offered no choice (the
    address is blocked). An unticked checkbox is absent from a form, so the hidden field
    ``channels`` says which checkboxes the form showed."""
    channels = form.get("channels", [])
    for channel in channels:
        if channel != who.channel:
            raise HTTPProblem(
                f"channels: this link manages {who.channel} only, not {channel!r}",
                field="channels",
            )
    if not channels:
        return None
    values = form.get(who.channel, [])
    if values not in ([], ["subscribed"]):
        raise HTTPProblem(
            f"{who.channel}: must be 'subscribed' or left out, not {values!r}", field=who.channel
        )
    return values == ["subscribed"]


def _error(request: Request, exc: HTTPProblem, *, body: str = "") -> Response:
    """The API's error shape for a client that asks for JSON; a page for everyone else."""
    accept = request.headers.get("accept", "")
    if "application/json" in accept and "text/html" not in accept:
        response: Response = problem(exc.status, exc.code, exc.message, field=exc.field)
        response.headers.update(_HEADERS)
        return response
    content = f'<p class="blocked" role="alert">{escape(exc.message)}</p>' + (
        body or "<p>Open the link exactly as it arrived in the message, or contact the shop.</p>"
    )
    title = "Cannot save" if exc.status == 409 else "This link does not work"
    return _page(title, content, status=exc.status)


def _page(title: str, body: str, *, status: int = 200) -> HTMLResponse:
    document = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="robots" content="noindex"><title>{escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body><main><h1>{escape(title)}</h1>{body}</main>"
        "</body></html>"
    )
    return HTMLResponse(document, status_code=status, headers=_HEADERS)


def _manage_link(up: str, token: str) -> str:
    # Relative, so the page works under whatever path prefix public_url has.
    return f'<p><a href="{up}preferences/{escape(token)}">Manage your preferences</a></p>'


def _blocked(who: Subscriber, standing: Suppression) -> str:
    why = _BLOCKED.get(standing.reason, "it is blocked")
    return (
        f'<p class="blocked">We send nothing to <strong>{escape(who.address)}</strong>, '
        f"not even about orders: {escape(why)}. Contact the shop if this is wrong.</p>"
    )


def _confirm_body(
    up: str, token: str, who: Subscriber, standing: Suppression | None, sender: str
) -> str:
    words = _WORDS[who.channel]
    address = f"<strong>{escape(who.address)}</strong>"
    if standing is not None and standing.reason != "unsubscribe":
        return _blocked(who, standing)
    if standing is not None:
        return f"<p>{address} is already unsubscribed from {words['marketing']}.</p>" + (
            _manage_link(up, token)
        )
    return (
        f"<p>Stop {words['marketing']} from {escape(sender)} to {address}?</p>"
        f"<p>{words['orders']}</p>"
        # No action attribute: the form posts to this very URL, under whatever prefix.
        '<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>' + _manage_link(up, token)
    )


def _done_body(up: str, token: str, who: Subscriber, sender: str) -> str:
    words = _WORDS[who.channel]
    return (
        f'<p class="notice" role="status"><strong>{escape(who.address)}</strong> gets no more '
        f"{words['marketing']} from {escape(sender)}, starting now.</p>"
        f"<p>{words['orders']}</p>"
        f"<p>Unsubscribed by mistake?</p>{_manage_link(up, token)}"
    )


def _preferences_body(
    who: Subscriber, standing: Suppression | None, sender: str, *, notice: str | None = None
) -> str:
    words = _WORDS[who.channel]
    parts = [f'<p class="notice" role="status">{escape(notice)}</p>'] if notice else []
    if standing is not None and standing.reason != "unsubscribe":
        parts.append(_blocked(who, standing))
    else:
        checked = " checked" if standing is None else ""
        parts.append(
            # No action attribute: the form posts to this very URL, under whatever prefix.
            f'<form method="post"><fieldset><legend>{words["marketing"].capitalize()} to '
            f"<strong>{escape(who.address)}</strong></legend>"
            f'<input type="hidden" name="channels" value="{who.channel}">'
            f'<label><input type="checkbox" name="{who.channel}" value="subscribed"{checked}> '
            f"Send me {words['marketing']} from {escape(sender)} (offers, news)</label>"
            f"</fieldset><p>{words['orders']}</p>"
            '<button type="submit">Save preferences</button></form>'
        )
    parts.append(f"<p>This page manages this one address. {words['other']}</p>")
    return "".join(parts)
