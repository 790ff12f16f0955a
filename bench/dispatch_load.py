"""The load of the dispatch benchmark: the message requests, and the HTTP-only baseline.

- :func:`message_requests`: what the journey service would publish on ``ciclo.messages`` for a
  mix of journeys (welcome and cart reminders: marketing email, with unsubscribe links; order
  thanks: transactional), built the way its handler builds them.
- :func:`preload`: put them on the embedded bus before the dispatch process starts, so that
  process drains a backlog and its rate is its capacity.
- ``python -m bench.dispatch_load --url U --concurrency C --seconds S``: the baseline of the same
  run. One process sends the same SendGrid requests through the same client as dispatch
  (``--client dispatch``: ``provider_client``, httpx over the providers' connection slots, at
  most twice C connections; ``--client httpx``: a plain ``httpx.AsyncClient`` with httpx's own
  pool and the same limits, what dispatch used before) and ``SendGridProvider.send``, on uvloop
  as uvicorn runs dispatch, with C sends in flight, and nothing else: no bus, no database, no
  rendering. Its rate is the most one dispatch process could reach with that client and this
  provider; prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import httpx
import uvloop

from services.dispatch.adapters.providers.sendgrid import SendGridProvider
from services.dispatch.adapters.providers.transport import provider_client
from services.dispatch.adapters.templates import TemplateStore
from services.dispatch.domain.messages import Outbound
from services.dispatch.service_layer.handlers import message_variables
from services.dispatch.service_layer.links import SignedLinks
from shared.bus.embedded import EmbeddedBus
from shared.bus.ports import OutgoingRecord
from shared.contracts.messages import MessageRequest, message_id_for
from shared.contracts.topics import MESSAGES, all_topics

REPO = Path(__file__).resolve().parents[1]
WORKSPACE = "demo"
PARTITIONS = 8  # CICLO_BUS_PARTITIONS' default
SENDER = ("hello@example.com", "Ciclo Demo")  # CICLO_EMAIL_FROM / _NAME defaults
PUBLIC_URL = "http://localhost:8000"
SECRET = "ciclo-development-unsubscribe-secret"
FIRST_NAMES = ("Ada", "Ben", "Chloé", "Dev", "Ema", "Finn", "Grace", "Hugo", "Ines", "Jon")

# (journey, step, template, category) by share of the mix, out of 5.
MIX: tuple[tuple[str, str, str, Literal["marketing", "transactional"]], ...] = (
    ("welcome", "hello", "welcome-1", "marketing"),
    ("welcome", "hello", "welcome-1", "marketing"),
    ("cart-abandonment", "remind", "cart-reminder-1", "marketing"),
    ("cart-abandonment", "remind", "cart-reminder-1", "marketing"),
    ("post-purchase", "thanks", "order-thanks", "transactional"),
)


def _cart(i: int) -> dict[str, Any]:
    items = [
        {"product_id": f"sku-{(i * 7 + k) % 5000:05d}", "name": f"Product {k}", "price": "29.90"}
        for k in range(1 + i % 3)
    ]
    return {
        "cart_id": f"cart-{i:010d}",
        "order_id": f"o-{i}",
        "items": items,
        "total": f"{29.90 * len(items):.2f}",
        "currency": "EUR",
        "url": "https://shop.example.com/cart",
    }


def message_request(i: int, *, now: datetime) -> MessageRequest:
    journey_id, step, template, category = MIX[i % len(MIX)]
    customer = f"cust-{i:07d}"
    run_id = f"bench-{i:010d}"
    traits = {
        "email": f"{customer}@example.com",
        "first_name": FIRST_NAMES[i % len(FIRST_NAMES)],
        "timezone": "Europe/Berlin",
        "vip": i % 10 == 0,
    }
    trigger = {"type": "signup", "id": f"ev-{i}", "properties": {}}
    if journey_id != "welcome":
        kind = "cart_updated" if journey_id == "cart-abandonment" else "order_completed"
        trigger = {"type": kind, "id": f"ev-{i}", "properties": _cart(i)}
    return MessageRequest(
        message_id=message_id_for(
            workspace_id=WORKSPACE, journey_id=journey_id, version=1, run_id=run_id, step=step
        ),
        workspace_id=WORKSPACE,
        customer_id=customer,
        channel="email",
        template=template,
        category=category,
        journey_id=journey_id,
        journey_version=1,
        run_id=run_id,
        step=step,
        requested_at=now,
        recipient={
            "customer_id": customer,
            "email": traits["email"],
            "phone": None,
            "traits": traits,
            "scores": {},
        },
        data={"event": trigger},
    )


def message_requests(n: int, *, now: datetime | None = None) -> Iterator[MessageRequest]:
    stamp = now or datetime.now(UTC)
    for i in range(n):
        yield message_request(i, now=stamp)


async def preload(bus_path: Path, n: int, *, chunk: int = 2000) -> float:
    """Create Ciclo's topics in a new embedded bus file and publish ``n`` message requests on
    ``ciclo.messages`` as the journey's outbox relay would; returns the seconds it took."""
    from shared.bus.ports import TopicSpec

    begin = time.perf_counter()
    bus = EmbeddedBus(bus_path, partitions=PARTITIONS, sync="normal")
    await bus.start()
    try:
        await bus.ensure_topics([TopicSpec(t, partitions=PARTITIONS) for t in all_topics()])
        batch: list[OutgoingRecord] = []
        for request in message_requests(n):
            batch.append(
                OutgoingRecord(
                    topic=MESSAGES,
                    key=request.key,
                    value=request.to_json(),
                    headers=request.headers(),
                )
            )
            if len(batch) >= chunk:
                await bus.publish(batch)
                batch = []
        await bus.publish(batch)
    finally:
        await bus.close()
    return time.perf_counter() - begin


