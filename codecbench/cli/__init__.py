"""The ``codecbench`` command line (typer + rich), built on :class:`codecbench.client.Client`.

The orchestrator's address comes from ``--server``, else ``$CODECBENCH_SERVER``, else
127.0.0.1:50051. Exit codes: 0 success; 1 the experiment failed or was cancelled (``run``,
``watch``); 2 bad input, a refused request or an unreachable orchestrator; 130 interrupted.

Modules:

- :mod:`codecbench.cli.commands`: the typer application ``app`` and its commands;
- :mod:`codecbench.cli.views`: tables and text for experiments, events, errors, workers, datasets;
- :mod:`codecbench.cli.follow`: following an experiment live, with a progress bar per point;
- :mod:`codecbench.cli.parsing`: parameter grids, labels, ``--since`` and ``--state`` values.

``app`` is imported on first access (module ``__getattr__``): ``make demo`` imports the views and
:func:`~codecbench.cli.follow.follow` through this package and should not build the typer app.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import typer

    app: typer.Typer

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "app"]


def __getattr__(name: str) -> Any:
    if name == "app":
        from codecbench.cli.commands import app

        return app
    raise AttributeError(f"module 'codecbench.cli' has no attribute {name!r}")
