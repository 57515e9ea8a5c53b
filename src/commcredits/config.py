"""Configuration, read once from the environment (API.md "Running")."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

DEFAULT_SQLITE_PATH = Path("data") / "commcredits.db"
DEFAULT_GRANT_SECONDS = 300
DEFAULT_MAX_PURCHASE = Decimal("1000000")
MIN_PURCHASE = Decimal("50")


def sqlalchemy_url(url: str) -> str:
    """Map the user-facing URL onto the driver we ship (psycopg 3 for PostgreSQL)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


@dataclass(frozen=True)
class Settings:
    database_url: str
    operator_token: str
    smtp_url: str | None = None
    # PEM file of the CA(s) the SMTP server's certificate must chain to; unset:
    # the system's (which honours SSL_CERT_FILE).
    smtp_ca_file: str | None = None
    mail_from: str = "commcredits@localhost"
    payment_provider: str = "simulated"
    stripe_api_key: str | None = None
    stripe_api_base: str | None = None
    stripe_timeout_seconds: float = 20.0
    grant_seconds: int = DEFAULT_GRANT_SECONDS
    max_purchase: Decimal = DEFAULT_MAX_PURCHASE
    public_url: str = "http://127.0.0.1:8000"
    background_workers: bool = True
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @staticmethod
    def from_env(environ: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        database_url = env.get("COMMCREDITS_DATABASE_URL") or f"sqlite:///{DEFAULT_SQLITE_PATH}"
        return Settings(
            database_url=sqlalchemy_url(database_url),
            # Without a configured token the operator API is unreachable, not open:
            # a random token nobody knows.
            operator_token=env.get("COMMCREDITS_OPERATOR_TOKEN") or secrets.token_urlsafe(32),
            smtp_url=env.get("COMMCREDITS_SMTP_URL") or None,
            smtp_ca_file=env.get("COMMCREDITS_SMTP_CA_FILE") or None,
            mail_from=env.get("COMMCREDITS_MAIL_FROM") or "commcredits@localhost",
            payment_provider=env.get("COMMCREDITS_PAYMENT_PROVIDER") or "simulated",
            stripe_api_key=env.get("STRIPE_API_KEY") or None,
            stripe_api_base=env.get("STRIPE_API_BASE") or None,
            stripe_timeout_seconds=float(env.get("COMMCREDITS_STRIPE_TIMEOUT_SECONDS") or 20.0),
            grant_seconds=int(env.get("COMMCREDITS_GRANT_SECONDS") or DEFAULT_GRANT_SECONDS),
            max_purchase=Decimal(env.get("COMMCREDITS_MAX_PURCHASE") or DEFAULT_MAX_PURCHASE),
            public_url=env.get("COMMCREDITS_PUBLIC_URL") or "http://127.0.0.1:8000",
            background_workers=(env.get("COMMCREDITS_BACKGROUND_WORKERS", "1") != "0"),
        )
