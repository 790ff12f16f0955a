"""The OpenAPI document against the running system: schemathesis generates requests from it
(valid and invalid) and no request may make the server fail with a 5xx."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.fixtures.processes import CicloProcess, ciclo_env

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    tmp = tmp_path_factory.mktemp("openapi")
    env = ciclo_env(CICLO_DATA_DIR=str(tmp / "data"), CICLO_RATE_LIMIT="0")
    process = CicloProcess(["run"], env=env, log_dir=tmp).start()
    try:
        yield process.url, process.demo_keys()["admin"]
    finally:
        process.stop()


def test_no_request_makes_the_server_fail(server: tuple[str, str]) -> None:
    # Driven through hypothesis directly: schemathesis' pytest plugin does not support pytest 9.
    url, admin_key = server
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 3
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=40,
            deadline=None,
            database=None,
            # The same examples every run, so CI is reproducible; they change with the schema.
            derandomize=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(
                base_url=url,
                headers={"Authorization": f"Bearer {admin_key}"},
                checks=[not_a_server_error],
            )

        check()


def test_openapi_documents_every_public_route(server: tuple[str, str]) -> None:
    url, _ = server
    document = httpx.get(f"{url}/openapi.json").json()
    assert {
        "/v1/events",
        "/v1/events/batch",
        "/v1/sink/messages",
        "/v1/webhooks/shopify/{workspace_id}",
        "/v1/webhooks/woocommerce/{workspace_id}",
        "/v1/providers",
        "/v1/providers/{channel}/{role}",
        "/v1/dispatch-settings",
        "/v1/suppressions",
        "/v1/templates",
        "/v1/templates/{template_id}",
        "/v1/templates/{template_id}/preview",
        "/v1/discount-pools/{pool}/codes",
        "/v1/webhooks/providers/{provider}/{workspace_id}",
        "/u/{token}",
        "/preferences/{token}",
    } <= set(document["paths"])
    post = document["paths"]["/v1/events"]["post"]
    assert {"401", "403", "413", "415", "422", "429"} <= set(post["responses"])
    examples = post["requestBody"]["content"]["application/json"]["examples"]
    assert {"signup", "order", "custom"} <= set(examples)
    assert any(
        "order_completed" in str(option)
        for option in post["requestBody"]["content"]["application/json"]["schema"].get("oneOf", [])
    ) or "OrderCompletedEvent" in str(document["components"]["schemas"])


def test_sink_paging_beyond_64_bits_is_422(server: tuple[str, str]) -> None:
    # Found by schemathesis: the id overflowed SQLite's INTEGER and answered 500.
    url, admin_key = server
    answer = httpx.get(
        f"{url}/v1/sink/messages",
        params={"after": 76933302016036618240},
        headers={"Authorization": f"Bearer {admin_key}"},
    )
    assert answer.status_code == 422
    assert answer.json()["error"]["field"] == "query.after"
