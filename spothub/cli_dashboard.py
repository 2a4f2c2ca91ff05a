"""`spothub dashboard`: serve the local web dashboard (spothub/dashboard.py) over the API this command connects to
(--sandbox, --url, or the hub's SSM parameter with --profile/--region/--prefix), until Ctrl-C."""

from __future__ import annotations

import threading
import webbrowser

import click

from spothub.cli_api import Api, api_command
from spothub.dashboard import serve


def dashboard_command(cli: click.Group) -> None:
    @api_command(cli, "dashboard", help="a local web page of the whole deployment, refreshing itself")
    @click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="0: any free port")
    @click.option("--open", "open_browser", is_flag=True, help="open it in the default browser")
    def dashboard(api: Api, port: int, open_browser: bool) -> None:
        client = api.client  # resolves the API and the credentials now: a missing one is said before serving
        try:
            server = serve(lambda: client, api_url=client.target.url, port=port)
        except OSError as exc:
            raise click.ClickException(f"cannot listen on 127.0.0.1:{port}: {exc.strerror} (try --port 0)") from None
        click.echo(f"spothub dashboard on {server.url} (API {client.target.url}); Ctrl-C stops it")
        if open_browser:
            webbrowser.open(server.url)
        try:
            threading.Event().wait()
        finally:
            server.shutdown()
            server.server_close()
