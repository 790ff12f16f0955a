"""Provider webhooks, pure: each provider's signature check with real cryptography (ECDSA P-256
for SendGrid, HMACs for Mailgun and Twilio, an HS256 JWT built with the standard library for
Vonage, Basic credentials for Postmark), and the mapping of every provider event."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any, get_args
from urllib.parse import urlencode

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from services.dispatch.domain.events import ENGAGEMENT
from services.dispatch.domain.providers import (
    MailgunConfig,
    PostmarkConfig,
    ProviderConfig,
    SendGridConfig,
    TwilioConfig,
    VonageConfig,
)
from services.dispatch.webhooks import mailgun, postmark, registry, sendgrid, twilio, vonage
from services.dispatch.webhooks.model import (
    Engagement,
    EngagementType,
    WebhookAuthError,
    WebhookFormatError,
    WebhookPayloadError,
    WebhookRequest,
)

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
TS = int(NOW.timestamp())


def only(engagements: list[Engagement]) -> Engagement:
    assert len(engagements) == 1, engagements
    return engagements[0]


# ── SendGrid ─────────────────────────────────────────────────────────────────────────────────


def _key_pair(curve: ec.EllipticCurve | None = None) -> tuple[ec.EllipticCurvePrivateKey, str]:
    private = ec.generate_private_key(curve or ec.SECP256R1())
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, base64.b64encode(der).decode()


def sendgrid_sign(private: ec.EllipticCurvePrivateKey, timestamp: str, body: bytes) -> str:
    signature = private.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(signature).decode()


@pytest.fixture(scope="module")
def sendgrid_key() -> tuple[ec.EllipticCurvePrivateKey, str]:
    return _key_pair()


def test_sendgrid_verifies_the_example_of_sendgrids_own_library() -> None:
    # The vector of @sendgrid/eventwebhook's tests: a key, a payload and SendGrid's signature.
    sendgrid.verify(
        public_key="MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaWjcMMsTbhdbcw"
        "HBcepxo7yAQGhHPTnlvFYPAZFceEu/1FwCM/QmGUhA==",
        body=b'{"category":"example_payload","event":"test_event","message_id":"message_id"}',
        signature="MEUCIQCtIHJeH93Y+qpYeWrySphQgpNGNr/U+UyUlBkU6n7RAwIgJTz2C+8a8xonZGi6BpSzoQsbVRamr2"
        "nlxFDWYNH2j/0=",
        timestamp="1588788367",
        now=datetime.fromtimestamp(1588788367 + 30, UTC),
    )


@pytest.mark.parametrize("form", ["der", "pem"])
def test_sendgrid_accepts_a_signature_of_the_accounts_key(
    sendgrid_key: tuple[ec.EllipticCurvePrivateKey, str], form: str
) -> None:
    private, public = sendgrid_key
    if form == "pem":
        public = (
            private.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )
    body = b'[{"event":"delivered"}]'
    timestamp = str(TS - 60)
    sendgrid.verify(
        public_key=public,
        body=body,
        signature=sendgrid_sign(private, timestamp, body),
        timestamp=timestamp,
        now=NOW,
    )


@pytest.mark.parametrize(
    ("case", "field"),
    [
        ("another key", sendgrid.SIGNATURE_HEADER),
        ("tampered body", sendgrid.SIGNATURE_HEADER),
        ("timestamp changed after signing", sendgrid.SIGNATURE_HEADER),
        ("signature not base64", sendgrid.SIGNATURE_HEADER),
        ("stale", sendgrid.TIMESTAMP_HEADER),
        ("from the future", sendgrid.TIMESTAMP_HEADER),
        ("unsigned", sendgrid.SIGNATURE_HEADER),
        ("no timestamp", sendgrid.TIMESTAMP_HEADER),
    ],
)
def test_sendgrid_refuses_forged_tampered_stale_and_unsigned_bodies(
    sendgrid_key: tuple[ec.EllipticCurvePrivateKey, str], case: str, field: str
) -> None:
    private, public = sendgrid_key
    body = b'[{"event":"spamreport","email":"ana@example.com","timestamp":1}]'
    timestamp = str(TS - 10)
    signer = _key_pair()[0] if case == "another key" else private
    if case == "stale":
        timestamp = str(TS - 301)
    if case == "from the future":
        timestamp = str(TS + 301)
    signature: str | None = sendgrid_sign(signer, timestamp, body)
    if case == "tampered body":
        body = body.replace(b"spamreport", b"delivered")
    if case == "timestamp changed after signing":
        timestamp = str(TS - 5)
    if case == "signature not base64":
        signature = "not base64!"
    if case == "unsigned":
        signature = None
    with pytest.raises(WebhookAuthError) as refused:
        sendgrid.verify(
            public_key=public,
            body=body,
            signature=signature,
            timestamp=None if case == "no timestamp" else timestamp,
            now=NOW,
        )
    assert refused.value.field == field


@pytest.mark.parametrize("key", ["not a key", None])
def test_sendgrid_refuses_a_key_that_is_not_an_ecdsa_p256_key(key: str | None) -> None:
    # A P-384 key is a real key, but not the curve SendGrid signs with.
    public = key or _key_pair(ec.SECP384R1())[1]
    with pytest.raises(WebhookAuthError, match="webhook_public_key"):
        sendgrid.verify(public_key=public, body=b"[]", signature="AAAA", timestamp=str(TS), now=NOW)


def sendgrid_event(event: str, **fields: Any) -> dict[str, Any]:
    return {
        "email": "Ana@Example.com",
        "timestamp": TS - 120,
        "event": event,
        "sg_event_id": f"sg-{event}-{len(fields)}",
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
        "ciclo_message_id": "msg_1",
        "ciclo_workspace_id": "shop",
        **fields,
    }


def test_sendgrid_maps_every_event_of_a_batch() -> None:
    events = [
        sendgrid_event("processed"),
        sendgrid_event("deferred", attempt="3", response="400 try again later"),
        sendgrid_event("delivered", response="250 OK"),
        sendgrid_event("bounce", type="bounce", status="5.1.1", reason="550 no such user"),
        sendgrid_event("bounce", type="blocked", status="5.7.1", reason="blocked by policy", x=1),
        sendgrid_event("dropped", reason="Bounced Address"),
        sendgrid_event("open", sg_machine_open=True),
        sendgrid_event("click", url="https://shop.example/p/1"),
        sendgrid_event("spamreport"),
        sendgrid_event("unsubscribe"),
        sendgrid_event("group_unsubscribe", asm_group_id=42),
        sendgrid_event("group_resubscribe", asm_group_id=42),
    ]
    batch = sendgrid.parse(json.dumps(events).encode())
    assert batch.invalid == []
    parsed = batch.engagements
    assert [(e.type, e.properties.get("bounce")) for e in parsed] == [
        ("message_delivered", None),
        ("message_bounced", "hard"),
        ("message_bounced", "soft"),
        ("message_failed", None),
        ("message_opened", None),
        ("message_clicked", None),
        ("message_complained", None),
        ("message_unsubscribed", None),
        ("message_unsubscribed", None),
    ]
    first = parsed[0]
    assert (first.provider, first.message_id, first.workspace_id) == ("sendgrid", "msg_1", "shop")
    assert first.address == "Ana@Example.com"
    assert first.occurred_at == NOW - timedelta(seconds=120)
    assert first.provider_event_id == "sg-delivered-1"
    hard = parsed[1]
    assert hard.properties["error_code"] == "5.1.1"
    assert hard.properties["reason"] == "550 no such user"
    assert parsed[3].properties["reason"] == "Bounced Address"
    assert parsed[4].properties["machine_open"] is True
    assert parsed[5].properties["url"] == "https://shop.example/p/1"
    assert parsed[8].properties["group"] == "42"


def test_sendgrid_gives_an_event_without_an_id_a_stable_one() -> None:
    event = sendgrid_event("open")
    del event["sg_event_id"]
    body = json.dumps([event]).encode()
    first = only(sendgrid.parse(body).engagements).provider_event_id
    # The same event again, its keys in another order: the same id.
    again = only(sendgrid.parse(json.dumps([dict(reversed(event.items()))]).encode()).engagements)
    assert first == again.provider_event_id
    assert first.startswith("sha256:")
    other = only(sendgrid.parse(json.dumps([{**event, "timestamp": TS}]).encode()).engagements)
    assert other.provider_event_id != first


@pytest.mark.parametrize("body", [b"not json", b'{"event":"open"}'])
def test_sendgrid_refuses_a_body_that_is_not_an_array_of_events(body: bytes) -> None:
    with pytest.raises(WebhookFormatError) as raised:
        sendgrid.parse(body)
    assert raised.value.field == "body"


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ("open", "[1]"),
        ({"event": "click"}, "[1].timestamp"),
        ({"timestamp": 1}, "[1].event"),
        ({"event": "open", "timestamp": "yesterday"}, "[1].timestamp"),
        ({"event": "open", "timestamp": 1e300}, "[1].timestamp"),
    ],
)
def test_sendgrid_skips_a_malformed_event_and_names_it(event: Any, field: str) -> None:
    events = [sendgrid_event("delivered"), event, sendgrid_event("open")]
    batch = sendgrid.parse(json.dumps(events).encode())
    [invalid] = batch.invalid
    assert (invalid.index, invalid.field) == (1, field)
    assert invalid.message
    assert [e.type for e in batch.engagements] == ["message_delivered", "message_opened"]


# ── Mailgun ──────────────────────────────────────────────────────────────────────────────────

MAILGUN_KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"


def mailgun_body(
    event_data: dict[str, Any], *, timestamp: int = TS, key: str = MAILGUN_KEY
) -> bytes:
    token = hashlib.sha256(f"{timestamp}{json.dumps(event_data)}".encode()).hexdigest()[:50]
    signature = hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    block = {"timestamp": str(timestamp), "token": token, "signature": signature}
    return json.dumps({"signature": block, "event-data": event_data}).encode()


def mailgun_event(event: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": "CPgfbmQMTCKtHW6uIWtuVe",
        "timestamp": TS - 30.25,
        "event": event,
        "recipient": "ana@example.com",
        "user-variables": {"ciclo_message_id": "msg_1"},
        "message": {"headers": {"message-id": "20130503182626.18666.16540@mg.example.com"}},
        **fields,
    }


def mailgun_verify(body: bytes, *, key: str = MAILGUN_KEY, now: datetime = NOW) -> str:
    timestamp, token, signature = mailgun.signature_block(body)
    return mailgun.verify(
        signing_key=key, timestamp=timestamp, token=token, signature=signature, now=now
    )


def test_mailgun_accepts_its_signature_and_hands_back_the_token() -> None:
    body = mailgun_body(mailgun_event("delivered"))
    token = mailgun_verify(body)
    assert token == json.loads(body)["signature"]["token"]


@pytest.mark.parametrize("case", ["another key", "stale", "token changed", "unsigned", "no token"])
def test_mailgun_refuses_forged_stale_and_unsigned_bodies(case: str) -> None:
    body = mailgun_body(
        mailgun_event("complained"),
        key="another-signing-key" if case == "another key" else MAILGUN_KEY,
        timestamp=TS - 301 if case == "stale" else TS,
    )
    payload = json.loads(body)
    if case == "token changed":
        payload["signature"]["token"] = "f" * 50
    if case == "unsigned":
        del payload["signature"]
    if case == "no token":
        del payload["signature"]["token"]
    with pytest.raises(WebhookAuthError):
        mailgun_verify(json.dumps(payload).encode())


PERMANENT, TEMPORARY = {"severity": "permanent"}, {"severity": "temporary"}
SANDBOX = {"reason": "Sandbox subdomains are for test purposes only"}


@pytest.mark.parametrize(
    ("fields", "expected", "bounce"),
    [
        ({"event": "accepted"}, None, None),
        ({"event": "delivered"}, "message_delivered", None),
        ({"event": "failed", **PERMANENT, "reason": "bounce"}, "message_bounced", "hard"),
        ({"event": "failed", **PERMANENT, "reason": "suppress-bounce"}, "message_bounced", "hard"),
        ({"event": "failed", **TEMPORARY, "reason": "generic"}, "message_bounced", "soft"),
        ({"event": "failed", **PERMANENT, "reason": "old"}, "message_bounced", "soft"),
        (
            {"event": "failed", **PERMANENT, "reason": "suppress-unsubscribe"},
            "message_failed",
            None,
        ),
        ({"event": "rejected", "reject": SANDBOX}, "message_failed", None),
        ({"event": "opened"}, "message_opened", None),
        ({"event": "clicked", "url": "https://shop.example/sale"}, "message_clicked", None),
        ({"event": "complained"}, "message_complained", None),
        ({"event": "unsubscribed"}, "message_unsubscribed", None),
    ],
)
def test_mailgun_maps_every_event(
    fields: dict[str, Any], expected: EngagementType | None, bounce: str | None
) -> None:
    event = mailgun_event(fields.pop("event"), **fields)
    parsed = mailgun.parse(mailgun_body(event))
    if expected is None:
        assert parsed == []
        return
    engagement = only(parsed)
    assert (engagement.type, engagement.properties.get("bounce")) == (expected, bounce)
    assert (engagement.message_id, engagement.address) == ("msg_1", "ana@example.com")
    assert engagement.occurred_at == datetime.fromtimestamp(TS - 30.25, UTC)
    assert engagement.properties["provider_message_id"].endswith("@mg.example.com")
    if expected == "message_clicked":
        assert engagement.properties["url"] == "https://shop.example/sale"
    if event["event"] == "rejected":
        assert "Sandbox" in engagement.properties["reason"]


def test_mailgun_event_ids_hold_across_days_and_retries() -> None:
    # Mailgun's event id is unique within a day only: the id carries the event's time too.
    first = only(mailgun.parse(mailgun_body(mailgun_event("opened"))))
    retried = only(mailgun.parse(mailgun_body(mailgun_event("opened"), timestamp=TS + 60)))
    next_day = only(mailgun.parse(mailgun_body(mailgun_event("opened", timestamp=TS + 86400))))
    assert first.provider_event_id == retried.provider_event_id
    assert first.provider_event_id != next_day.provider_event_id


def test_mailgun_names_a_missing_field() -> None:
    with pytest.raises(WebhookPayloadError) as raised:
        mailgun.parse(mailgun_body({"event": "delivered"}))
    assert raised.value.field == "event-data.timestamp"
    with pytest.raises(WebhookPayloadError) as raised:
        mailgun.parse(json.dumps({"event-data": []}).encode())
    assert raised.value.field == "event-data"


# ── Postmark ─────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("header", "accepted"),
    [
        (postmark.basic_credentials("ciclo", "s3cret:with:colons"), True),
        (postmark.basic_credentials("ciclo", "wrong"), False),
        (postmark.basic_credentials("someone", "s3cret:with:colons"), False),
        ("Bearer " + base64.b64encode(b"ciclo:s3cret:with:colons").decode(), False),
        ("Basic not-base64!", False),
        (None, False),
    ],
)
def test_postmark_checks_the_basic_credentials(header: str | None, accepted: bool) -> None:
    def check() -> None:
        postmark.verify(username="ciclo", password="s3cret:with:colons", authorization=header)

    if accepted:
        check()
    else:
        with pytest.raises(WebhookAuthError):
            check()


def postmark_record(record_type: str, **fields: Any) -> bytes:
    return json.dumps(
        {
            "RecordType": record_type,
            "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
            "MessageStream": "outbound",
            "Recipient": "ana@example.com",
            "Metadata": {"ciclo_message_id": "msg_1"},
            **fields,
        }
    ).encode()


def _bounce(type_name: str, code: int, *, inactive: bool = False) -> bytes:
    return postmark_record(
        "Bounce",
        ID=4323372036854775807,
        Type=type_name,
        TypeCode=code,
        Email="ana@example.com",
        BouncedAt="2026-11-23T08:58:00.9070259Z",
        Description="The server was unable to deliver your message",
        Inactive=inactive,
    )


AT = "2026-11-23T08:58:00Z"
COMPLAINT = {"ID": 42, "Type": "SpamComplaint", "TypeCode": 100001, "Email": "ana@example.com"}


def _change(suppress: bool, reason: str | None = None) -> bytes:
    fields = {"SuppressSending": suppress, "SuppressionReason": reason, "Origin": "Recipient"}
    return postmark_record("SubscriptionChange", ChangedAt=AT, **fields)


@pytest.mark.parametrize(
    ("body", "expected", "bounce"),
    [
        (postmark_record("Delivery", DeliveredAt=AT, Details="250 OK"), "message_delivered", None),
        (_bounce("HardBounce", 1), "message_bounced", "hard"),
        (_bounce("BadEmailAddress", 100000), "message_bounced", "hard"),
        (_bounce("SoftBounce", 4096), "message_bounced", "soft"),
        (_bounce("Transient", 2), "message_bounced", "soft"),
        (_bounce("DnsError", 256, inactive=True), "message_bounced", "hard"),
        (_bounce("SpamComplaint", 100001), "message_complained", None),
        (_bounce("Unsubscribe", 16), "message_unsubscribed", None),
        (_bounce("AutoResponder", 64), None, None),
        (_bounce("ManuallyDeactivated", 100002), "message_failed", None),
        (postmark_record("SpamComplaint", BouncedAt=AT, **COMPLAINT), "message_complained", None),
        (postmark_record("Open", ReceivedAt=AT, FirstOpen=True), "message_opened", None),
        (
            postmark_record("Click", ReceivedAt=AT, OriginalLink="https://a"),
            "message_clicked",
            None,
        ),
        (_change(True, "ManualSuppression"), "message_unsubscribed", None),
        (_change(True, "HardBounce"), None, None),
        (_change(False), None, None),
        (postmark_record("Inbound"), None, None),
    ],
)
def test_postmark_maps_every_record_type(
    body: bytes, expected: EngagementType | None, bounce: str | None
) -> None:
    parsed = postmark.parse(body)
    if expected is None:
        assert parsed == []
        return
    engagement = only(parsed)
    assert (engagement.type, engagement.properties.get("bounce")) == (expected, bounce)
    assert (engagement.message_id, engagement.address) == ("msg_1", "ana@example.com")
    assert engagement.occurred_at.tzinfo is UTC


def test_postmark_ids_and_times() -> None:
    bounce = only(postmark.parse(_bounce("HardBounce", 1)))
    assert bounce.provider_event_id == "Bounce:4323372036854775807"
    assert bounce.occurred_at == datetime(2026, 11, 23, 8, 58, 0, 907025, tzinfo=UTC)
    assert bounce.properties["error_code"] == "1"
    click = postmark_record(
        "Click", ReceivedAt="2026-11-23T09:58:00+01:00", OriginalLink="https://a"
    )
    other = postmark_record(
        "Click", ReceivedAt="2026-11-23T09:58:00+01:00", OriginalLink="https://b"
    )
    first, second = only(postmark.parse(click)), only(postmark.parse(other))
    assert first.occurred_at == datetime(2026, 11, 23, 8, 58, tzinfo=UTC)
    assert first.properties["url"] == "https://a"
    assert first.provider_event_id != second.provider_event_id
    assert first.provider_event_id == only(postmark.parse(click)).provider_event_id


def test_postmark_names_a_bad_time() -> None:
    with pytest.raises(WebhookPayloadError) as raised:
        postmark.parse(postmark_record("Open", ReceivedAt="2026-11-23T08:58:00"))
    assert raised.value.field == "ReceivedAt"
    with pytest.raises(WebhookPayloadError) as raised:
        postmark.parse(b'{"MessageID": "x"}')
    assert raised.value.field == "RecordType"


# ── Twilio ───────────────────────────────────────────────────────────────────────────────────

TWILIO_TOKEN = "9f8e7d6c5b4a39281706f5e4d3c2b1a0"
TWILIO_URL = (
    "https://ciclo.example.com/v1/webhooks/providers/twilio/shop"
    "?ciclo_message_id=msg_1&ciclo_workspace_id=shop"
)


def twilio_signature(url: str, params: list[tuple[str, str]], token: str = TWILIO_TOKEN) -> str:
    """Twilio's algorithm written out independently of the code under test."""
    data = url + "".join(k + v for k, v in sorted(params))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


