"""Wall-clock limits of an experiment, and where their defaults are resolved.

A ``codecbench.v1.Timeouts`` field left at 0 means "the worker's default". Each worker reports
its defaults in ``WorkerInfo.default_timeouts``; at dispatch the orchestrator resolves the
experiment's timeouts against them once (:func:`resolve`), sends the explicit values and
derives its call deadline from the resolved ``experiment_s``. The worker resolves direct
``Encode``/``Decode`` calls against the same defaults.
"""

from __future__ import annotations

from codecbench.v1 import types_pb2

FIELDS = ("load_s", "encode_s", "decode_s", "experiment_s")


def default_timeouts() -> types_pb2.Timeouts:
    """A worker's defaults unless configured otherwise: 120 s to load, encode or decode one
    image, one hour for a whole experiment."""
    return types_pb2.Timeouts(load_s=120.0, encode_s=120.0, decode_s=120.0, experiment_s=3600.0)


def resolve(requested: types_pb2.Timeouts, defaults: types_pb2.Timeouts) -> types_pb2.Timeouts:
    """Every field of ``requested`` that is 0 takes the value of ``defaults``; a default left at
    0 (a worker that reports none) takes :func:`default_timeouts`' value.

    Returns:
        A new message with every field set, in seconds.
    """
    builtin = default_timeouts()
    return types_pb2.Timeouts(
        **{name: getattr(requested, name) or getattr(defaults, name) or getattr(builtin, name) for name in FIELDS}
    )
