"""`lstm-train compare RUN_DIR...`: runs side by side, their settings, results and curves.

    lstm-train compare runs/mnist_lstm/lr=0.003-3f2a9c runs/mnist_lstm/lr=0.03-8d41e0 --out lr.png
    lstm-train compare runs/mnist_sweep/sweep-lr,hidden-1a2b3c --x samples

The table has one column per run: first the job keys whose values differ between them
(what the comparison is about), then state and steps, then every number of their
result.json that one of them has (validation and test metrics, time, throughput); a run
still training shows its step and loss.  One PNG holds the curves, read from each run's
`metrics/rank-0.jsonl` (`report.read_rank`: the last row of a repeated step wins): the
training loss (all-reduced) and each evaluation metric, one line per run, against `--x`:
`step` (default), `samples` (every rank's samples seen, the `samples` of each training row:
runs of different batch sizes or process counts line up by data seen) or `time` (wall-clock
seconds since the run's first row).  Each line is labelled with the run's name, as W&B names
it without the rank (`mnist_lstm-lr=0.003`, a sweep point's `mnist_sweep-03-lr=0.01,...`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import runfiles, runnames
from .files import outputs
from .runs import RunRow, RunsError, collect, label_rows, show

FIRST = ("primary_metric", "best_step", "steps", "epochs")
SKIP = {"world_size", "global_batch_size", "global_batch_max_tokens", "grad_accum_steps", "parts", "interrupted"}


def runs_of(paths: list[str]) -> list[RunRow]:
    rows: list[RunRow] = []
    for text in paths:
        path = Path(text)
        found = collect(path) if path.is_dir() else []
        if not found:
            raise RunsError(f"{path}: not a run directory (no config.yaml there or below)")
        rows += found
    if len(rows) < 2:
        raise RunsError("compare needs two runs or more (run directories, or folders of runs)")
    label_rows(rows)
    return rows


def columns(rows: list[RunRow]) -> list[str]:
    """A short unique name per run: its label, else what differs, else the directory name."""
    names = [r.differs if r.differs != "-" else r.run_dir.name for r in rows]
    return [n if names.count(n) == 1 else f"{n} ({r.run_dir.name})" for n, r in zip(names, rows)]


def differing_keys(rows: list[RunRow]) -> dict[str, list[Any]]:
    """Dotted job key -> each run's value, for the keys (of what is trained) where they differ."""
    flat = [runnames.flatten({k: v for k, v in r.config.items() if k not in runfiles.VOLATILE_SECTIONS}, "")
            for r in rows]
    keys = sorted({k for f in flat for k in f})
    out = {}
    for key in keys:
        values = [f.get(key) for f in flat]
        name = key.lstrip(".")
        if not runnames.volatile(name) and len({json.dumps(v, sort_keys=True, default=str) for v in values}) > 1:
            out[name] = values
    return out


def table(rows: list[RunRow]) -> list[tuple[str, ...]]:
    """Header (the run names) and lines: differing keys, state and progress, result numbers."""
    lines: list[tuple[str, ...]] = [("", *columns(rows))]
    for key, values in differing_keys(rows).items():
        lines.append((key, *(show(v) for v in values)))
    lines.append(("state", *(r.progress.state for r in rows)))
    if any(r.progress.state == "running" for r in rows):
        lines.append(("step (now)", *(show(r.progress.step) for r in rows)))
        lines.append(("loss (now)", *(show(r.progress.loss) for r in rows)))
    numbers = sorted({k for r in rows for k in r.scalars if k not in SKIP},
                     key=lambda k: (k not in FIRST, not k.startswith("val_"), not k.startswith("test_"), k))
    for key in numbers:
        lines.append((key, *(show(r.scalars.get(key)) for r in rows)))
    return lines


X_AXES = {"step": "step", "samples": "samples seen (all ranks)", "time": "wall time since the run's first row (s)"}


def run_names(rows: list[RunRow]) -> list[str]:
    """Each run's name as W&B shows it, less `-rank<R>`: `<job>-<point>` for a sweep's point
    (its W&B job type), else `<job>-<label>` from its run id (`runnames.display_name`); a name
    two runs share gets the directory's name beside it."""
    names = []
    for r in rows:
        tracking = r.config.get("tracking") if isinstance(r.config.get("tracking"), dict) else {}
        wandb = tracking.get("wandb") if isinstance(tracking.get("wandb"), dict) else {}
        run_id = (r.config.get("train") or {}).get("run_id") if isinstance(r.config.get("train"), dict) else None
        point = wandb.get("job_type")
        names.append(f"{r.job}-{point}" if isinstance(point, str) and point else
                     runnames.display_name(r.job, run_id if isinstance(run_id, str) and run_id else r.run_dir.name))
    return [n if names.count(n) == 1 else f"{n} ({r.run_dir.name})" for n, r in zip(names, rows)]