def callback(status: str, error_code: str | None = None) -> list[tuple[str, str]]:
    params = [
        ("AccountSid", "AC" + "0" * 32),
        ("MessageSid", "SM" + "1" * 32),
        ("SmsSid", "SM" + "1" * 32),
        ("MessageStatus", status),
        ("SmsStatus", status),
        ("From", "+15017122661"),
        ("To", "+4915123456789"),
        ("ApiVersion", "2010-04-01"),
    ]
    if error_code:
        params.append(("ErrorCode", error_code))
    return params


def test_twilio_signs_like_twilios_own_validator() -> None:
    # The vectors of twilio-python's request validator tests (auth token "12345").
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = [
        ("CallSid", "CA1234567890ABCDE"),
        ("Digits", "1234"),
        ("From", "+14158675309"),
        ("To", "+18005551212"),
        ("Caller", "+14158675309"),
    ]
    assert twilio.sign("12345", url, params) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    repeated = [("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"), ("Digits", "1234")]
    assert twilio.sign("12345", url, repeated) == "IK+Dwps556ElfBT0I3Rgjkr1wJU="
    # Signed with the default port, or without a port the URL was called with: both accepted.
    twilio.verify(
        auth_token="12345", urls=[url], params=params, signature="kvajT1Ptam85bY51eRf/AJRuM3w="
    )
    called_with_port = url.replace(".com", ".com:1234")
    signature = "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    twilio.verify(auth_token="12345", urls=[called_with_port], params=params, signature=signature)


