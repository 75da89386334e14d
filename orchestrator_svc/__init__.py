"""The orchestrator: durable experiment queue, dispatch to workers, datasets, blobs, CLI and client.

- :mod:`orchestrator_svc.server`: ``start_orchestrator``, ``OrchestratorConfig``.
- :mod:`orchestrator_svc.service`: the gRPC service (validation at the door).
- :mod:`orchestrator_svc.store`: SQLAlchemy store with versioned migrations.
- :mod:`orchestrator_svc.ledger`: stored-then-announced state changes and events.
- :mod:`orchestrator_svc.scheduler`: dispatch, retries, lost workers, cancellation.
- :mod:`orchestrator_svc.workers`: the worker registry (READY/BUSY/DRAINING/STALE/LOST).
"""
