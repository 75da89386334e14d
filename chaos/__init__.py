"""``make chaos``: the robustness claims of codecbench, tried against real services.

- (a) :mod:`chaos.kills`: experiments on three real workers while workers are SIGKILLed and
  replaced and the orchestrator is SIGKILLed and restarted: nothing lost, duplicated or stuck;
  every stored history gapless with exactly one terminal event.
- (b) :mod:`chaos.fuzz`: a property-based fuzz (hypothesis) of every RPC of the orchestrator and
  the worker with random, oversized, negative, NaN and undecodable requests: never UNKNOWN or
  INTERNAL, no crash, no call over 10 s, every experiment created can finish.
- (c) :mod:`chaos.disk`: the orchestrator's data directory and log on a small tmpfs that fills up:
  writes refused with a reason, nothing stuck once space returns (skipped without root).

``python -m chaos`` runs all three and writes ``chaos/RESULTS.md``; ``tests/test_chaos.py`` runs
the same code at a small size in ``make test``. Not part of the installed packages.
"""
