"""Countries, currencies and time zones: validated against real registries."""

from __future__ import annotations

from functools import lru_cache
from zoneinfo import available_timezones

from babel import Locale
from babel.numbers import list_currencies

# Babel's territory list also holds regions and groupings that are not countries.
_NOT_COUNTRIES = frozenset({"EU", "EZ", "UN", "QO", "ZZ", "XA", "XB"})


@lru_cache(maxsize=1)
def _countries() -> dict[str, str]:
    territories = Locale("en").territories
    return {
        code: name
        for code, name in territories.items()
        if len(code) == 2 and code.isalpha() and code.isupper() and code not in _NOT_COUNTRIES
    }


def is_country(code: str) -> bool:
    return code in _countries()


def country_name(code: str) -> str:
    return _countries().get(code, code)


# ISO 4217 codes for metals, funds and testing: not something a tenant is billed in.
_NOT_MONEY = frozenset(
    {"XXX", "XTS", "XAU", "XAG", "XPT", "XPD", "XDR", "XSU", "XUA", "XBA", "XBB", "XBC", "XBD"}
)


@lru_cache(maxsize=1)
def _currencies() -> frozenset[str]:
    return frozenset(
        c
        for c in list_currencies()
        if len(c) == 3 and c.isalpha() and c.isupper() and c not in _NOT_MONEY
    )


def is_currency(code: str) -> bool:
    return code in _currencies()


@lru_cache(maxsize=1)
def _timezones() -> frozenset[str]:
    return frozenset(available_timezones())


def is_timezone(name: str) -> bool:
    return name in _timezones()
