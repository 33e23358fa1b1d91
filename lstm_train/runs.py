"""`lstm-train runs [JOB|DIR]`: the runs of a job as one table, to find and tell them apart.

    lstm-train runs mnist_lstm                 # runs/mnist_lstm/*, sweeps' points included
    lstm-train runs runs/mnist_lstm --sort val_accuracy --json

One row per run directory (a folder with a config.yaml), from its files alone (`livestatus`:
no torch, no W&B, nothing but reads): state, step, the task's primary metric on validation
and test data, training time (and time left while it runs), when it began, and what differs.
What differs is the run's label (`runnames`: the overrides that changed the job file); for a
directory without one (a sweep's point, an older hash-named run, a `train.output_dir`), the
config keys whose values differ between the runs listed.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import livestatus, runfiles, runnames

SORT_KEYS = ("started", "state", "step", "time", "run", "metric")
MAX_DEPTH = 3  # runs/<job>/<run>, runs/<job>/<sweep>/<point>: from runs/, job folders and sweeps


class RunsError(ValueError):
    """Nothing to list, or a sort key no run has (a ValueError: the CLI prints it and exits 2)."""


@dataclass
class RunRow:
    """What `runs` shows of one run directory (and `--json` gives whole)."""

    run_dir: Path
    name: str  # the path below the listed folder
    job: str
    config: dict[str, Any]
    progress: livestatus.Progress
    result: dict[str, Any] | None
    started: float | None
    differs: str = ""
    scalars: dict[str, float] = field(default_factory=dict)  # the result's numbers (val_*, test_*, steps...)

    @property
    def primary(self) -> tuple[str | None, bool]:
        """(test metric name, higher is better) from result.json."""
        if not self.result:
            return None, True
        return self.result.get("primary_metric"), bool(self.result.get("higher_is_better", True))


def run_dirs(folder: Path, depth: int = MAX_DEPTH) -> list[Path]:
    """Run directories at or below `folder` (a run directory is not looked into)."""
    if (folder / runfiles.CONFIG).is_file():
        return [folder]
    if depth == 0 or not folder.is_dir():
        return []
    found: list[Path] = []
    for child in sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")):
        found += run_dirs(child, depth - 1)
    return found


def where(target: str | None) -> Path:
    """The folder to list: a directory as given; a job (file or shipped name) -> runs/<its name>."""
    if target is None:
        return Path("runs")
    path = Path(target)
    if path.is_dir():
        return path
    from .config import load_job
    from .shipped import find_job

    return Path("runs") / load_job(find_job(target)).name


def collect(folder: Path) -> list[RunRow]:
    rows = []
    for run_dir in run_dirs(folder):
        config = livestatus.read_config(run_dir) or {}
        try:
            result = runfiles.read_json(run_dir / runfiles.RESULT, runfiles.RESULT_FIELDS)
        except runfiles.RunDirError:
            result = None
        stamp = runfiles.started(run_dir)
        name = str(run_dir.relative_to(folder)) if run_dir != folder else run_dir.name
        row = RunRow(run_dir, name, str(config.get("name", run_dir.parent.name)), config,
                     livestatus.progress(run_dir, config), result, stamp["time"] if stamp else None)
        row.scalars = {k: v for k, v in (result or {}).items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        rows.append(row)
    label_rows(rows)
    return rows


def label_rows(rows: list[RunRow]) -> None:
    """Each row's `differs`: its readable label, else the keys that vary among the listed runs."""
    flat = [runnames.flatten({k: v for k, v in r.config.items() if k not in runfiles.VOLATILE_SECTIONS}, "job")
            for r in rows]
    keys = sorted({k for f in flat for k in f})
    varying = [k for k in keys if not runnames.volatile(k.removeprefix("job."))
               and len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flat}) > 1]
    for row, f in zip(rows, flat):
        label = runnames.label_of(row.run_dir.name)
        if label is None:
            changed = {k.removeprefix("job."): f.get(k) for k in varying}
            label = runnames.label(changed) if changed else "-"
        row.differs = label


