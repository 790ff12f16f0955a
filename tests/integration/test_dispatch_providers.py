"""Every HTTP provider over real HTTP against its fake: the wire format, where our message id
travels, and how each kind of failure becomes a send error (retry, give up, or unknown)."""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, replace
from typing import Any, cast

import httpx
import pytest
from pydantic import ValidationError

from services.dispatch.adapters.providers.base import Provider
from services.dispatch.adapters.providers.mailgun import MailgunProvider
from services.dispatch.adapters.providers.postmark import PostmarkProvider
from services.dispatch.adapters.providers.registry import build_provider
from services.dispatch.adapters.providers.sendgrid import SendGridProvider
from services.dispatch.adapters.providers.sink import SinkProvider
from services.dispatch.adapters.providers.twilio import TwilioProvider
from services.dispatch.adapters.providers.vonage import VonageProvider
from services.dispatch.adapters.providers.webhook import WebhookProvider
from services.dispatch.domain.messages import Outbound, Rendered
from services.dispatch.domain.providers import (
    MailgunConfig,
    PostmarkConfig,
    ProviderConfig,
    SendGridConfig,
    SinkConfig,
    TwilioConfig,
    VonageConfig,
    WebhookConfig,
)
from services.dispatch.errors import (
    AmbiguousSendError,
    NotSentError,
    PermanentSendError,
    TransientSendError,
)
from tests.fakes.faults import Injected
from tests.fakes.mailgun import FakeMailgun
from tests.fakes.postmark import FakePostmark
from tests.fakes.sendgrid import FakeSendGrid
from tests.fakes.server import free_port, serve
from tests.fakes.twilio import FakeTwilio
from tests.fakes.vonage import FakeVonage
from tests.fakes.webhook_receiver import FakeWebhookReceiver
from tests.fixtures.waiting import wait_for

TIMEOUT = 0.3
SECRET = "whsec_0123456789abcdef"
TWILIO_SID = "AC" + "ab" * 16
TWILIO_SERVICE = "MG" + "cd" * 16
PHONE = "+14155552671"
SENDER_NUMBER = "+14155550100"
UNSUBSCRIBE = {
    "List-Unsubscribe": "<https://ciclo.example.com/u/tok123>, <mailto:u@ciclo.example.com>",
    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
}


def email(n: int = 1, **changes: Any) -> Outbound:
    message = Outbound(
        message_id=f"msg_{n:032d}",
        workspace_id="ws_demo",
        customer_id=f"c{n}",
        channel="email",
        template="welcome-1",
        category="marketing",
        to="ana@example.org",
        sender="shop@example.com",
        sender_name="Shop, Inc.",
        content=Rendered(subject="Welcome, Ana!", html="<p>Hi Ana</p>", text="Hi Ana"),
        headers=dict(UNSUBSCRIBE),
    )
    return replace(message, **changes)


def sms(n: int = 1, **changes: Any) -> Outbound:
    message = Outbound(
        message_id=f"msg_{n:032d}",
        workspace_id="ws_demo",
        customer_id=f"c{n}",
        channel="sms",
        template="cart-sms",
        category="marketing",
        to=PHONE,
        sender="shop@example.com",
        sender_name="Shop",
        content=Rendered(
            subject=None, html=None, text="Your cart misses you. Reply STOP to opt out"
        ),
    )
    return replace(message, **changes)


@dataclass
class Case:
    """One provider kind: its fake, how to configure it against a base URL, and what it says when
    the credentials are wrong."""

    kind: str
    fake: Any
    config: Callable[[str], ProviderConfig]
    bad_auth: Callable[[str], ProviderConfig]
    auth_error: str
    message: Callable[..., Outbound]
    url: str = ""

    def provider(
        self, client: httpx.AsyncClient, *, config: ProviderConfig | None = None
    ) -> Provider:
        built = build_provider(config or self.config(self.url), client)
        assert hasattr(built, "send"), f"{self.kind} is not an HTTP provider"
        return cast(Provider, built)


