"""Journeys over real time in embedded mode: a wait fires from the durable timer table, an exit
event cancels it, and a timer set before a SIGKILL still fires after the restart."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_embedded import sink_messages, wait_for
from tests.fixtures.processes import CicloProcess, ciclo_env

pytestmark = pytest.mark.slow

WAIT = 3  # seconds the journey waits for another update of the cart

CART = {
    "id": "cart-quick",
    "version": 1,
    "name": "Cart reminder after a quiet spell",
    "trigger": {"event": "cart_updated", "key": "cart_id"},
    "reentry": "always",
    "exit_when": [{"event": "order_completed", "match": "cart_id"}],
    "start": "quiet",
    "steps": {
        "quiet": {
            "wait_for": {"event": "cart_updated", "match": "cart_id", "timeout": f"PT{WAIT}S"},
            "on_event": "quiet",
            "on_timeout": "remind",
        },
        "remind": {"send": {"channel": "email", "template": "cart-reminder"}},
    },
}


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    journeys = tmp_path / "journeys"
    journeys.mkdir()
    (journeys / "cart.json").write_text(json.dumps(CART))
    template = tmp_path / "templates" / "cart-reminder"
    template.mkdir(parents=True)
    (template / "subject.liquid").write_text(
        "Still thinking about cart {{ event.properties.cart_id }}?"
    )
    (template / "text.liquid").write_text("Hi {{ customer.first_name }}, your cart is waiting.")
    (template / "html.liquid").write_text(
        "<p>Hi {{ customer.first_name }}, your cart is waiting.</p>"
    )
    return ciclo_env(
        CICLO_DATA_DIR=str(tmp_path / "data"),
        CICLO_JOURNEYS_DIR=str(journeys),
        CICLO_TEMPLATES_DIR=str(tmp_path / "templates"),
    )


def post(app: CicloProcess, key: str, body: dict[str, Any]) -> None:
    answer = httpx.post(
        f"{app.url}/v1/events", headers={"Authorization": f"Bearer {key}"}, json=body
    )
    assert answer.status_code == 202, answer.text


def cart(customer: str, cart_id: str, type_: str = "cart_updated") -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": type_,
        "customer_id": customer,
        "traits": {"email": f"{customer}@example.com", "first_name": customer.title()},
    }
    if type_ == "cart_updated":
        body["properties"] = {"cart_id": cart_id, "items": []}
    else:
        body["properties"] = {
            "cart_id": cart_id,
            "order_id": f"o-{cart_id}",
            "total": "10.00",
            "currency": "EUR",
            "items": [],
        }
    return body


def test_the_wait_fires_and_an_order_of_the_cart_cancels_it(
    env: dict[str, str], tmp_path: Path, processes: list[CicloProcess]
) -> None:
    app = CicloProcess(["run"], env=env, log_dir=tmp_path).start()
    processes.append(app)
    keys = app.demo_keys()
    started = time.monotonic()
    post(app, keys["ingest"], cart("ana", "A"))
    post(app, keys["ingest"], cart("ben", "B"))
    post(app, keys["ingest"], cart("ben", "B", type_="order_completed"))

    [message] = wait_for(
        lambda: sink_messages(app.url, keys["admin"]), timeout=30, what="the reminder"
    )
    assert time.monotonic() - started >= WAIT - 0.5  # not before the quiet spell ended
    assert (message["to"], message["subject"]) == (
        "ana@example.com",
        "Still thinking about cart A?",
    )
    time.sleep(WAIT)  # ben's timer would have fired by now; the order cancelled it
    assert len(sink_messages(app.url, keys["admin"])) == 1


def test_a_timer_survives_a_kill(
    env: dict[str, str], tmp_path: Path, processes: list[CicloProcess]
) -> None:
    app = CicloProcess(["run"], env=env, log_dir=tmp_path).start()
    processes.append(app)
    keys = app.demo_keys()
    post(app, keys["ingest"], cart("ana", "A"))
    # Wait until the journey has taken the event (the run and its timer are committed) ...
    metrics = lambda: httpx.get(f"{app.url}/metrics").text  # noqa: E731
    wait_for(
        lambda: 'ciclo_consumer_records_total{group="journey",outcome="ok"} 1.0' in metrics(),
        timeout=20,
        what="the journey to take the event",
    )
    app.kill()  # ... then die before the timer is due.
    again = CicloProcess(["run"], env=env, log_dir=tmp_path).start()
    processes.append(again)
    [message] = wait_for(
        lambda: sink_messages(again.url, keys["admin"]), timeout=30, what="the reminder"
    )
    assert message["to"] == "ana@example.com"
