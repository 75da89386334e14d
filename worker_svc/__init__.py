"""The worker service: runs agents in sandboxes and computes trusted metrics.

- :mod:`worker_svc.server`: the gRPC server (``start_worker``, ``WorkerConfig``).
- :mod:`worker_svc.executor`: one experiment as a stream of events.
- :mod:`worker_svc.sandboxed_agent`: an encoder or decoder side in its own sandbox process.
- :mod:`worker_svc.metrics`: bpp, PSNR, MS-SSIM, MSE, timings.
- :mod:`worker_svc.blob_cache`: content-addressed blobs fetched from the orchestrator.
- :mod:`worker_svc.registration`: registration and heartbeats with an orchestrator.
"""