def make_cases() -> dict[str, Case]:
    return {
        "sendgrid": Case(
            kind="sendgrid",
            fake=FakeSendGrid(),
            config=lambda url: SendGridConfig(api_key="SG.test-key", base_url=url),
            bad_auth=lambda url: SendGridConfig(api_key="SG.revoked", base_url=url),
            auth_error="authorization grant is invalid",
            message=email,
        ),
        "mailgun": Case(
            kind="mailgun",
            fake=FakeMailgun(),
            config=lambda url: MailgunConfig(
                api_key="key-test", domain="mg.example.com", base_url=url
            ),
            bad_auth=lambda url: MailgunConfig(
                api_key="key-wrong", domain="mg.example.com", base_url=url
            ),
            auth_error="Forbidden",
            message=email,
        ),
        "postmark": Case(
            kind="postmark",
            fake=FakePostmark(),
            config=lambda url: PostmarkConfig(server_token="pm-server-token", base_url=url),
            bad_auth=lambda url: PostmarkConfig(server_token="pm-wrong", base_url=url),
            auth_error="does not contain a valid Server token",
            message=email,
        ),
        "twilio": Case(
            kind="twilio",
            fake=FakeTwilio(
                account_sid=TWILIO_SID,
                numbers=(SENDER_NUMBER,),
                messaging_services=(TWILIO_SERVICE,),
            ),
            config=lambda url: TwilioConfig(
                account_sid=TWILIO_SID,
                auth_token="twilio-token",
                from_number=SENDER_NUMBER,
                base_url=url,
                status_callback="https://ciclo.example.com/webhooks/twilio?source=sms",
            ),
            bad_auth=lambda url: TwilioConfig(
                account_sid=TWILIO_SID,
                auth_token="wrong",
                from_number=SENDER_NUMBER,
                base_url=url,
                status_callback="https://ciclo.example.com/webhooks/twilio",
            ),
            auth_error="20003 Authenticate",
            message=sms,
        ),
        "vonage": Case(
            kind="vonage",
            fake=FakeVonage(),
            config=lambda url: VonageConfig(
                api_key="vonage-key",
                api_secret="vonage-secret",
                from_number=SENDER_NUMBER,
                base_url=url,
            ),
            bad_auth=lambda url: VonageConfig(
                api_key="vonage-key", api_secret="wrong", from_number=SENDER_NUMBER, base_url=url
            ),
            auth_error="You did not provide correct credentials",
            message=sms,
        ),
        "webhook": Case(
            kind="webhook",
            fake=FakeWebhookReceiver(SECRET),
            config=lambda url: WebhookConfig(url=url + "/ciclo/messages", secret=SECRET),
            bad_auth=lambda url: WebhookConfig(
                url=url + "/ciclo/messages", secret="whsec_not-the-shared-one"
            ),
            auth_error="invalid or stale X-Ciclo-Signature",
            message=email,
        ),
    }


KINDS = ["sendgrid", "mailgun", "postmark", "twilio", "vonage", "webhook"]


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, Case]]:
    """One server per fake for the whole module (each test resets its fake)."""
    cases = make_cases()
    with ExitStack() as stack:
        for case in cases.values():
            case.url = stack.enter_context(serve(case.fake.app))
        yield cases


@pytest.fixture(params=KINDS)
def case(request: pytest.FixtureRequest, servers: dict[str, Case]) -> Case:
    chosen = servers[request.param]
    chosen.fake.reset()
    return chosen


@pytest.fixture
def fakes(servers: dict[str, Case]) -> dict[str, Case]:
    for chosen in servers.values():
        chosen.fake.reset()
    return servers


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    # The short timeout is for answers (an answer later than it is ambiguous); connecting to
    # a fake on this machine may wait longer while the whole suite runs in parallel.
    async with httpx.AsyncClient(timeout=httpx.Timeout(TIMEOUT, connect=10.0)) as c:
        yield c


