"""`imaging-agent users add|list|disable`, `login` and `serve`: who may decide, and the API service."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from agent.commands import output
from agent.settings import get_settings

users_app = typer.Typer(help="Local accounts of the API service (argon2 hashes, lockout).", no_args_is_help=True)


def _read_password(password_stdin: bool, username: str) -> str:
    if password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    password = typer.prompt(f"Password for {username}", hide_input=True)
    if typer.prompt("Again", hide_input=True) != password:
        output.error("the two passwords differ; nothing was changed")
        raise typer.Exit(2)
    return password


@users_app.command("add")
def users_add(
    username: Annotated[str, typer.Argument(help="Sign-in name, one word.")],
    role: Annotated[list[str], typer.Option("--role", help="radiologist (decides), operator (runs jobs), admin; repeatable.")],
    display_name: Annotated[str | None, typer.Option("--display-name", help="Name recorded in FHIR, e.g. 'Dr. Ana Lee'.")] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin.")] = False,
) -> None:
    """Add a local account; the password is asked (hidden) or read from stdin, and only its argon2 hash is kept."""
    from agent.identity import account_store
    from tools.identity.accounts import AccountError

    password = _read_password(password_stdin, username)
    with account_store(get_settings()) as store:
        try:
            account = store.add(username, password, role, display_name)
        except AccountError as exc:
            output.error(exc)
            raise typer.Exit(2) from exc
    output.console.print(f"added {escape(account.username)} ({', '.join(sorted(account.roles))})")


@users_app.command("list")
def users_list() -> None:
    """Every local account, with its roles and whether it can sign in."""
    from agent.identity import account_store

    with account_store(get_settings()) as store:
        accounts = store.list()
    table = Table("user", "display name", "roles", "state")
    for a in accounts:
        state = "disabled" if a.disabled else f"locked until {a.locked_until:%H:%M:%S}" if a.locked_until else "active"
        table.add_row(escape(a.username), escape(a.display_name), ", ".join(sorted(a.roles)), state)
    output.console.print(table)


@users_app.command("disable")
def users_disable(username: Annotated[str, typer.Argument(help="The account to disable.")]) -> None:
    """Disable an account: it can no longer sign in, and its tokens no longer count."""
    from agent.identity import account_store
    from tools.identity.accounts import AccountError

    with account_store(get_settings()) as store:
        try:
            store.disable(username)
        except AccountError as exc:
            output.error(exc)
            raise typer.Exit(1) from exc
    output.console.print(f"disabled {escape(username)}")


def login(
    username: Annotated[str | None, typer.Option("--username", "-u", help="Account name (asked when missing).")] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin.")] = False,
) -> None:
    """Sign in to the configured `imaging-agent serve` (IMAGING_AGENT_API_HOST/_PORT); `approvals`, `process`
    and `ask` then decide as you."""
    import httpx

    from agent.identity import KeptLogin, keep_login

    settings = get_settings()
    url = settings.api_url.rstrip("/")
    username = username or typer.prompt("User")
    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else typer.prompt("Password", hide_input=True)
    try:
        response = httpx.post(f"{url}/api/v1/auth/token", data={"username": username, "password": password}, timeout=30)
    except httpx.HTTPError as exc:
        output.error(f"the service at {url} does not answer ({exc}); start it with `imaging-agent serve`")
        raise typer.Exit(1) from exc
    if response.status_code != 200:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        output.error(f"{url} refused the sign-in (HTTP {response.status_code}): {detail}")
        raise typer.Exit(1)
    keep_login(settings.cli_token_path, KeptLogin(url=url, access_token=response.json()["access_token"]))
    output.console.print(f"signed in to {escape(url)} as {escape(username)}; decisions here are yours for the signing window")


def logout() -> None:
    """Forget the kept login: decisions here fall back to the OS account (if listed as a radiologist)."""
    get_settings().cli_token_path.unlink(missing_ok=True)
    output.console.print("signed out")


def serve(
    host: Annotated[str | None, typer.Option("--host", help="Address (default from settings: 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option("--port", help="Port (default from settings: 8000).")] = None,
) -> None:
    """Serve the API (OpenAPI at /docs): sign-in, approvals and jobs for radiologists and operators."""
    from agent.api.server import run

    settings = get_settings()
    run(settings, host or settings.api_host, port or settings.api_port)
