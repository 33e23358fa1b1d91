"""What a run is doing now, read from its directory alone: state, last step, loss, speed, time left.

`lstm-train status` of a running job and `lstm-train runs` answer from the files the loop
writes anyway (`metrics/rank-<R>.jsonl`, `lock.json`, `checkpoints/`, `result.json`,
`config.yaml`), so they work on a login node for any run, however it was started (`run`,
`accelerate launch`, sbatch, `submit`), and import no torch.

Cost does not grow with the run: only the last TAIL_BYTES of each metrics file (and its first
line) are read, never the whole history of a week-long run.

Time left is the nearer of the run's limits: steps (`train.max_steps`, or `train.epochs`
times the steps per epoch, which the logged `epoch` fraction gives) at the recent step rate,
and `train.max_seconds` of training time (the newest checkpoint's training time plus what
has passed since it was written).  Evaluation pauses are in the step rate only as far as the
recent rows saw them: it is an estimate, and says so.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import checkpoint, runfiles, runlock

TAIL_BYTES = 64 * 1024
RATE_ROWS = 20  # train rows the step rate is measured over (the newest ones of the current part)
THROUGHPUT_KEYS = ("tokens_per_s", "samples_per_s")


@dataclass
class Progress:
    """A run's state and, once it has logged a step, where it is (None: not known)."""

    state: str  # running, finished, stopped (resumable), new (nothing trained yet)
    holder: str | None = None  # who holds the run (pid, host, SLURM job) while it runs
    step: int | None = None
    total_steps: int | None = None
    epoch: float | None = None
    epochs: int | None = None
    loss: float | None = None  # the all-reduced (global) loss of the last logged step
    lr: float | None = None
    throughput: float | None = None  # samples or tokens per second, every rank together
    unit: str | None = None  # "samples" or "tokens"
    ranks: int = 0
    steps_per_s: float | None = None
    train_seconds: float | None = None  # training time so far (estimated while it runs)
    eta_s: float | None = None
    eta_by: str | None = None  # which limit ends it: max_steps, epochs or max_seconds
    updated: float | None = None  # unix time of the last row
    last_eval: dict[str, Any] = field(default_factory=dict)  # the newest evaluation row (val/... or test/...)
    newest_checkpoint: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tail_rows(path: Path, nbytes: int = TAIL_BYTES) -> list[dict[str, Any]]:
    """The JSON rows in the last `nbytes` of a JSONL file (a cut first line and a torn last
    line are skipped)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - nbytes))
            data = f.read(nbytes)
    except OSError:
        return []
    lines = data.split(b"\n")
    if size > nbytes:
        lines = lines[1:]  # begins inside a line
    rows = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
    return rows


def first_row(path: Path) -> dict[str, Any] | None:
    """The first row of a JSONL file (its first line only is read)."""
    try:
        with open(path, "rb") as f:
            row = json.loads(f.readline(TAIL_BYTES))
    except (OSError, ValueError):
        return None
    return row if isinstance(row, dict) else None


def is_train_row(row: dict[str, Any]) -> bool:
    return "loss" in row and "epoch" in row


def is_eval_row(row: dict[str, Any]) -> bool:
    return any(k.startswith(("val/", "test/")) and "/shard_" not in k for k in row)


def current_part(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The newest train rows written in one go: back from the last row while step and time both
    go down (a resume repeats steps after its checkpoint and starts a new stretch of time)."""
    part: list[dict[str, Any]] = []
    for row in reversed(rows):
        if part and not (row["step"] < part[-1]["step"] and row.get("time", 0) <= part[-1].get("time", 0)):
            break
        part.append(row)
        if len(part) >= RATE_ROWS:
            break
    return part[::-1]


def run_state(run_dir: Path) -> tuple[str, str | None]:
    """(state, holder): finished (result.json), running (a live holder of lock.json), stopped
    (has trained; resumable), or new."""
    if (run_dir / runfiles.RESULT).is_file():
        return "finished", None
    holder = runlock.read_holder(run_dir / runlock.LOCK)
    if holder is not None and runlock.stale_reason(holder, runlock.Holder.current()) is None:
        return "running", holder.describe()
    trained = (run_dir / "metrics" / "rank-0.jsonl").is_file() or checkpoint.checkpoint_files(run_dir / checkpoint.CHECKPOINTS)
    return ("stopped" if trained else "new"), None