def test_twilio_accepts_its_signature_of_a_status_callback() -> None:
    params = callback("delivered")
    twilio.verify(
        auth_token=TWILIO_TOKEN,
        urls=[TWILIO_URL],
        params=params,
        signature=twilio_signature(TWILIO_URL, params),
    )


@pytest.mark.parametrize(
    "case", ["another token", "status changed", "param added", "other message", "unsigned"]
)
def test_twilio_refuses_forged_and_tampered_callbacks(case: str) -> None:
    params = callback("undelivered", "30003")
    token = "0" * 32 if case == "another token" else TWILIO_TOKEN
    signature: str | None = twilio_signature(TWILIO_URL, params, token)
    url = TWILIO_URL
    if case == "status changed":
        params = callback("delivered")
    if case == "param added":
        params = [*params, ("ErrorMessage", "x")]
    if case == "other message":
        url = TWILIO_URL.replace("msg_1", "msg_2")
    if case == "unsigned":
        signature = None
    with pytest.raises(WebhookAuthError):
        twilio.verify(auth_token=TWILIO_TOKEN, urls=[url], params=params, signature=signature)


@pytest.mark.parametrize(
    ("status", "code", "expected", "bounce"),
    [
        ("queued", None, None, None),
        ("sent", None, None, None),
        ("delivered", None, "message_delivered", None),
        ("read", None, "message_opened", None),
        ("undelivered", "30003", "message_failed", None),
        ("failed", "30008", "message_failed", None),
        ("undelivered", "30005", "message_bounced", "hard"),
        ("undelivered", "30006", "message_bounced", "hard"),
        ("failed", "21211", "message_bounced", "hard"),
        ("failed", "21610", "message_unsubscribed", None),
    ],
)
def test_twilio_maps_every_status(
    status: str, code: str | None, expected: EngagementType | None, bounce: str | None
) -> None:
    body = urlencode(callback(status, code)).encode()
    parsed = twilio.parse(body, url=TWILIO_URL, received_at=NOW)
    if expected is None:
        assert parsed == []
        return
    engagement = only(parsed)
    assert (engagement.type, engagement.properties.get("bounce")) == (expected, bounce)
    assert (engagement.message_id, engagement.address) == ("msg_1", "+4915123456789")
    assert engagement.workspace_id == "shop"
    assert engagement.provider_event_id == f"SM{'1' * 32}:{status}"
    assert engagement.occurred_at == NOW
    assert engagement.properties.get("error_code") == code


