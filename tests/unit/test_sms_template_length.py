"""How long an SMS template may render: a draft being saved against the strictest SMS provider,
a saved version or a file at send against the most any provider takes."""

from __future__ import annotations

import pytest

from services.dispatch.adapters.providers.registry import SMS_TEXT_LIMITS
from services.dispatch.adapters.templates import SMS_LONGEST, SMS_STRICTEST, compile_template
from services.dispatch.domain.template_errors import RenderFailed


def test_the_limits_are_the_providers_own() -> None:
    assert SMS_TEXT_LIMITS == {"twilio": 1600, "vonage": 1000}
    assert (SMS_STRICTEST, SMS_LONGEST) == (("vonage", 1000), ("twilio", 1600))


def test_a_draft_must_fit_the_strictest_provider() -> None:
    draft = compile_template("promo", "sms", {"sms": "a" * 1000}, version=0)
    assert draft.draft
    assert draft.render({}).text == "a" * 1000
    over = compile_template("promo", "sms", {"sms": "a" * 1001}, version=0)
    with pytest.raises(RenderFailed) as caught:
        over.render({})
    assert caught.value.part == "sms"
    assert caught.value.problem.startswith(
        "renders 1001 characters (GSM-7, 7 segments) with the sample; Vonage takes at most "
        "1000 characters (SMS providers' limits: Twilio 1600, Vonage 1000)"
    )


@pytest.mark.parametrize(
    ("version", "from_file"), [(3, False), (0, True)], ids=["saved version", "file"]
)
def test_a_message_must_fit_the_most_any_provider_takes(version: int, from_file: bool) -> None:
    """What it renders at send goes to one provider, which checks its own limit: here only
    what no provider would take fails."""
    fits = compile_template(
        "promo", "sms", {"sms": "a" * 1600}, version=version, from_file=from_file
    )
    assert not fits.draft
    assert fits.render({}).text == "a" * 1600
    over = compile_template(
        "promo", "sms", {"sms": "a" * 1599 + "\U0001f600"}, version=version, from_file=from_file
    )
    with pytest.raises(RenderFailed, match="sms: renders 1601 characters") as caught:
        over.render({})
    assert caught.value.problem == (
        "renders 1601 characters (UCS-2, 24 segments); no SMS provider takes more than 1600 "
        "characters (Twilio's limit): shorten it"
    )


def test_a_preview_shows_what_a_draft_renders_however_long() -> None:
    draft = compile_template("promo", "sms", {"sms": "a" * 2000}, version=0)
    assert draft.render_parts({}) == {"sms": "a" * 2000}
