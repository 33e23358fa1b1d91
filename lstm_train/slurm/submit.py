"""`lstm-train submit`: one run, a grid/random sweep, or a bayes sweep (suggested batch by batch).

Kept apart from submission.py so that bayes_sweep (which builds on submission's pieces) and
submission never import each other."""

from __future__ import annotations

from typing import Any

from ..config import load_job
from .bayes_sweep import submit_bayes
from .submission import check_cluster, dry_run, submit_run, submit_sweep


def submit_main(args: Any) -> int:
    job = load_job(args.job, args.overrides)
    if getattr(args, "dry_run", False):
        return dry_run(job, args)
    part = check_cluster(job) if args.executor == "slurm" else None
    if job.sweep is not None:
        if job.sweep.method == "bayes":  # points suggested batch by batch, not known up front
            return submit_bayes(job, args, part)
        return submit_sweep(job, args, part)
    return submit_run(job, args, part)
