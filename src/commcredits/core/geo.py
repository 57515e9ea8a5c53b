"""Countries, currencies and time zones: validated against real registries."""

from __future__ import annotations

from functools import lru_cache
from zoneinfo import available_timezones

from babel import Locale
from babel.numbers import list_currencies

# Babel's (CLDR's) territory list also holds groupings (EU, EZ, UN, QO), unknown
# and pseudo regions (ZZ, XA, XB), and codes that ISO 3166-1 only reserves or
# that are user-assigned: Kosovo (XK), Ascension (AC), Clipperton (CP), Sark
# (CQ), Diego Garcia (DG), Ceuta and Melilla (EA), the Canary Islands (IC) and
# Tristan da Cunha (TA). What is left is ISO 3166-1 alpha-2 exactly: 249 codes.
_NOT_COUNTRIES = frozenset(
    {"EU", "EZ", "UN", "QO", "ZZ", "XA", "XB", "XK", "AC", "CP", "CQ", "DG", "EA", "IC", "TA"}
)


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


# Names the system's zone database may list that are not time zones: "localtime"
# is a link to whatever the machine is set to, "Factory" a placeholder with the
# abbreviation "-00".
_NOT_TIMEZONES = frozenset({"localtime", "Factory"})


@lru_cache(maxsize=1)
def _timezones() -> frozenset[str]:
    return frozenset(available_timezones()) - _NOT_TIMEZONES


def is_timezone(name: str) -> bool:
    return name in _timezones()