def outbound(request: MessageRequest, store: TemplateStore, links: SignedLinks) -> Outbound:
    """The message the dispatcher would hand the provider for ``request`` (its variables, and
    unsubscribe headers on marketing email)."""
    address = str(request.recipient["email"])
    headers, link_vars = links.for_message(request, address)
    if request.category != "marketing":
        headers = {}
    return Outbound(
        message_id=request.message_id,
        workspace_id=request.workspace_id,
        customer_id=request.customer_id,
        channel=request.channel,
        template=request.template,
        category=request.category,
        to=address,
        sender=SENDER[0],
        sender_name=SENDER[1],
        content=store.render(
            request.template, request.channel, message_variables(request, link_vars)
        ),
        headers=headers,
    )


def _percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered), max(1, math.ceil(q / 100 * len(ordered)))) - 1]


Client = Literal["dispatch", "httpx"]


def make_client(kind: Client, *, concurrency: int) -> httpx.AsyncClient:
    """The client dispatch sends through (``dispatch``), or httpx's own pool (``httpx``); both
    with at most twice ``concurrency`` connections, as ``DispatchWorker`` sets them."""
    if kind == "dispatch":
        return provider_client(timeout=10.0, connections=concurrency * 2)
    return httpx.AsyncClient(
        timeout=httpx.Timeout(10.0),
        limits=httpx.Limits(
            max_connections=concurrency * 2, max_keepalive_connections=concurrency * 2
        ),
    )


async def http_only(
    url: str,
    *,
    api_key: str,
    concurrency: int,
    seconds: float,
    warmup: float = 1.0,
    client_kind: Client = "dispatch",
) -> dict[str, Any]:
    """``concurrency`` senders loop over prepared messages for ``warmup`` + ``seconds``; only
    the sends that start after the warm-up count."""
    store = TemplateStore(REPO / "templates")
    links = SignedLinks(public_url=PUBLIC_URL, secret=SECRET)
    messages = [outbound(r, store, links) for r in message_requests(1000)]
    client = make_client(client_kind, concurrency=concurrency)
    provider = SendGridProvider(client, api_key=api_key, base_url=url)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    loop = asyncio.get_running_loop()
    start = loop.time() + warmup
    end = start + seconds

    async def sender(k: int) -> None:
        i = k
        while (began := loop.time()) < end:
            try:
                await provider.send(messages[i % len(messages)])
            except Exception as exc:  # counted and shown: a baseline must not hide errors
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            else:
                if began >= start:
                    latencies.append(loop.time() - began)
            i += concurrency

    cpu = time.process_time()
    cpu_at_start: float | None = None

    async def mark() -> None:
        nonlocal cpu_at_start
        await asyncio.sleep(warmup)
        cpu_at_start = time.process_time()

    try:
        await asyncio.gather(mark(), *(sender(k) for k in range(concurrency)))
    finally:
        await client.aclose()
    elapsed = loop.time() - start
    used = time.process_time() - (cpu_at_start if cpu_at_start is not None else cpu)
    ordered = sorted(latencies)
    return {
        "client": client_kind,
        "concurrency": concurrency,
        "seconds": round(elapsed, 2),
        "sent": len(latencies),
        "messages_per_s": round(len(latencies) / elapsed, 1) if elapsed > 0 else None,
        "latency_ms": {
            "p50": _ms(_percentile(ordered, 50)),
            "p99": _ms(_percentile(ordered, 99)),
        },
        "errors": errors,
        "cpu_cores": round(used / elapsed, 2) if elapsed > 0 else None,
        "cpu_us_per_message": round(used / len(latencies) * 1e6, 1) if latencies else None,
        "pid": os.getpid(),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dispatch_load", description=__doc__)
    parser.add_argument("--url", required=True, help="base URL of the fake SendGrid")
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument(
        "--client",
        choices=("dispatch", "httpx"),
        default="dispatch",
        help="dispatch's client (provider_client) or a plain httpx.AsyncClient",
    )
    args = parser.parse_args()
    result = uvloop.run(
        http_only(
            args.url,
            api_key=args.api_key,
            concurrency=args.concurrency,
            seconds=args.seconds,
            client_kind=args.client,
        )
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
