"""Runs agent code in isolated child processes, never in a service process.

- :mod:`sandbox.child`: the runtime inside a child (``python -m sandbox.child``).
- :mod:`sandbox.contracts`: loads an agent and binds the contract's arguments from its real signatures.
- :mod:`sandbox.tracebacks`: turns an agent's exception into a typed ``Error`` with its frames.
- :mod:`sandbox.process`: the worker's handle on one child (framed protobuf over a socket, limits, kill).
"""
