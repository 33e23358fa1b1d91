"""lstm_train's own loop, timed from its result.json: in this process, or launched as N processes.

The job runs as `lstm-train run` would run it, with three changes that keep the bench
about the loop: tracking disabled, a temporary run directory, and no checkpoint until
the end.  Its epoch time is the result's training seconds without evaluation.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..config import JobBase, save_job, validate_job


def reset_accelerate() -> None:
    """Forget accelerate's process-wide state, so the next train() may use other settings."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    if not torch.distributed.is_initialized():
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
        PartialState._reset_state()


def bench_job(job: JobBase, output_dir: Path, max_steps: int | None = None) -> JobBase:
    """The job as the bench trains it: no tracking, no checkpoint until the end."""
    spec = job.to_dict()
    train = spec["train"]
    train.update(output_dir=str(output_dir), checkpoint_every=10**9, keep_checkpoints=1, eval_every_epochs=1)
    if max_steps:  # evaluate at the last step, inside the loop's clock, as a whole epoch does
        train.update(max_steps=max_steps, eval_every_steps=max_steps)
    spec["tracking"]["wandb"]["mode"] = "disabled"
    spec["sweep"] = None
    return validate_job(spec, "bench")


def from_result(result: dict[str, Any]) -> dict[str, Any]:
    """Epoch time (the training loop without evaluation), steps and the precision used."""
    eval_s = float(result.get("eval_seconds", 0.0))
    cpu_s = float(result.get("train_cpu_seconds", float("nan"))) - float(result.get("eval_cpu_seconds", 0.0))
    out = {"steps": int(result["steps"]), "epoch_s": float(result["train_seconds"]) - eval_s, "cpu_s": cpu_s,
           "eval_s": eval_s, "world_size": int(result.get("world_size", 1))}
    if "mixed_precision" in result:
        out["precision"] = result["mixed_precision"]
    return out


def lstm_train_epoch(job: JobBase, max_steps: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """lstm_train.train.train() on the job in this process (its stdout goes to stderr):
    the timing and the whole result."""
    from ..train import train

    reset_accelerate()
    with tempfile.TemporaryDirectory(prefix="lstm-bench-") as tmp:
        run = bench_job(job, Path(tmp) / "run", max_steps)
        with contextlib.redirect_stdout(sys.stderr):
            result = train(run)
    reset_accelerate()
    return from_result(result), result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(job: JobBase, processes: int, workdir: Path, max_steps: int | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train the job in fresh process(es): `python -m lstm_train run`, or `accelerate launch` for > 1."""
    run = bench_job(job, workdir / f"run-{processes}", max_steps)
    spec = workdir / f"job-{processes}.yaml"
    save_job(run, spec)
    if processes == 1:
        cmd = [sys.executable, "-m", "lstm_train", "run", str(spec)]
    else:
        accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
        if accelerate is None:
            raise FileNotFoundError("accelerate launcher not found next to this Python or on PATH")
        cmd = [accelerate, "launch", "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
               "--dynamo_backend", "no", "--main_process_port", str(free_port()),
               "-m", "lstm_train", "run", str(spec)]
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT")}
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    result_file = workdir / f"run-{processes}" / "result.json"
    if proc.returncode != 0 or not result_file.exists():
        tail = "\n".join(proc.stdout.splitlines()[-20:])
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{tail}")
    result = json.loads(result_file.read_text())
    return {**from_result(result), "command": " ".join(cmd)}, result