def metric_names(rows: list[RunRow]) -> tuple[str | None, str | None, bool]:
    """(val metric, test metric, higher is better): the primary metric the listed runs report."""
    test, higher = next(((m, h) for m, h in (r.primary for r in rows) if m), (None, True))
    val = f"val_{test.removeprefix('test_')}" if test else None
    return (val if any(val in r.scalars for r in rows) else None), test, higher


def sort_rows(rows: list[RunRow], key: str) -> list[RunRow]:
    """By `key`: started (oldest first), state, step, time, run, metric (best first), or any
    number of result.json (`val_loss`, `test_accuracy`, `samples_per_second`...)."""
    val, test, higher = metric_names(rows)
    if key == "metric":
        key = val or test or "step"
    if key not in SORT_KEYS and not any(key in r.scalars for r in rows):
        known = sorted({k for r in rows for k in r.scalars})
        raise RunsError(f"--sort {key}: no run has it; sort by {', '.join(SORT_KEYS)} or a number of result.json "
                        f"({', '.join(known[:12])}{', ...' if len(known) > 12 else ''})")
    best_first = key in (val, test) and higher

    def value(row: RunRow) -> Any:
        return {"started": row.started, "state": row.progress.state, "step": row.progress.step,
                "time": train_seconds(row), "run": row.name}.get(key, row.scalars.get(key))

    present = [r for r in rows if value(r) is not None]
    missing = [r for r in rows if value(r) is None]
    return sorted(present, key=value, reverse=best_first) + missing


def train_seconds(row: RunRow) -> float | None:
    return row.scalars.get("train_seconds", row.progress.train_seconds)


def show(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def table(rows: list[RunRow]) -> list[tuple[str, ...]]:
    """The header and one line per run."""
    val, test, _ = metric_names(rows)
    header = ("run", "state", "step") + ((val,) if val else ()) + ((test,) if test else ()) + ("time", "started",
                                                                                              "differs")
    lines = [header]
    for r in rows:
        p = r.progress
        step = f"{p.step if p.step is not None else r.scalars.get('steps', '-')}" + (
            f"/{p.total_steps}" if p.state == "running" and p.total_steps else "")
        spent = livestatus.duration(train_seconds(r)) + (
            f" ({livestatus.duration(p.eta_s)} left)" if p.state == "running" and p.eta_s is not None else "")
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.started)) if r.started else "-"
        metrics = ((show(r.scalars.get(val)),) if val else ()) + ((show(r.scalars.get(test)),) if test else ())
        lines.append((r.name, p.state, step, *metrics, spent, started, r.differs))
    return lines


def as_json(rows: list[RunRow]) -> list[dict[str, Any]]:
    val, test, higher = metric_names(rows)
    return [{"run_dir": str(r.run_dir), "run": r.name, "job": r.job, "state": r.progress.state,
             "step": r.progress.step if r.progress.step is not None else r.scalars.get("steps"),
             "val_metric": val, "val": r.scalars.get(val) if val else None,
             "test_metric": test, "test": r.scalars.get(test) if test else None, "higher_is_better": higher,
             "train_seconds": train_seconds(r), "started": r.started, "differs": r.differs,
             "progress": r.progress.to_dict(), "result": r.scalars} for r in rows]


def main(args: Any) -> int:
    folder = where(args.target)
    rows = collect(folder)
    if not rows:
        raise RunsError(f"{folder}: no run directories here (a run directory holds a config.yaml); "
                        "give a job (lstm-train runs mnist_lstm) or a folder of runs")
    rows = sort_rows(rows, args.sort)
    if args.json:
        print(json.dumps(as_json(rows), indent=1))
        return 0
    lines = table(rows)
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    print(f"{len(rows)} run(s) in {folder}")
    for line in lines:
        print("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip())
    return 0
