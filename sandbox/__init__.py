"""Runs agent code in isolated child processes, never in a service process.

Inside an agent process (untrusted code runs here):

- :mod:`sandbox.child`: the runtime (``python -m sandbox.child``): serves one role of one agent.
- :mod:`sandbox.contracts`: loads an agent and binds the contract's arguments from its real signatures.
- :mod:`sandbox.tracebacks`: turns an agent's exception into a typed ``Error`` with its frames.
- :mod:`sandbox.init`: PID 1 of the agent's PID namespace: reaps, forwards signals, reports the exit status.
- :mod:`sandbox.identity`: becoming the role's unprivileged uid/gid without capabilities.
- :mod:`sandbox.seccomp`: loading the seccomp filter (built in the worker with libseccomp).
- :mod:`sandbox.template`: the warm template that forks agent processes (runs inside bubblewrap).

In the worker:

- :mod:`sandbox.view`: the allow-listed filesystem view of agent processes.
- :mod:`sandbox.isolation`: the bubblewrap command line; :mod:`sandbox.cgroups`: pids and memory cgroups.
- :mod:`sandbox.launchers`, :mod:`sandbox.pool`: starting agent processes (warm template or fresh).
- :mod:`sandbox.process`: the worker's handle on one child (framed protobuf over a socket, limits, kill).
"""