# --- accepted: our id travels in the provider's custom-data field ---------------------------


async def test_a_message_is_accepted_with_our_id_in_the_custom_data(
    case: Case, client: httpx.AsyncClient
) -> None:
    message = case.message(7)
    receipt = await case.provider(client).send(message)
    assert receipt.provider == case.kind
    assert receipt.provider_message_id
    assert case.fake.message_ids() == [message.message_id]


async def test_mailgun_wire_format(fakes: dict[str, Case], client: httpx.AsyncClient) -> None:
    case = fakes["mailgun"]
    receipt = await case.provider(client).send(email(1))
    [form] = case.fake.accepted
    assert form["from"] == ['"Shop, Inc." <shop@example.com>']
    assert (form["to"], form["subject"]) == (["ana@example.org"], ["Welcome, Ana!"])
    assert (form["text"], form["html"], form["o:tag"]) == (
        ["Hi Ana"],
        ["<p>Hi Ana</p>"],
        ["welcome-1"],
    )
    assert case.fake.headers() == UNSUBSCRIBE
    assert case.fake.variables() == {
        "ciclo_message_id": email(1).message_id,
        "ciclo_workspace_id": "ws_demo",
    }
    # The Message-Id as webhooks show it: without Mailgun's angle brackets.
    assert receipt.provider_message_id is not None
    assert receipt.provider_message_id.endswith("@mg.example.com")
    assert "<" not in receipt.provider_message_id


async def test_mailgun_refuses_an_unknown_domain(
    fakes: dict[str, Case], client: httpx.AsyncClient
) -> None:
    case = fakes["mailgun"]
    config = MailgunConfig(api_key="key-test", domain="mg.other.com", base_url=case.url)
    with pytest.raises(PermanentSendError, match=r"404: Domain not found: mg\.other\.com"):
        await case.provider(client, config=config).send(email())


async def test_postmark_wire_format_and_streams(
    fakes: dict[str, Case], client: httpx.AsyncClient
) -> None:
    case = fakes["postmark"]
    provider = case.provider(client)
    marketing = await provider.send(email(1))
    await provider.send(email(2, category="transactional"))
    first, second = case.fake.accepted
    assert first["From"] == '"Shop, Inc." <shop@example.com>'
    assert (first["To"], first["Subject"], first["Tag"]) == (
        "ana@example.org",
        "Welcome, Ana!",
        "welcome-1",
    )
    assert (first["HtmlBody"], first["TextBody"]) == ("<p>Hi Ana</p>", "Hi Ana")
    assert first["Headers"] == [{"Name": k, "Value": v} for k, v in UNSUBSCRIBE.items()]
    assert first["Metadata"] == {
        "ciclo_message_id": email(1).message_id,
        "ciclo_workspace_id": "ws_demo",
    }
    assert (first["MessageStream"], second["MessageStream"]) == ("broadcast", "outbound")
    assert marketing.provider_message_id and len(marketing.provider_message_id) == 36


async def test_postmark_error_codes_decide_retries(
    fakes: dict[str, Case], client: httpx.AsyncClient
) -> None:
    case = fakes["postmark"]
    provider = case.provider(client)
    case.fake.inactive.add("ana@example.org")
    with pytest.raises(PermanentSendError, match=r"422: ErrorCode 406: .*marked as inactive"):
        await provider.send(email(1))
    # A rate limit reported as ErrorCode 429 inside a 422 is still a rate limit.
    case.fake.inactive.clear()
    case.fake.fail_next(
        Injected(
            status=422,
            body={"ErrorCode": 429, "Message": "Rate limit exceeded."},
            headers={"Retry-After": "3"},
        )
    )
    with pytest.raises(TransientSendError) as caught:
        await provider.send(email(2))
    assert caught.value.retry_after == 3.0
    stream = PostmarkConfig(server_token="pm-server-token", base_url=case.url, broadcast_stream="x")
    with pytest.raises(PermanentSendError, match="ErrorCode 1235: The message stream 'x'"):
        await case.provider(client, config=stream).send(email(3))
    assert case.fake.accepted == []


