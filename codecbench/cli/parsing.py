"""Parsing of command-line values: parameter grids, labels, ``--since`` and ``--state``.

Pure functions (no client, no console); each raises :class:`UsageError` with a message that
names the option and shows the expected form, which the command layer prints as
``error: <message>`` with exit code 2.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import re
import time
from collections.abc import Iterable, Sequence
from typing import Any

from codecbench.v1 import experiment_pb2


class UsageError(Exception):
    """Bad command-line input: printed as ``error: <message>``, exit 2."""


def parse_value(text: str) -> int | float | str:
    """A parameter value: int if it parses as one, else a finite float, else the string itself.

    ``nan``, ``inf`` and ``1e999`` stay strings: a parameter point is a finite setting (the
    services refuse NaN and infinities), and ``mode=inf`` more likely names a mode than a number.
    """
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return text
    return number if math.isfinite(number) else text


def parameter_grid(specs: Sequence[str]) -> list[dict[str, Any]]:
    """``["quality=10,30", "mode=a,b"]`` -> the cartesian product of the values, keys in given order.

    No specs give one point without parameters.

    Raises:
        UsageError: a spec without ``=``, an empty key or value list, or a key given twice.
    """
    keys: list[str] = []
    choices: list[list[Any]] = []
    for spec in specs:
        key, sep, raw = spec.partition("=")
        key = key.strip()
        if not sep or not key or not raw.strip():
            raise UsageError(f"--param {spec!r}: expected NAME=VALUE[,VALUE...], e.g. quality=10,30,50")
        if key in keys:
            raise UsageError(f"--param {key}: given twice; list all its values in one --param {key}=a,b")
        keys.append(key)
        choices.append([parse_value(v.strip()) for v in raw.split(",")])
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*choices)]


def parse_labels(items: Iterable[str]) -> dict[str, str]:
    """``["team=codecs"]`` -> ``{"team": "codecs"}``.

    Raises:
        UsageError: an item without ``=`` or with an empty key.
    """
    labels = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--label {item!r}: expected KEY=VALUE")
        labels[key] = value
    return labels


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# What a protobuf Timestamp holds (0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z, in POSIX seconds):
# the requests carry --since as one, so a time outside it is the user's mistake, not a crash.
EARLIEST_SINCE_S = -62_135_596_800
LATEST_SINCE_S = 253_402_300_799


def parse_since(text: str, now: float | None = None) -> float:
    """``"30m"``, ``"1h"``, ``"2d"``, ``"1w"`` ago, or an ISO date/time (local time unless it has an
    offset), as a POSIX timestamp in seconds.

    Args:
        text: the option's value.
        now: the POSIX time (s) a duration counts back from; the current time when None.

    Raises:
        UsageError: neither a duration nor an ISO date, or a time before year 1 or after year 9999
            (:data:`EARLIEST_SINCE_S`, :data:`LATEST_SINCE_S`: what a protobuf Timestamp holds).
    """
    if match := _DURATION.match(text):
        since = (time.time() if now is None else now) - float(match.group(1)) * _SECONDS[match.group(2)]
    else:
        try:
            since = dt.datetime.fromisoformat(text.strip()).timestamp()
        except (ValueError, OverflowError):  # OverflowError: year 1 in a zone east of UTC
            raise UsageError(f"--since {text!r}: expected a duration (30m, 1h, 2d, 1w) or an ISO date "
                             "(2024-05-01 or 2024-05-01T12:00)") from None
    if not EARLIEST_SINCE_S <= since <= LATEST_SINCE_S:  # also NaN and infinities: neither is in range
        raise UsageError(f"--since {text!r}: must be between 0001-01-01 and 9999-12-31 UTC "
                         f"({EARLIEST_SINCE_S} to {LATEST_SINCE_S} s since 1970)")
    return since


def parse_states(items: Iterable[str]) -> list[experiment_pb2.ExperimentState.ValueType]:
    """``["failed", "RUNNING"]`` (also comma-separated) -> ExperimentState values.

    Raises:
        UsageError: an unknown state name.
    """
    names = [v.name.removeprefix("EXPERIMENT_STATE_") for v in experiment_pb2.ExperimentState.DESCRIPTOR.values
             if v.number]
    states = []
    for item in items:
        for part in filter(None, (p.strip().upper().removeprefix("EXPERIMENT_STATE_") for p in item.split(","))):
            if part not in names:
                raise UsageError(f"--state {part.lower()}: expected one of {', '.join(n.lower() for n in names)}")
            states.append(experiment_pb2.ExperimentState.Value(f"EXPERIMENT_STATE_{part}"))
    return states
