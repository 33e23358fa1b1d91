"""`lstm-train report RUN_DIR`: how did a run go, from its local metrics alone.

Reads ``<run_dir>/metrics/rank-<R>.jsonl`` (written by `lstm_train.tracking`,
whatever W&B did) and ``result.json`` if the run got that far; prints one table
row per rank and writes three PNGs into the run dir:

* ``report-loss.png``: every rank's batch loss and the global (all-reduced) loss
  against step: a rank far from the others points at its data shard or device;
* ``report-eval.png``: each global evaluation metric (validation while training, the
  final test) per evaluation, with every rank's shard value dashed (one panel per
  metric: accuracy, loss, mase, cer, bleu...);
* ``report-throughput.png``: samples/s (or tokens/s for text tasks) per rank against
  step: stragglers show.

A resumed run repeats the steps after its last checkpoint; for each rank and step
the row written last wins, so the plots show what the final model went through.
`report` returns the PNG paths; `collect` and `series` give the exact numbers
plotted, so a test (or a notebook) can check them without reading pixels.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import matplotlib

matplotlib.use("Agg")  # batch jobs and login nodes have no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from .files import outputs  # noqa: E402

PLOTS = ("report-loss.png", "report-eval.png", "report-throughput.png")  # what `figures` may draw
RESULT_FIELDS = ("best_step", "train_seconds", "world_size")  # shown after the result's primary metric
SPLITS = ("val", "test")  # evaluation rows: ``val/<metric>`` while training, ``test/<metric>`` at the end
THROUGHPUT = ("samples_per_s", "tokens_per_s")
COUNT_METRICS = ("samples", "count", "n")  # bookkeeping, not quality: not plotted
Series = dict[str, tuple[list[float], list[float]]]  # legend label -> (steps, values)


class ReportError(ValueError):
    """Nothing to report on; the message names the directory that was looked at."""


@dataclass
class RankMetrics:
    """One rank's rows, split into training and evaluation rows (last write per step wins)."""

    rank: int
    train: list[dict[str, Any]] = field(default_factory=list)
    eval: list[dict[str, Any]] = field(default_factory=list)
    skipped_lines: int = 0


@dataclass
class RunMetrics:
    run_dir: Path
    title: str
    ranks: dict[int, RankMetrics]
    result: dict[str, Any] | None


