"""Structured logging (structlog): JSON lines when stderr is not a terminal, colours when it is.

Services bind ``experiment_id``, ``worker_id`` and ``attempt`` to their loggers so every line of
an experiment can be found by id.

A log line that cannot be written (the disk under the log file is full: ``ENOSPC``) is dropped,
not raised: a service keeps serving when its log cannot grow, and writes lines again once space
returns (:class:`LossyStream`). Raising would turn every logging call site into a failure point
(a request failing for its log line, the scheduler's loop dying in its own error handler).
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog


class LossyStream:
    """A text stream for log lines whose write errors (``OSError``: a full disk, a closed pipe) drop
    the line instead of raising.

    Args:
        stream: the stream written to (stderr).

    Attributes:
        dropped: how many writes or flushes failed.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.dropped = 0

    def write(self, text: str) -> int:
        """Writes ``text``; returns its length even when it was dropped."""
        try:
            return self.stream.write(text)
        except OSError:
            self.dropped += 1
            return len(text)

    def flush(self) -> None:
        """Flushes; a failure leaves the buffered text to the next flush (sent once space returns)."""
        try:
            self.stream.flush()
        except OSError:
            self.dropped += 1


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
        logger_factory=structlog.PrintLoggerFactory(file=LossyStream(sys.stderr)),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )


def get_logger(name: str, **bound: object) -> structlog.typing.FilteringBoundLogger:
    """A logger with ``logger=name`` and the given fields bound."""
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)  # configure() set the wrapper class
    return logger.bind(logger=name, **bound)
