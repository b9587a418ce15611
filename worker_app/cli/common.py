"""What every command group of the CLI shares."""

from __future__ import annotations

import sys
from typing import NoReturn

import click


def fail(message: str) -> NoReturn:
    """End the command with one line on stderr and exit status 1: never a traceback."""
    click.echo(f"error: {message}", err=True)
    sys.exit(1)
