"""Typed errors from exceptions raised by agent code (runs inside the sandbox child)."""

from __future__ import annotations

import traceback
from pathlib import Path
from types import TracebackType

from codecbench.v1 import errors_pb2, types_pb2


def agent_frames(tb: TracebackType | None, bundle_dir: Path) -> list[errors_pb2.Frame]:
    """The traceback's frames that lie in the agent's files, outermost first, with paths
    relative to the bundle (``codec.py``), so the error names the agent's own file and line."""
    frames = []
    for summary in traceback.extract_tb(tb):
        rel = _relative(summary.filename, bundle_dir)
        if rel is not None:
            frames.append(
                errors_pb2.Frame(file=rel, line=summary.lineno or 0, function=summary.name, code=summary.line or "")
            )
    return frames


def _relative(filename: str, bundle_dir: Path) -> str | None:
    # Pseudo-files ("<frozen importlib._bootstrap>", "<string>") are no agent file; resolving them
    # would place them in the cwd, which is the bundle directory.
    if not Path(filename).is_absolute():
        return None
    try:
        return Path(filename).resolve().relative_to(bundle_dir.resolve()).as_posix()
    except ValueError:
        return None


def exception_error(
    exc: BaseException,
    kind: errors_pb2.ErrorKind.ValueType,
    phase: types_pb2.Phase.ValueType,
    bundle_dir: Path,
    message: str | None = None,
) -> errors_pb2.Error:
    """An ``Error`` of ``kind`` for an exception raised by agent code.

    The location is the innermost frame in the agent's files; for a SyntaxError it is the file
    and line of the bad source.
    """
    frames = agent_frames(exc.__traceback__, bundle_dir)
    location = f"{frames[-1].file}:{frames[-1].line}" if frames else ""
    if isinstance(exc, SyntaxError) and exc.filename:
        rel = _relative(exc.filename, bundle_dir) or exc.filename
        location = f"{rel}:{exc.lineno}"
        frames.append(
            errors_pb2.Frame(file=rel, line=exc.lineno or 0, function="<module>", code=(exc.text or "").strip())
        )
    text = message if message is not None else (safe_str(exc) or type(exc).__name__)
    return errors_pb2.Error(
        kind=kind, phase=phase, message=text, exception_type=type(exc).__name__, frames=frames, location=location
    )


def safe_str(obj: object) -> str:
    """``str(obj)`` (an exception, a value the agent returned), or the type's repr when the agent's
    ``__str__`` itself raises."""
    try:
        return str(obj)
    except Exception:  # noqa: BLE001 - an object whose __str__ raises
        return repr(type(obj))
