"""Payment test doubles shared by the funding tests: a recorder around the
app's real provider, and an app whose provider is Stripe at a local fake."""

from __future__ import annotations

from typing import Any

from commcredits.api.app import create_app
from tests.conftest import fresh_database_url, make_settings


class CountingProvider:
    """The app's own provider, with every charge it is asked for recorded."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.charge_keys: list[str] = []

    def store_card(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.store_card(*args, **kwargs)

    def charge(self, *args: Any, **kwargs: Any) -> Any:
        self.charge_keys.append(kwargs["idempotency_key"])
        return self.inner.charge(*args, **kwargs)


def stripe_backed_app(backend: str, pg_cluster: Any, api_key: str, api_base: str) -> Any:
    """A fresh database of `backend` and an app paying through Stripe at `api_base`."""
    return create_app(
        make_settings(
            fresh_database_url(backend, pg_cluster),
            COMMCREDITS_PAYMENT_PROVIDER="stripe",
            STRIPE_API_KEY=api_key,
            STRIPE_API_BASE=api_base,
        )
    )