def progress(run_dir: Path, config: dict[str, Any] | None = None) -> Progress:
    """State and progress of the run in `run_dir` (`config`: its config.yaml, read if not given)."""
    run_dir = Path(run_dir)
    state, holder = run_state(run_dir)
    p = Progress(state, holder)
    ckpts = checkpoint.checkpoint_files(run_dir / checkpoint.CHECKPOINTS)
    p.newest_checkpoint = ckpts[0][0] if ckpts else None
    metrics = run_dir / "metrics"
    rows = tail_rows(metrics / "rank-0.jsonl")
    train = [r for r in rows if is_train_row(r)]
    evals = [r for r in rows if is_eval_row(r)]
    if evals:
        p.last_eval = {k: v for k, v in evals[-1].items() if k == "step" or (k.startswith(("val/", "test/"))
                                                                                and "/shard_" not in k)}
    if not train:
        return p
    last = train[-1]
    p.step, p.epoch, p.lr, p.updated = last["step"], float(last["epoch"]), last.get("lr"), last.get("time")
    p.loss = last.get("global_loss", last.get("loss"))
    throughput(p, metrics)
    part = current_part(train)
    if len(part) > 1 and part[-1].get("time", 0) > part[0].get("time", 0):
        p.steps_per_s = (part[-1]["step"] - part[0]["step"]) / (part[-1]["time"] - part[0]["time"])
    spec = config if config is not None else read_config(run_dir)
    limits(p, spec.get("train", {}) if spec else {}, run_dir, ckpts, metrics)
    return p


def throughput(p: Progress, metrics: Path) -> None:
    """Every rank's last logged samples/s (or tokens/s), added up: the run's throughput."""
    total, ranks = 0.0, 0
    for path in sorted(metrics.glob("rank-*.jsonl")):
        rows = [r for r in tail_rows(path, 8 * 1024) if is_train_row(r)]
        key = next((k for k in THROUGHPUT_KEYS if rows and k in rows[-1]), None)
        if key is None:
            continue
        total, ranks, p.unit = total + float(rows[-1][key]), ranks + 1, key.split("_")[0]
    if ranks:
        p.throughput, p.ranks = total, ranks


def limits(p: Progress, train: dict[str, Any], run_dir: Path, ckpts: list[tuple[int, Path]], metrics: Path) -> None:
    """Total steps, training time so far, and the time left by whichever limit comes first."""
    epochs, max_steps, max_seconds = train.get("epochs"), train.get("max_steps"), train.get("max_seconds")
    p.epochs = epochs
    per_epoch = round(p.step / p.epoch) if p.epoch and p.epoch > 0 else None
    totals = [(n, by) for n, by in ((max_steps, "max_steps"), (epochs * per_epoch if epochs and per_epoch else None,
                                                                "epochs")) if n]
    if totals:
        p.total_steps, by = min(totals)
        if p.steps_per_s:
            p.eta_s, p.eta_by = max(0.0, (p.total_steps - p.step) / p.steps_per_s), by
    p.train_seconds = training_seconds(p, ckpts, metrics)
    if max_seconds and p.train_seconds is not None:
        left = max(0.0, float(max_seconds) - p.train_seconds)
        if p.eta_s is None or left < p.eta_s:
            p.eta_s, p.eta_by = left, "max_seconds"


def training_seconds(p: Progress, ckpts: list[tuple[int, Path]], metrics: Path) -> float | None:
    """Training time so far: the newest checkpoint's, plus the time since it was written (while it
    runs); without a checkpoint, the time from the first logged row to the last."""
    if p.updated is None:
        return None
    for _, path in ckpts:
        try:
            meta = json.loads((path / "meta.json").read_text())
            written = (path / "meta.json").stat().st_mtime
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict) and isinstance(meta.get("train_seconds"), (int, float)):
            since = p.updated - written if p.state == "running" else 0.0
            return float(meta["train_seconds"]) + max(0.0, since)
    first = first_row(metrics / "rank-0.jsonl")
    return p.updated - first["time"] if first and isinstance(first.get("time"), (int, float)) else None


def read_config(run_dir: Path) -> dict[str, Any] | None:
    try:
        return runfiles.read_config(run_dir / runfiles.CONFIG) if (run_dir / runfiles.CONFIG).is_file() else None
    except runfiles.RunDirError:
        return None


def duration(seconds: float | None) -> str:
    """`1h02m`, `4m05s`, `12s`."""
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def describe(p: Progress, now: float | None = None) -> list[str]:
    """Lines for people: where the run is and how long it has left."""
    if p.step is None:
        return [f"progress: no step logged yet ({p.state})"]
    now = time.time() if now is None else now
    parts = [f"step {p.step:,}" + (f" of {p.total_steps:,} ({100 * p.step / p.total_steps:.1f}%)" if p.total_steps else "")]
    parts.append(f"epoch {p.epoch:.2f}" + (f" of {p.epochs}" if p.epochs else ""))
    if p.loss is not None:
        parts.append(f"loss {p.loss:.4g}")
    if p.throughput is not None:
        parts.append(f"{p.throughput:,.0f} {p.unit}/s" + (f" ({p.ranks} ranks)" if p.ranks > 1 else ""))
    if p.steps_per_s:
        parts.append(f"{p.steps_per_s:.1f} steps/s")
    lines = ["progress: " + ", ".join(parts)]
    if p.state == "running":
        eta = f"about {duration(p.eta_s)} left (by {p.eta_by})" if p.eta_s is not None else "time left unknown"
        ago = f"; last row {duration(now - p.updated)} ago" if p.updated else ""
        lines.append(f"running:  {eta}, trained {duration(p.train_seconds)} so far{ago}")
    if p.last_eval:
        shown = "  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in p.last_eval.items() if k != "step")
        lines.append(f"last evaluation (step {p.last_eval.get('step')}): {shown}")
    return lines
