"""Identifiers and formats checked with a regular expression must match the whole value: with
``re.match`` and a pattern ending in ``$``, a value with a trailing newline passed (``$`` also
matches before a final newline), and was stored or used as it was."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.dispatch.domain.policy import QuietHours
from services.dispatch.domain.providers import TwilioConfig, VonageConfig
from services.dispatch.domain.templates import is_template_id
from shared.tenancy.keys import WORKSPACE_RE, looks_like_key

KEY = "ciclo_ingest_" + "a" * 40
TWILIO = {"account_sid": "AC" + "0" * 32, "auth_token": "t" * 32}


@pytest.mark.parametrize("suffix", ["", "\n"])
def test_a_trailing_newline_is_not_part_of_any_identifier(suffix: str) -> None:
    whole = suffix == ""
    assert is_template_id("welcome" + suffix) is whole
    assert looks_like_key(KEY + suffix) is whole
    assert (WORKSPACE_RE.fullmatch("demo" + suffix) is not None) is whole


def test_quiet_hours_refuse_a_trailing_newline() -> None:
    assert QuietHours(start="21:00", end="08:00").bounds()
    with pytest.raises(ValidationError, match="HH:MM"):
        QuietHours(start="21:00\n", end="08:00")


@pytest.mark.parametrize(
    ("config", "field"),
    [
        (TwilioConfig(**TWILIO, from_number="+14155550100\n"), "from_number"),
        (TwilioConfig(**TWILIO, from_number="+14155550100", base_url="https://x.io\n"), "base_url"),
        (VonageConfig(api_key="k", api_secret="s", from_number="Shop\n"), "from_number"),
        (VonageConfig(api_key="k", api_secret="s", from_number="14155550100\n"), "from_number"),
    ],
)
def test_a_provider_value_with_a_trailing_newline_is_a_problem(config: object, field: str) -> None:
    assert field in [name for name, _ in config.problems()]  # type: ignore[attr-defined]
