"""Structured logging (structlog): JSON lines when stderr is not a terminal, colours when it is.

Services bind ``experiment_id``, ``worker_id`` and ``attempt`` to their loggers so every line of
an experiment can be found by id.
"""

from __future__ import annotations

import logging
import sys

import structlog


def configure(level: str = "info") -> None:
    """Configures structlog once for the process; log lines go to stderr."""
    renderer = (
        structlog.dev.ConsoleRenderer(colors=True) if sys.stderr.isatty() else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str, **bound: object) -> structlog.typing.FilteringBoundLogger:
    """A logger with ``logger=name`` and the given fields bound."""
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)  # configure() set the wrapper class
    return logger.bind(logger=name, **bound)