def test_twilio_names_a_missing_field() -> None:
    with pytest.raises(WebhookPayloadError) as raised:
        twilio.parse(b"MessageStatus=delivered", url=TWILIO_URL, received_at=NOW)
    assert raised.value.field == "MessageSid"
    with pytest.raises(WebhookFormatError):
        twilio.parse(b"\xff\xfe", url=TWILIO_URL, received_at=NOW)


# ── Vonage ───────────────────────────────────────────────────────────────────────────────────

VONAGE_SECRET = "q7Vw2pZr9sLk4mXb8nTc3yHd6fGj1aEu"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def vonage_jwt(
    body: bytes,
    *,
    secret: str = VONAGE_SECRET,
    iat: int = TS - 5,
    alg: str = "HS256",
    **claims: Any,
) -> str:
    header = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    payload = b64url(
        json.dumps(
            {
                "iat": iat,
                "jti": "f7e5a0b8-5c8e-4a2c-9a49-2a3f6f1d3b0e",
                "iss": "Vonage",
                "payload_hash": hashlib.sha256(body).hexdigest(),
                "api_key": "a1b2c3d4",
                "application_id": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
                **claims,
            }
        ).encode()
    )
    signing_input = f"{header}.{payload}".encode()
    signature = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(signature)}"


def vonage_status(status: str, **fields: Any) -> bytes:
    return json.dumps(
        {
            "message_uuid": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
            "to": "4915123456789",
            "from": "Shop",
            "timestamp": "2026-11-23T08:59:58.010Z",
            "status": status,
            "channel": "sms",
            "client_ref": "msg_1",
            **fields,
        }
    ).encode()