def _last_per_step(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows sorted by step; of repeated steps (a resume) keep the one written last."""
    by_step: dict[int, dict[str, Any]] = {}
    for row in rows:
        by_step[row["step"]] = row
    return [by_step[s] for s in sorted(by_step)]


def read_rank(path: Path, rank: int) -> RankMetrics:
    """Parse one JSONL file; a torn last line (a killed process) is skipped, not fatal."""
    train, evals, skipped = [], [], 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            skipped += 1
            continue
        if not isinstance(row, dict) or "step" not in row or "images" in row:
            continue
        if any(k.split("/", 1)[0] in SPLITS and "/" in k for k in row):
            evals.append(row)
        elif "loss" in row or "global_loss" in row or any(k in row for k in THROUGHPUT):
            train.append(row)
    return RankMetrics(rank, _last_per_step(train), _last_per_step(evals), skipped)


def _title(run_dir: Path) -> str:
    """`<job name> / <run id>`: the job name from the saved spec if there is one, else the path."""
    name = run_dir.parent.name
    for candidate in ("job.yaml", "config.yaml", "job.json", "config.json"):
        path = run_dir / candidate
        if path.is_file():
            try:
                from .yamlsafe import safe_load

                spec = safe_load(path.read_text())
                name = spec.get("name", name) if isinstance(spec, dict) else name
            except Exception:  # noqa: BLE001 - the title is cosmetic
                pass
            break
    return f"{name} / {run_dir.name}"


def collect(run_dir: Path) -> RunMetrics:
    """All ranks' metrics and result.json of a run dir; `ReportError` if there are none."""
    run_dir = Path(run_dir)
    metrics_dir = run_dir / "metrics"
    if not metrics_dir.is_dir():
        raise ReportError(f"no metrics directory {metrics_dir} (expected metrics/rank-<R>.jsonl from a training run)")
    ranks: dict[int, RankMetrics] = {}
    for path in metrics_dir.glob("rank-*.jsonl"):
        try:
            rank = int(path.stem.split("-", 1)[1])
        except ValueError:
            continue
        data = read_rank(path, rank)
        if data.train or data.eval:
            ranks[rank] = data
    if not ranks:
        raise ReportError(f"no metric rows in {metrics_dir} (no non-empty rank-<R>.jsonl): has the run logged a step yet?")
    result = None
    if (run_dir / "result.json").is_file():
        try:
            result = json.loads((run_dir / "result.json").read_text())
        except json.JSONDecodeError:
            result = None
    return RunMetrics(run_dir, _title(run_dir), dict(sorted(ranks.items())), result)


def _xy(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    pairs = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]
    return [float(s) for s, _ in pairs], [float(v) for _, v in pairs]


def eval_metric_names(run: RunMetrics) -> list[str]:
    """Global evaluation metrics present, as ``<split>/<metric>`` (no shard values, no sample
    counts): the primary metric first (from result.json, else accuracy), loss last."""
    names = {k for r in run.ranks.values() for row in r.eval for k in row
             if "/" in k and k.split("/", 1)[0] in SPLITS and "shard" not in k
             and k.split("/", 1)[1] not in COUNT_METRICS}
    primary = (run.result or {}).get("primary_metric", "test_accuracy").split("_", 1)[-1]
    return sorted(names, key=lambda m: (m.split("/", 1)[1] != primary, m.endswith("/loss"), m))


def throughput_key(run: RunMetrics) -> str:
    """samples_per_s, or tokens_per_s where the task counts tokens."""
    rows = [row for r in run.ranks.values() for row in r.train]
    return next((k for k in reversed(THROUGHPUT) if any(k in row for row in rows)), THROUGHPUT[0])


def series(run: RunMetrics) -> dict[str, Series]:
    """Exactly what each figure plots: figure -> legend label -> (steps, values).

    Figures: 'loss', 'throughput', and 'eval:<split>/<metric>' per global evaluation metric.
    Global values are all-reduced (equal on every rank): taken from the lowest rank.
    """
    out: dict[str, Series] = {"loss": {}, "throughput": {}}
    first = next(iter(run.ranks.values()))
    speed = throughput_key(run)
    for rank, data in run.ranks.items():
        steps, values = _xy(data.train, "loss")
        if steps:
            out["loss"][f"rank {rank}"] = (steps, values)
        steps, values = _xy(data.train, speed)
        if steps:
            out["throughput"][f"rank {rank}"] = (steps, values)
    steps, values = _xy(first.train, "global_loss")
    if steps:
        out["loss"]["global (mean over ranks)"] = (steps, values)
    for name in eval_metric_names(run):
        split, metric = name.split("/", 1)
        panel: Series = {}
        source = next((d for d in run.ranks.values() if _xy(d.eval, name)[0]), first)
        steps, values = _xy(source.eval, name)
        if steps:
            panel["global"] = (steps, values)
        for rank, data in run.ranks.items():
            steps, values = _xy(data.eval, f"{split}/shard_{metric}")
            if steps:
                panel[f"rank {rank} shard"] = (steps, values)
        out[f"eval:{name}"] = panel
    return {k: v for k, v in out.items() if v}


def figures(run: RunMetrics, data: dict[str, Series] | None = None) -> dict[str, Figure]:
    """Matplotlib figures by file name (not saved); `data` defaults to `series(run)`."""
    data = series(run) if data is None else data
    figs: dict[str, Figure] = {}
    n_ranks = len(run.ranks)

    if "loss" in data:
        fig, ax = plt.subplots(figsize=(9, 5))
        for label, (x, y) in data["loss"].items():
            is_global = label.startswith("global")
            ax.plot(x, y, label=label, color="black" if is_global else None,
                    linewidth=2.2 if is_global else 1.0, alpha=1.0 if is_global else 0.75,
                    marker="" if len(x) > 30 else ".")
        ax.set(title=f"{run.title}: training loss ({n_ranks} rank{'s' if n_ranks > 1 else ''})",
               xlabel="optimizer step", ylabel="loss (per-rank batch loss; global = all-reduced mean)")
        _log_scale_if_wide(ax, [v for _, y in data["loss"].values() for v in y])
        ax.grid(alpha=0.3)
        ax.legend()
        figs["report-loss.png"] = fig

    metrics = [k for k in data if k.startswith("eval:")]
    if metrics:
        fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4.5), squeeze=False)
        for ax, key in zip(axes[0], metrics):
            metric = key.split(":", 1)[1]
            for label, (x, y) in data[key].items():
                is_global = label == "global"
                ax.plot(x, y, label=label, marker="o" if is_global else "x",
                        linestyle="-" if is_global else "--", color="black" if is_global else None,
                        linewidth=2.2 if is_global else 1.0, zorder=1 if is_global else 2)
            label = metric.replace("/", " ")  # "val accuracy", "test accuracy"
            ax.set(title=f"{label} per evaluation", xlabel="optimizer step at evaluation", ylabel=label)
            ax.grid(alpha=0.3)
            ax.legend()
        fig.suptitle(f"{run.title}: evaluation (global and each rank's shard)")
        fig.tight_layout()
        figs["report-eval.png"] = fig

    if "throughput" in data:
        fig, ax = plt.subplots(figsize=(9, 4.5))
        for label, (x, y) in data["throughput"].items():
            ax.plot(x, y, label=label, marker="" if len(x) > 30 else ".")
        total = sum(sum(y) / len(y) for _, y in data["throughput"].values())
        unit = throughput_key(run).removesuffix("_per_s")
        ax.set(title=f"{run.title}: training throughput per rank (all ranks: {total:,.0f} {unit}/s)",
               xlabel="optimizer step",
               ylabel=f"{unit} / s (this rank)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend()
        figs["report-throughput.png"] = fig
    for fig in figs.values():
        for ax in fig.axes:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
    return figs


def _log_scale_if_wide(ax: Any, values: list[float]) -> None:
    """Loss curves spanning decades read better on a log axis."""
    positive = [v for v in values if v > 0 and math.isfinite(v)]
    if positive and len(positive) == len(values) and max(positive) / min(positive) > 50:
        ax.set_yscale("log")


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def table(run: RunMetrics) -> str:
    """The per-rank summary as fixed-width text."""
    name = (eval_metric_names(run) or ["test/accuracy"])[0]
    split, metric = name.split("/", 1)
    speed = throughput_key(run)
    head = ["rank", "rows", "last step", "final loss", "final global", f"{speed.replace('_per_s', '/s')} mean",
            f"{name} shard", f"{name} global"]
    rows = []
    for rank, d in run.ranks.items():
        losses = _xy(d.train, "loss")[1]
        global_losses = _xy(d.train, "global_loss")[1]
        speeds = _xy(d.train, speed)[1]
        last_eval = next((r for r in reversed(d.eval) if name in r or f"{split}/shard_{metric}" in r), {})
        steps = [r["step"] for r in d.train + d.eval]
        rows.append([
            str(rank), str(len(d.train)), str(max(steps)) if steps else "-",
            _fmt(losses[-1] if losses else None), _fmt(global_losses[-1] if global_losses else None),
            _fmt(sum(speeds) / len(speeds) if speeds else None, 5),
            _fmt(last_eval.get(f"{split}/shard_{metric}")), _fmt(last_eval.get(name)),
        ])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, rows)])