async def test_postmark_refuses_ids_longer_than_its_metadata_allows(
    fakes: dict[str, Case], client: httpx.AsyncClient
) -> None:
    case = fakes["postmark"]
    with pytest.raises(NotSentError, match="80 characters"):
        await case.provider(client).send(email(message_id="m" * 81))
    assert case.fake.requests == 0


async def test_twilio_wire_format_and_status_callback(
    fakes: dict[str, Case], client: httpx.AsyncClient
) -> None:
    case = fakes["twilio"]
    receipt = await case.provider(client).send(sms(1))
    [form] = case.fake.accepted
    assert (form["To"], form["From"], form["Body"]) == (PHONE, SENDER_NUMBER, sms().content.text)
    callback = urllib.parse.urlsplit(form["StatusCallback"])
    assert (callback.netloc, callback.path) == ("ciclo.example.com", "/webhooks/twilio")
    assert urllib.parse.parse_qs(callback.query) == {
        "source": ["sms"],
        "ciclo_message_id": [sms(1).message_id],
        "ciclo_workspace_id": ["ws_demo"],
    }
    assert receipt.provider_message_id is not None
    assert receipt.provider_message_id.startswith("SM")


async def test_twilio_prefers_a_messaging_service(
    fakes: dict[str, Case], client: httpx.AsyncClient
) -> None:
    case = fakes["twilio"]
    config = TwilioConfig(
        account_sid=TWILIO_SID,
        auth_token="twilio-token",
        from_number=SENDER_NUMBER,
        messaging_service_sid=TWILIO_SERVICE,
        base_url=case.url,
    )
    await case.provider(client, config=config).send(sms(1))
    [form] = case.fake.accepted
    assert form["MessagingServiceSid"] == TWILIO_SERVICE
    assert "From" not in form
    assert "StatusCallback" not in form  # none configured: Twilio's default for the service


async def test_twilio_without_a_sender_is_refused_before_sending(
    fakes: dict[str, Case], client: httpx.AsyncClient
) -> None:
    case = fakes["twilio"]
    # Refused when configured; a stored configuration from before that check still fails
    # before any request.
    with pytest.raises(ValidationError, match="Twilio needs a sender"):
        TwilioConfig(account_sid=TWILIO_SID, auth_token="twilio-token", base_url=case.url)
    config = TwilioConfig.model_construct(
        account_sid=TWILIO_SID, auth_token="twilio-token", base_url=case.url
    )
    with pytest.raises(NotSentError, match="neither from_number nor messaging_service_sid"):
        await case.provider(client, config=config).send(sms())
    assert case.fake.requests == 0


async def test_vonage_wire_format(fakes: dict[str, Case], client: httpx.AsyncClient) -> None:
    case = fakes["vonage"]
    receipt = await case.provider(client).send(sms(1))
    [body] = case.fake.accepted
    assert body == {
        "message_type": "text",
        "channel": "sms",
        "to": PHONE[1:],
        "from": SENDER_NUMBER[1:],
        "text": sms().content.text,
        "client_ref": sms(1).message_id,
    }
    assert receipt.provider_message_id and len(receipt.provider_message_id) == 36


async def test_vonage_keeps_an_alphanumeric_sender(
    fakes: dict[str, Case], client: httpx.AsyncClient
) -> None:
    case = fakes["vonage"]
    config = VonageConfig(
        api_key="vonage-key", api_secret="vonage-secret", from_number="ShopCo", base_url=case.url
    )
    await case.provider(client, config=config).send(sms(1))
    assert case.fake.accepted[0]["from"] == "ShopCo"


