"""Lightning callbacks shared by every stage (each stage's YAML lists the ones it uses).

- ``checkpoint``: ``LastCheckpoint``, one ``last.ckpt`` per run folder, refreshed during training and on stop.
- ``finite``: ``FiniteGuard``, stops at the first non-finite loss or weight and never checkpoints one.
- ``step_logs``: which training steps log their scalars (only those whose values reach a logger).
- ``throughput``: batches/s and samples/s per rank after a warm-up, written as JSON.
"""