def test_vonage_accepts_its_signed_jwt() -> None:
    body = vonage_status("delivered")
    claims = vonage.verify(
        signature_secret=VONAGE_SECRET,
        body=body,
        authorization="Bearer " + vonage_jwt(body),
        now=NOW,
    )
    assert claims["iss"] == "Vonage"


@pytest.mark.parametrize(
    "case",
    [
        "another secret",
        "tampered body",
        "stale",
        "expired",
        "alg none",
        "no hash",
        "unsigned",
        "not a jwt",
    ],
)
def test_vonage_refuses_forged_tampered_and_stale_jwts(case: str) -> None:
    body = vonage_status("rejected")
    token = vonage_jwt(
        body,
        secret="another-secret" if case == "another secret" else VONAGE_SECRET,
        iat=TS - 301 if case == "stale" else TS - 5,
        alg="none" if case == "alg none" else "HS256",
        **({"exp": TS - 1} if case == "expired" else {}),
        **({"payload_hash": None} if case == "no hash" else {}),
    )
    authorization: str | None = "Bearer " + token
    if case == "tampered body":
        body = vonage_status("delivered")
    if case == "unsigned":
        authorization = None
    if case == "not a jwt":
        authorization = "Bearer abc.def"
    with pytest.raises(WebhookAuthError):
        vonage.verify(
            signature_secret=VONAGE_SECRET, body=body, authorization=authorization, now=NOW
        )


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("submitted", None),
        ("delivered", "message_delivered"),
        ("read", "message_opened"),
        ("rejected", "message_failed"),
        ("undeliverable", "message_failed"),
        ("failed", "message_failed"),
    ],
)
def test_vonage_maps_every_status(status: str, expected: EngagementType | None) -> None:
    error = {
        "type": "https://developer.nexmo.com/api-errors/messages-olympus#1260",
        "title": 1260,
        "detail": "Invalid number",
    }
    parsed = vonage.parse(vonage_status(status, error=error))
    if expected is None:
        assert parsed == []
        return
    engagement = only(parsed)
    assert engagement.type == expected
    assert (engagement.message_id, engagement.address) == ("msg_1", "+4915123456789")
    assert engagement.occurred_at == datetime(2026, 11, 23, 8, 59, 58, 10000, tzinfo=UTC)
    assert engagement.provider_event_id == f"aaaaaaaa-bbbb-cccc-dddd-0123456789ab:{status}"
    assert engagement.properties["error_code"] == "1260"
    assert engagement.properties["description"] == "Invalid number"