async def test_vonage_refuses_a_client_ref_over_100_characters(
    fakes: dict[str, Case], client: httpx.AsyncClient
) -> None:
    case = fakes["vonage"]
    with pytest.raises(NotSentError, match="100 characters"):
        await case.provider(client).send(sms(message_id="m" * 101))
    assert case.fake.requests == 0


async def test_webhook_body_headers_and_both_channels(
    fakes: dict[str, Case], client: httpx.AsyncClient
) -> None:
    case = fakes["webhook"]
    provider = case.provider(client)
    mail = await provider.send(email(1))
    text = await provider.send(sms(2))
    first, second = case.fake.accepted
    assert first == {
        "message_id": email(1).message_id,
        "workspace_id": "ws_demo",
        "customer_id": "c1",
        "channel": "email",
        "category": "marketing",
        "template": "welcome-1",
        "to": "ana@example.org",
        "from": {"email": "shop@example.com", "name": "Shop, Inc."},
        "subject": "Welcome, Ana!",
        "html": "<p>Hi Ana</p>",
        "text": "Hi Ana",
        "headers": UNSUBSCRIBE,
    }
    assert (second["channel"], second["to"], second["from"], second["subject"]) == (
        "sms",
        PHONE,
        None,
        None,
    )
    assert case.fake.received_headers[0]["x-ciclo-message-id"] == email(1).message_id
    assert case.fake.received_headers[0]["x-ciclo-signature"].startswith("t=")
    assert mail.provider_message_id and mail.provider_message_id.startswith("rcv_")
    assert text.provider_message_id != mail.provider_message_id


async def test_webhook_redirect_is_not_followed(
    fakes: dict[str, Case], client: httpx.AsyncClient
) -> None:
    case = fakes["webhook"]
    case.fake.fail_next(Injected(status=308, headers={"Location": "https://elsewhere.example"}))
    with pytest.raises(PermanentSendError, match=r"308.*redirect"):
        await case.provider(client).send(email())


@pytest.mark.parametrize("kind", ["sendgrid", "mailgun", "postmark", "webhook"])
async def test_email_headers_travel(
    kind: str, fakes: dict[str, Case], client: httpx.AsyncClient
) -> None:
    case = fakes[kind]
    await case.provider(client).send(email())
    sent: dict[str, Callable[[Any], dict[str, str]]] = {
        "sendgrid": lambda f: f.accepted[0]["headers"],
        "mailgun": lambda f: f.headers(),
        "postmark": lambda f: {h["Name"]: h["Value"] for h in f.accepted[0]["Headers"]},
        "webhook": lambda f: f.accepted[0]["headers"],
    }
    assert sent[kind](case.fake) == UNSUBSCRIBE


# --- failures --------------------------------------------------------------------------------


async def test_429_with_retry_after_is_transient(case: Case, client: httpx.AsyncClient) -> None:
    case.fake.fail_next(Injected(status=429, headers={"Retry-After": "7"}))
    with pytest.raises(TransientSendError, match="429") as caught:
        await case.provider(client).send(case.message())
    assert caught.value.retry_after == 7.0
    assert case.fake.accepted == []


@pytest.mark.parametrize("status", [500, 503])
async def test_5xx_is_transient(case: Case, client: httpx.AsyncClient, status: int) -> None:
    case.fake.fail_next(Injected(status=status))
    with pytest.raises(TransientSendError, match=str(status)) as caught:
        await case.provider(client).send(case.message())
    assert caught.value.retry_after is None


async def test_accepted_then_failed_is_transient_although_it_was_sent(
    case: Case, client: httpx.AsyncClient
) -> None:
    """The price of providers without idempotency keys: a 5xx after the provider took the
    message looks like any 5xx, and the retry will send it again."""
    message = case.message()
    case.fake.fail_next(Injected(status=502, accept=True))
    with pytest.raises(TransientSendError):
        await case.provider(client).send(message)
    assert case.fake.message_ids() == [message.message_id]