def curves(rows: list[RunRow], x: str = "step") -> dict[str, dict[str, tuple[list[float], list[float]]]]:
    """Panel -> run name -> (x, values): 'train loss', then each evaluation metric
    (`val/accuracy`, `test/loss`...) that a run logged; x as `--x` says (`X_AXES`)."""
    from .report import COUNT_METRICS, SPLITS, read_rank

    if x not in X_AXES:
        raise RunsError(f"--x {x}: one of {', '.join(X_AXES)}")
    out: dict[str, dict[str, tuple[list[float], list[float]]]] = {"train loss": {}}
    uncounted = []
    for name, row in zip(run_names(rows), rows):
        path = row.run_dir / "metrics" / "rank-0.jsonl"
        if not path.is_file():
            continue
        data = read_rank(path, 0)
        axis = x_of(data.train, data.eval, x)
        if axis is None:
            uncounted.append(str(row.run_dir))
            continue
        key = "global_loss" if any("global_loss" in r for r in data.train) else "loss"
        out["train loss"][name] = xy(data.train, key, axis)
        metrics = sorted({k for r in data.eval for k in r if "/" in k and k.split("/", 1)[0] in SPLITS
                          and "shard" not in k and k.split("/", 1)[1] not in COUNT_METRICS})
        for metric in metrics:
            out.setdefault(metric, {})[name] = xy(data.eval, metric, axis)
    if uncounted:
        raise RunsError(f"--x samples: {', '.join(uncounted)} logged no samples count (its training rows predate "
                        "it); compare these runs with --x step or --x time")
    return {panel: {n: s for n, s in lines.items() if s[0]} for panel, lines in out.items() if any(s[0] for s in lines.values())}


def x_of(train: list[dict[str, Any]], evals: list[dict[str, Any]], x: str) -> Any:
    """A row's x value as a function, or None when the run cannot give it (no samples logged).
    `samples`: an evaluation row takes the count of the training row of its step (every
    evaluation step is a logged step), between two such rows the count interpolated."""
    if x == "step":
        return lambda r: float(r["step"])
    if x == "time":
        times = [r["time"] for r in train + evals if isinstance(r.get("time"), (int, float))]
        start = min(times, default=0.0)
        return lambda r: float(r["time"]) - start if isinstance(r.get("time"), (int, float)) else None
    counted = [(r["step"], r["samples"]) for r in train if isinstance(r.get("samples"), (int, float))]
    if not counted:
        return None
    import numpy as np

    steps, samples = zip(*counted)
    return lambda r: float(np.interp(r["step"], steps, samples))


def xy(rows: list[dict[str, Any]], key: str, axis: Any = None) -> tuple[list[float], list[float]]:
    axis = axis or (lambda r: float(r["step"]))
    pairs = [(axis(r), r[key]) for r in rows if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]
    pairs = [(at, v) for at, v in pairs if at is not None]
    return [float(at) for at, _ in pairs], [float(v) for _, v in pairs]


def plot(data: dict[str, dict[str, tuple[list[float], list[float]]]], out: Path, force: bool = False,
         axis: str = "step") -> Path:
    """One PNG: a panel per curve, a line per run; written atomically where it destroys nothing
    (`files.outputs`: a PNG compare wrote may be written again, anything else only with --force)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not data:
        raise RunsError("no metric rows to plot in these runs (metrics/rank-0.jsonl): have they logged a step yet?")
    n = len(data)
    cols = min(n, 2)
    fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(7 * cols, 4.2 * ((n + cols - 1) // cols)),
                             squeeze=False)
    for ax, (panel, lines) in zip(axes.flat, data.items()):
        for name, (x, y) in lines.items():
            ax.plot(x, y, marker="o" if len(x) < 12 else None, markersize=3, label=name)
        ax.set_title(panel)
        ax.set_xlabel(X_AXES[axis])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.tight_layout()
    data_png = outputs.png_bytes(fig, dpi=110)
    plt.close(fig)
    return outputs.write_output(out, data_png, "--out", force, ours=True)


def main(args: Any) -> int:
    rows = runs_of(args.run_dirs)
    outputs.check_output(Path(args.out), "--out", getattr(args, "force", False), ours=True)  # before any work
    lines = table(rows)
    x = getattr(args, "x", "step")
    out = plot(curves(rows, x), Path(args.out), getattr(args, "force", False), x)  # written before stdout may close
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        print("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip())
    print(f"wrote {out}")
    return 0
