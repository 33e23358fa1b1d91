"""Metrics from every worker: a JSONL file per rank (always) and W&B (when it works).

STUB: jsonl only; W&B comes with the tracking issue.  The interface below is what
the training loop calls.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class WorkerInfo:
    """Who is logging: enough to tell workers apart on a dashboard."""

    rank: int
    local_rank: int
    world_size: int
    device: str
    hostname: str = socket.gethostname()


class Tracker:
    """Per-rank metrics sink.  Never raises out of `log`: tracking must not stop training."""

    def __init__(self, job: Any, run_dir: Path, run_id: str, worker: WorkerInfo) -> None:
        self.job, self.run_dir, self.run_id, self.worker = job, run_dir, run_id, worker
        path = run_dir / "metrics" / f"rank-{worker.rank}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._jsonl = path.open("a", buffering=1)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """One row: `step` plus metrics (train: loss, global_loss, lr, samples_per_s, epoch;
        eval: test/loss, test/accuracy, test/shard_loss, test/shard_accuracy, ...)."""
        self._jsonl.write(json.dumps({"step": step, **metrics}) + "\n")

    def log_images(self, step: int, images: dict[str, Path]) -> None:
        pass

    def finish(self, summary: dict[str, Any]) -> None:
        self._jsonl.close()
