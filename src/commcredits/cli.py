"""The `commcredits` command: serve, migrate, demo, verify-ledger."""

from __future__ import annotations

import os
import secrets
import sys

import typer
from rich.console import Console

from commcredits.config import Settings

app = typer.Typer(
    add_completion=False, help="Prepaid credits and online charging for PSTN minutes."
)
console = Console(soft_wrap=True)


def _check_mail_settings(settings: Settings) -> None:
    """Refuse to start with SMTP settings no mail could go out with: the
    worker would otherwise fail every pass and only log it."""
    from commcredits.adapters.mail import check_mail_settings

    if not settings.smtp_url:
        return
    try:
        check_mail_settings(settings.smtp_url, settings.mail_from, settings.smtp_ca_file)
    except ValueError as exc:
        Console(stderr=True, soft_wrap=True).print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on"),
    port: int = typer.Option(8000, help="Port to listen on"),
    workers: int = typer.Option(
        1, min=1, max=64, help="Server processes (for PostgreSQL; SQLite has one writer)"
    ),
) -> None:
    """Serve the API and the admin center (migrates the database first)."""
    import uvicorn

    from commcredits.api.app import create_app

    settings = Settings.from_env()
    _check_mail_settings(settings)
    if not os.environ.get("COMMCREDITS_OPERATOR_TOKEN"):
        console.print(
            "[yellow]COMMCREDITS_OPERATOR_TOKEN is not set: the operator API is locked "
            "with a random token nobody knows.[/yellow]"
        )
        # Every worker process must lock it with the same token.
        os.environ["COMMCREDITS_OPERATOR_TOKEN"] = settings.operator_token
    if workers > 1:
        # Each process builds its own app (engine, caches, background workers);
        # the background jobs are claimed in the database, so they run once.
        # Migrate once here, before the processes start side by side.
        from commcredits.store.db import make_engine
        from commcredits.store.migrate import upgrade

        upgrade(make_engine(settings.database_url))
        uvicorn.run(
            "commcredits.api.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level="warning",
            access_log=False,
        )
        return
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning", access_log=False)


@app.command()
def migrate() -> None:
    """Bring the database schema to the newest revision."""
    from commcredits.store.db import make_engine
    from commcredits.store.migrate import upgrade

    settings = Settings.from_env()
    upgrade(make_engine(settings.database_url))
    console.print("database is at the newest revision")


@app.command()
def demo(
    host: str = typer.Option("127.0.0.1", help="Address to listen on"),
    port: int = typer.Option(8000, help="Port to listen on"),
    serve_it: bool = typer.Option(True, "--serve/--no-serve", help="Serve after seeding"),
) -> None:
    """Create the embedded database with the sample catalog and a demo tenant, then serve."""
    import uvicorn

    from commcredits.api.app import create_app
    from commcredits.services.demo import seed

    token = os.environ.get("COMMCREDITS_OPERATOR_TOKEN") or "op_" + secrets.token_urlsafe(24)
    os.environ["COMMCREDITS_OPERATOR_TOKEN"] = token
    settings = Settings.from_env()
    _check_mail_settings(settings)
    application = create_app(settings)
    result = seed(application.state.ctx)
    url = f"http://{host}:{port}"
    console.print(f"[bold]commcredits demo[/bold] at {url}  (admin center: {url}/)")
    console.print(f"database: {settings.database_url}")
    console.print(f"operator token: {token}")
    console.print(f"billing admin token: {result['billing_admin_token']}")
    console.print(f"demo tenant: {result['tenant_id']}")
    console.print("For the README's examples, paste:")
    print(f"export CC={url}")
    print(f"export OP={token}")
    print(f"export BILLING={result['billing_admin_token']}")
    print(f"export ADMIN={result['global_admin_token']}")
    print(f"export CHARGING={result['charging_token']}")
    sys.stdout.flush()
    if serve_it:
        uvicorn.run(application, host=host, port=port, log_level="warning", access_log=False)


@app.command("mail-worker")
def mail_worker(
    poll_seconds: float = typer.Option(1.0, help="Seconds between looks for due mails when idle"),
    once: bool = typer.Option(False, "--once", help="Send what is due, then exit"),
) -> None:
    """Send pending notification mails by SMTP (`serve` does it too when
    COMMCREDITS_SMTP_URL is set); several may run on one database."""
    import signal
    import threading

    from commcredits.services import notify
    from commcredits.services.workers import Worker, Workers
    from commcredits.store.db import make_engine

    settings = Settings.from_env()
    if not settings.smtp_url:
        console.print("[red]COMMCREDITS_SMTP_URL is not set: mails stay in the outbox[/red]")
        raise typer.Exit(2)
    _check_mail_settings(settings)
    target = notify.smtp_target(settings)
    engine = make_engine(settings.database_url)
    if once:
        total = 0
        while done := notify.deliver_pending(engine, settings):
            total += done
        console.print(f"worked on {total} deliveries")
        engine.dispose()
        return
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    workers = Workers(
        [
            Worker(
                "mail", lambda: notify.deliver_pending(engine, settings), poll_seconds=poll_seconds
            )
        ]
    )
    workers.start()
    console.print(f"mail worker: {target.host}:{target.port} ({target.security})")
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        workers.stop()
        engine.dispose()


@app.command("verify-ledger")
def verify_ledger_command() -> None:
    """Recompute every balance from the ledger; exit 1 on any difference."""
    from commcredits.services.verify import verify_ledger
    from commcredits.store.db import make_engine

    settings = Settings.from_env()
    report = verify_ledger(make_engine(settings.database_url))
    for problem in report.problems:
        console.print(f"[red]{problem}[/red]")
    console.print(
        f"checked {report.tenants_checked} tenants, {report.transactions_checked} ledger lines: "
        + ("[green]ok[/green]" if report.ok else f"[red]{len(report.problems)} problems[/red]")
    )
    raise typer.Exit(0 if report.ok else 1)


if __name__ == "__main__":
    app()