def report(run_dir: Path, out: TextIO | None = None, force: bool = False) -> list[Path]:
    """Write a run dir's PNG plots there, then print its summary (to `out`, default stdout: the
    plots are written even when a reader such as `head` closes it early); returns the PNG paths
    (the caller says where they went).  `ReportError` when the run dir has no metrics.  A PNG
    is written over one that report wrote before, over anything else only with `force`."""
    out = sys.stdout if out is None else out
    run = collect(Path(run_dir))
    for name in PLOTS:  # before any plot is drawn
        outputs.check_output(run.run_dir / name, "report", force, ours=True)
    plots = figures(run)
    written = []
    for name, fig in plots.items():
        data = outputs.png_bytes(fig, dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(outputs.write_output(run.run_dir / name, data, "report", force, ours=True))
    print(f"run: {run.title}  ({run.run_dir})", file=out)
    print(table(run), file=out)
    skipped = sum(d.skipped_lines for d in run.ranks.values())
    if skipped:
        print(f"note: skipped {skipped} unreadable line(s) (a process killed mid-write)", file=out)
    if not any(d.eval for d in run.ranks.values()):
        print("no evaluation yet: no test metrics to plot", file=out)
    if run.result is not None:
        keys = [run.result.get("primary_metric", "test_accuracy"), *RESULT_FIELDS]
        fields = {k: run.result[k] for k in keys if run.result.get(k) is not None}
        print("result.json: " + (", ".join(f"{k}={_fmt(v, 5)}" for k, v in fields.items()) or "(none of "
                                 + ", ".join(keys) + ")"), file=out)
    else:
        print("result.json: not written (run not finished?)", file=out)
    return written