async def test_auth_failure_is_permanent_with_the_providers_message(
    case: Case, client: httpx.AsyncClient
) -> None:
    provider = case.provider(client, config=case.bad_auth(case.url))
    with pytest.raises(PermanentSendError, match="401") as caught:
        await provider.send(case.message())
    assert case.auth_error in str(caught.value)
    assert case.fake.accepted == []


def _refusal(kind: str, fake: Any) -> tuple[Outbound, str]:
    """A message the provider refuses as invalid, and the provider's words for it."""
    if kind == "sendgrid":
        return email(to="ana.example.org"), "personalizations.0.to: Does not contain a valid"
    if kind == "mailgun":
        return email(to="ana.example.org"), "'to' parameter is not a valid address"
    if kind == "postmark":
        return email(to="ana.example.org"), "ErrorCode 300: Error parsing 'To'"
    if kind == "twilio":
        fake.unsubscribed.add(PHONE)
        return sms(), "21610 Attempt to send to unsubscribed recipient"
    if kind == "vonage":
        fake.barred.add(PHONE[1:])
        return sms(), f"to: The number {PHONE[1:]} is barred"
    fake.fail_next(Injected(status=422, body={"error": "customer c1 is unknown here"}))
    return email(), "customer c1 is unknown here"


async def test_validation_error_is_permanent_with_the_providers_message(
    case: Case, client: httpx.AsyncClient
) -> None:
    message, words = _refusal(case.kind, case.fake)
    with pytest.raises(PermanentSendError) as caught:
        await case.provider(client).send(message)
    assert words in str(caught.value)
    assert case.fake.accepted == []


async def test_an_answer_slower_than_the_timeout_is_ambiguous(
    case: Case, client: httpx.AsyncClient
) -> None:
    message = case.message()
    case.fake.fail_next(Injected(status=200, delay=TIMEOUT * 2, accept=True))
    with pytest.raises(AmbiguousSendError):
        await case.provider(client).send(message)
    # It did go out. Under load the client's timeout can run out before the fake has handled
    # the request it already received: the fake records it when it gets to it.
    await wait_for(
        lambda: case.fake.message_ids(), timeout=5, what="the fake provider to record the send"
    )
    assert case.fake.message_ids() == [message.message_id]


async def test_a_connection_dropped_mid_answer_is_ambiguous(
    case: Case, client: httpx.AsyncClient
) -> None:
    case.fake.fail_next(Injected(drop=True, accept=True))
    with pytest.raises(AmbiguousSendError):
        await case.provider(client).send(case.message())


async def test_a_refused_connection_is_transient(case: Case, client: httpx.AsyncClient) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(TransientSendError, match="unreachable"):
        await case.provider(client, config=case.config(nobody)).send(case.message())


@pytest.mark.parametrize("kind", ["sendgrid", "mailgun", "postmark", "twilio", "vonage"])
async def test_the_wrong_channel_is_refused_before_any_request(
    kind: str, fakes: dict[str, Case], client: httpx.AsyncClient
) -> None:
    case = fakes[kind]
    wrong = sms() if case.message is email else email()
    with pytest.raises(NotSentError, match=f"{kind} cannot send {wrong.channel} messages"):
        await case.provider(client).send(wrong)
    assert case.fake.requests == 0


@pytest.mark.parametrize("kind", ["twilio", "vonage"])
@pytest.mark.parametrize("number", ["4155552671", "+1 415 555 2671", "+0123456789", "+1234"])
async def test_a_number_that_is_not_e164_is_refused_before_any_request(
    kind: str, number: str, fakes: dict[str, Case], client: httpx.AsyncClient
) -> None:
    case = fakes[kind]
    with pytest.raises(NotSentError, match=r"is not an E\.164 phone number"):
        await case.provider(client).send(sms(to=number))
    assert case.fake.requests == 0


EMOJI = "\U0001f600"  # a surrogate pair: 2 characters as SMS providers count them