# ── Registry and model ───────────────────────────────────────────────────────────────────────


def test_the_engagement_types_are_the_events_dispatch_announces() -> None:
    assert set(get_args(EngagementType)) == set(ENGAGEMENT)


def test_a_workspace_without_the_webhook_secret_is_refused() -> None:
    request = WebhookRequest(body=b"[]", headers={}, url="https://ciclo.example.com/x")
    configs: list[ProviderConfig] = [
        SendGridConfig(api_key="SG.x"),
        MailgunConfig(api_key="key", domain="mg.example.com"),
        PostmarkConfig(server_token="t", webhook_username="ciclo"),
        VonageConfig(api_key="k", api_secret="s", from_number="Shop"),
    ]
    for config in configs:
        with pytest.raises(WebhookAuthError, match="configuration has no"):
            registry.authenticate(config, request, now=NOW)


def test_mailgun_through_the_registry_returns_its_token_to_record() -> None:
    body = mailgun_body(mailgun_event("opened"))
    config = MailgunConfig(api_key="key", domain="mg.example.com", webhook_signing_key=MAILGUN_KEY)
    nonce = registry.authenticate(config, WebhookRequest(body, {}, "https://c/x"), now=NOW)
    assert nonce == registry.Nonce("mailgun-token", json.loads(body)["signature"]["token"])


