"""``ui``: serve the Streamlit control panel."""

from __future__ import annotations

import click

from kafkaml_ray.errors import KafkaMLError
from kafkaml_ray.panel import PASSWORD_ENV, is_loopback, serve_ui, show_new_password
from kafkaml_ray.settings import Settings

__all__ = ["ui_command"]


@click.command("ui")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help=f"Address to listen on; any but 127.0.0.1/localhost needs {PASSWORD_ENV} "
    "or a 'password' in .streamlit/secrets.toml.",
)
@click.option("--port", type=int, default=None, help="Port [default: KAFKAML_UI_PORT or 8501].")
@click.option("--open/--no-open", "open_browser", default=False, help="Open a browser tab.")
def ui_command(host: str, port: int | None, open_browser: bool) -> None:
    """Serve the Streamlit control panel (until Ctrl-C); it asks for its password."""
    settings = Settings.from_env()
    try:
        if is_loopback(host):
            show_new_password(settings)
        serve_ui(settings, host=host, port=port, headless=not open_browser)
    except KafkaMLError as e:
        raise click.ClickException(str(e)) from None
