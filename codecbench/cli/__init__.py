"""The ``codecbench`` command line: ``app`` is the typer application the console script runs."""

from codecbench.cli.commands import app

__all__ = ["app"]