def test_twilio_behind_a_proxy_matches_the_configured_status_callback() -> None:
    # Ciclo saw an internal URL; Twilio signed the public one, which the configuration names.
    params = callback("delivered")
    public = "https://ciclo.example.com/v1/webhooks/providers/twilio/shop"
    signature = twilio_signature(f"{public}?ciclo_message_id=msg_1", params)
    internal = "http://10.1.2.3:8000/v1/webhooks/providers/twilio/shop?ciclo_message_id=msg_1"
    request = WebhookRequest(
        body=urlencode(params).encode(),
        headers={"x-twilio-signature": signature},
        url=internal,
    )
    config = TwilioConfig(
        account_sid="AC" + "0" * 32, auth_token=TWILIO_TOKEN, from_number="+15005550006"
    )
    with pytest.raises(WebhookAuthError):
        registry.authenticate(config, request, now=NOW)
    configured = config.model_copy(update={"status_callback": public})
    assert registry.authenticate(configured, request, now=NOW) is None
    engagement = only(registry.parse("twilio", request, received_at=NOW).engagements)
    assert engagement.message_id == "msg_1"


def test_engagement_ids_suppression_and_consent() -> None:
    def engagement(kind: EngagementType, provider: str = "sendgrid", **props: Any) -> Engagement:
        return Engagement(provider, "ev-1", kind, "msg_1", "ana@example.com", NOW, props)

    assert engagement("message_opened").event_id == engagement("message_clicked").event_id
    assert engagement("message_opened").event_id != engagement("message_opened", "mailgun").event_id
    assert engagement("message_bounced", bounce="hard").suppression == "hard_bounce"
    assert engagement("message_bounced", bounce="soft").suppression is None
    assert engagement("message_complained").suppression == "complaint"
    assert engagement("message_unsubscribed").suppression == "unsubscribe"
    assert engagement("message_failed").suppression is None
    assert engagement("message_unsubscribed").revokes_marketing
    assert engagement("message_complained").revokes_marketing
    assert not engagement("message_bounced", bounce="hard").revokes_marketing
    long = Engagement("postmark", "x" * 300, "message_opened", None, None, NOW)
    assert len(long.dedupe_key) <= 200
    assert (
        long.dedupe_key
        == Engagement("postmark", "x" * 300, "message_opened", None, None, NOW).dedupe_key
    )
