"""What every command shares: the settings (built once) and the opened platform."""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from hdsvault.config import ConfigError, Settings, config_path, load_settings
from hdsvault.crypto.errors import CryptoError
from hdsvault.platform import Platform, PlatformNotReady

console = Console()
err_console = Console(stderr=True)

_config_file: Path | None = None


def set_config_file(path: Path | None) -> None:
    global _config_file
    _config_file = path


def config_file() -> Path | None:
    """The configuration file in force (``--config``, else ``$HDSVAULT_CONFIG``), if any."""
    return config_path(_config_file)


def settings() -> Settings:
    """The effective settings, or exit 2 with the validation message."""
    try:
        return load_settings(_config_file)
    except ConfigError as exc:
        fail(str(exc), code=2)


@contextmanager
def opened_platform() -> Iterator[Platform]:
    """Open the platform, turning start-up refusals into a clear message and exit code 3."""
    try:
        platform = Platform.open(settings())
    except (PlatformNotReady, CryptoError) as exc:
        fail(str(exc), code=3)
    try:
        yield platform
    finally:
        platform.close()


def operator_name() -> str:
    """Who runs this command, for certificates and the journal: ``os:<account>``."""
    try:
        return f"os:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"os:uid{os.getuid()}"


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``message`` as plain text (brackets such as ``[dicom]`` are not markup), exit."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)
