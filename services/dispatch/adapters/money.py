"""The ``money`` Liquid filter: an amount with its currency, as a customer reads it.

``{{ item.price | money: event.properties.currency }}`` gives ``€12.50`` for ``"12.5"`` in EUR,
``$12.50`` in USD, ``¥1,200`` in JPY (a currency without minor units shows none);
``{{ total | money: "EUR", "de_DE" }}`` gives ``12,50 €``. The locale (a CLDR identifier such as
``en_US``, ``de_DE``, ``fr``) decides the symbol's place and the separators; ``en_US`` when none is
given. The digits are the currency's (ISO 4217 minor units), rounded half to even as Babel does.

Money travels as decimal strings (``"59.90"``), never floats. An amount that is no number, a
currency that is not an ISO 4217 code, or a locale Babel does not know fails the render: a price
printed wrong is worse than a message not sent. Babel is python-liquid's own dependency (its
optional currency filters use it) and carries CLDR's data for every currency and locale, so
nothing new is installed; its formatting is not reimplemented here.
"""

from __future__ import annotations

import functools
from decimal import Decimal, InvalidOperation

from babel import Locale, UnknownLocaleError
from babel.numbers import format_currency
from liquid import Undefined
from liquid.exceptions import FilterArgumentError

from shared.contracts.currencies import ISO_4217, is_decimal_text

DEFAULT_LOCALE = "en_US"


def money(value: object, currency: object = None, locale: object = DEFAULT_LOCALE) -> str:
    """The amount ``value`` in ``currency`` (ISO 4217, e.g. ``"EUR"``), formatted for
    ``locale``."""
    amount = _amount(value)
    code = _currency(currency)
    return format_currency(amount, code, locale=_locale(locale))


def _given(value: object) -> object:
    if isinstance(value, Undefined):
        str(value)  # a strict undefined raises, naming the variable
    return value


def _amount(value: object) -> Decimal:
    value = _given(value)
    if isinstance(value, float):
        text = repr(value)
    elif isinstance(value, str | int | Decimal) and not isinstance(value, bool):
        text = str(value).strip()
    else:
        text = ""
    if not is_decimal_text(text):
        raise FilterArgumentError(
            f'money: {value!r} is not an amount (write it as a decimal, e.g. "12.50")',
            token=None,
        )
    try:
        return Decimal(text)
    except InvalidOperation:  # pragma: no cover - is_decimal_text admits only decimals
        raise FilterArgumentError(f"money: {value!r} is not an amount", token=None) from None


def _currency(currency: object) -> str:
    currency = _given(currency)
    if not isinstance(currency, str) or currency.upper() not in ISO_4217:
        raise FilterArgumentError(
            f'money: give the currency as an ISO 4217 code ({{{{ price | money: "EUR" }}}}), '
            f"not {currency!r}",
            token=None,
        )
    return currency.upper()


def _locale(locale: object) -> Locale:
    locale = _given(locale)
    if not isinstance(locale, str):
        raise FilterArgumentError(f"money: {locale!r} is not a locale", token=None)
    return _parsed_locale(locale)


@functools.lru_cache(maxsize=256)
def _parsed_locale(locale: str) -> Locale:
    try:
        return Locale.parse(locale.replace("-", "_"))
    except (ValueError, TypeError, UnknownLocaleError):
        raise FilterArgumentError(
            f"money: {locale!r} is not a locale (use e.g. en_US, de_DE, fr)", token=None
        ) from None