@pytest.mark.parametrize(("kind", "limit"), [("twilio", 1600), ("vonage", 1000)])
async def test_a_text_over_the_providers_limit_is_refused_before_any_request(
    kind: str, limit: int, fakes: dict[str, Case], client: httpx.AsyncClient
) -> None:
    case = fakes[kind]
    provider = case.provider(client)
    await provider.send(sms(1, content=Rendered(None, None, "a" * limit)))
    assert case.fake.requests == 1  # the limit itself goes
    with pytest.raises(NotSentError) as caught:
        await provider.send(sms(2, content=Rendered(None, None, "a" * (limit + 1))))
    segments = -(-(limit + 1) // 153)
    assert str(caught.value) == (
        f"{kind}: the text is {limit + 1} characters (GSM-7, {segments} segments); {kind} "
        f"takes at most {limit} characters and refuses longer ones "
        f"({'error 21617' if kind == 'twilio' else 'a 422 on text'}): shorten the template"
    )
    # An emoji counts 2: one character fewer, and still one too many.
    with pytest.raises(NotSentError, match=rf"is {limit + 1} characters \(UCS-2, "):
        await provider.send(sms(3, content=Rendered(None, None, "a" * (limit - 1) + EMOJI)))
    assert case.fake.requests == 1
    assert case.fake.message_ids() == [sms(1).message_id]


@pytest.mark.parametrize(
    ("kind", "text", "words"),
    [
        ("twilio", "a" * 1601, "answered 400: 21617 The concatenated message body exceeds"),
        ("twilio", "a" * 1599 + EMOJI, "answered 400: 21617"),
        ("vonage", "a" * 1001, "answered 422: Invalid params: The value of one or more"),
    ],
)
async def test_without_the_check_the_provider_itself_refuses_the_text(
    kind: str, text: str, words: str, fakes: dict[str, Case], client: httpx.AsyncClient
) -> None:
    """What the check spares: a request the provider answers with its own refusal (the fakes
    count as the providers do, Twilio an emoji as 2)."""
    case = fakes[kind]
    provider = case.provider(client)
    provider.max_text = 10_000  # type: ignore[attr-defined]
    with pytest.raises(PermanentSendError) as caught:
        await provider.send(sms(content=Rendered(None, None, text)))
    assert not isinstance(caught.value, NotSentError)
    assert words in str(caught.value)
    assert (case.fake.requests, case.fake.accepted) == (1, [])


async def test_fakes_answer_after_the_configured_latency(
    case: Case, client: httpx.AsyncClient
) -> None:
    case.fake.faults.latency = 0.05
    try:
        started = time.perf_counter()
        await case.provider(client).send(case.message())
        assert time.perf_counter() - started >= 0.05
    finally:
        case.fake.faults.latency = 0.0


# --- the registry -----------------------------------------------------------------------------


async def test_the_registry_builds_every_kind(client: httpx.AsyncClient) -> None:
    url = "https://provider.example"
    configs: list[ProviderConfig] = [
        SinkConfig(),
        SendGridConfig(api_key="k"),
        MailgunConfig(api_key="k", domain="mg.example.com", base_url="https://api.eu.mailgun.net"),
        PostmarkConfig(server_token="t"),
        TwilioConfig(account_sid=TWILIO_SID, auth_token="t", from_number=SENDER_NUMBER),
        VonageConfig(api_key="k", api_secret="s", from_number=SENDER_NUMBER),
        WebhookConfig(url=url, secret=SECRET),
    ]
    built = [build_provider(config, client) for config in configs]
    assert [type(p) for p in built] == [
        SinkProvider,
        SendGridProvider,
        MailgunProvider,
        PostmarkProvider,
        TwilioProvider,
        VonageProvider,
        WebhookProvider,
    ]
    assert [p.name for p in built] == [c.kind for c in configs]
    assert [p.channels for p in built] == [type(c).channels for c in configs]  # type: ignore[union-attr]
