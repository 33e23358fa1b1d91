"""`lstm-train bench --scaling`: where the time goes and what a bigger job costs.

From the job (default: the tutorial's), one thing changed at a time:
- sequence length: 28 rows of 28 pixels vs 784 pixels of 1 (classify jobs only);
- hidden size (default 64 ... 1024);
- batch size per process (default 16 ... 512);
- processes: 1 and 2 (`accelerate launch`, per-process batch unchanged).
Each point measures the floor for a short window (`--seconds`, at most `--max-steps`
steps, default 300) and then lstm_train's loop for the same number of steps, so every
point costs a few seconds however big the model.  Writes `scaling.json`, `scaling.md`
(the table) and `scaling.png` (throughput per axis, floor and lstm_train) to `--out`, through
the writers' gate (`files.outputs`): checked before any point is measured, an existing file
replaced only with `--force` (the PNG also when bench wrote it), never a run's own file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..data.store import prepared
from ..config import JobBase, validate_job
from ..distributed import set_threads
from ..files import outputs
from ..tasks import get_task
from .floor import floor_epoch
from .measure import (batch_plan, device_name, held_out, job_flops_per_sample, precision_of, primary, summarise,
                      trained_units)
from .ours import launch, lstm_train_epoch

HIDDEN_SIZES = (64, 128, 256, 512, 1024)
BATCH_SIZES = (16, 32, 64, 128, 256, 512)
MAX_STEPS = 300
AXES = ("sequence", "hidden", "batch", "processes")


def variant(job: JobBase, **changes: Any) -> JobBase:
    """The job with dotted keys changed, e.g. variant(job, **{"model.hidden_size": 256})."""
    spec = job.to_dict()
    for key, value in changes.items():
        section, name = key.split(".")
        spec[section][name] = value
    return validate_job(spec, "bench --scaling")


def points(job: JobBase, hidden: tuple[int, ...], batch: tuple[int, ...]) -> list[tuple[str, str, JobBase]]:
    """(axis, label, job) for every point of the sweep."""
    out: list[tuple[str, str, JobBase]] = []
    if job.task == "classify":
        out += [("sequence", label, variant(job, **{"data.sequence": seq}))
                for seq, label in (("rows", "28 rows x 28"), ("pixels", "784 pixels x 1"))]
    out += [("hidden", str(h), variant(job, **{"model.hidden_size": h})) for h in hidden]
    out += [("batch", str(b), variant(job, **{"data.batch_size": b})) for b in batch]
    out += [("processes", str(n), job) for n in (1, 2)]
    return out


def measure_point(axis: str, label: str, job: JobBase, device: torch.device, seconds: float, max_steps: int,
                  workdir: Path) -> dict[str, Any]:
    """The floor for a short window, then lstm_train's loop for as many steps."""
    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731
    task = get_task(job.task)(job)
    splits = prepared.load(task).to(device)  # the one data path: the store, as a run reads it
    flops = job_flops_per_sample(job)
    processes = int(label) if axis == "processes" else 1
    set_threads(job.train.threads)
    floor = floor_epoch(job, task, splits.train, held_out(splits)[1], splits.info, device, precision_of(job, device),
                        max_steps, seconds)
    steps = floor["steps"]
    log(f"[scaling] {axis} {label}: floor {steps} steps in {floor['epoch_s']:.2f} s; lstm_train the same steps")
    if processes == 1:
        ours, result = lstm_train_epoch(job, steps)
    else:
        ours, result = launch(job, processes, workdir, steps)
    trained, samples = trained_units(task, splits.train, batch_plan(job, task, splits.train, processes), ours["steps"])
    ours.update(units=trained, samples=samples, metric=primary(task, result))
    out = {"axis": axis, "value": label, "processes": processes, "batch_size": job.data.batch_size,
           "hidden_size": job.model.hidden_size, "steps": steps,
           "lstm_train": summarise([ours], flops), "floor": summarise([floor], flops) if processes == 1 else None}
    if out["floor"]:
        out["floor_ratio"] = round(out["floor"]["per_s"] / max(out["lstm_train"]["per_s"], 1e-9), 3)
    return out


def table(report: dict[str, Any]) -> str:
    """The sweep as a Markdown table (the README's performance section shows one)."""
    unit = report["unit"]
    lines = [f"| axis | value | steps | floor {unit}/s | lstm_train {unit}/s | lstm_train / floor time | "
             f"lstm_train GFLOP/s |", "|---|---|---|---|---|---|---|"]
    for p in report["points"]:
        floor = f"{p['floor']['per_s']:,.0f}" if p["floor"] else "-"
        ratio = f"{p['floor_ratio']:.2f}x" if p.get("floor_ratio") else "-"
        gflops = f"{p['lstm_train']['gflops']:.1f}" if "gflops" in p["lstm_train"] else "-"
        lines.append(f"| {p['axis']} | {p['value']} | {p['steps']} | {floor} | {p['lstm_train']['per_s']:,.0f} | "
                     f"{ratio} | {gflops} |")
    return "\n".join(lines)


FILES = ("scaling.json", "scaling.md", "scaling.png")  # what --out receives


def plot(report: dict[str, Any]) -> bytes:
    """One panel per axis: throughput of the floor and of lstm_train's loop (log scale), as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes_present = [a for a in AXES if any(p["axis"] == a for p in report["points"])]
    fig, panels = plt.subplots(1, len(axes_present), figsize=(4 * len(axes_present), 3.6), squeeze=False)
    titles = {"sequence": "sequence length", "hidden": "hidden size", "batch": "batch size per process",
              "processes": "processes (same per-process batch)"}
    for panel, axis in zip(panels[0], axes_present):
        pts = [p for p in report["points"] if p["axis"] == axis]
        xs = list(range(len(pts)))
        panel.plot(xs, [p["lstm_train"]["per_s"] for p in pts], "o-", label="lstm_train")
        floor = [(x, p["floor"]["per_s"]) for x, p in zip(xs, pts) if p["floor"]]
        if floor:
            panel.plot([x for x, _ in floor], [y for _, y in floor], "s--", label="floor")
        panel.set_xticks(xs, [p["value"] for p in pts], fontsize=8)
        panel.set_yscale("log")
        panel.set_title(titles[axis], fontsize=10)
        panel.grid(True, which="both", alpha=0.3)
    panels[0][0].set_ylabel(f"{report['unit']}/s")
    panels[0][0].legend(fontsize=8)
    fig.suptitle(f"{report['job']}: {report['device']}, {report['precision']}, "
                 f"{report['threads']} thread(s)/process", fontsize=10)
    fig.tight_layout()
    data = outputs.png_bytes(fig, dpi=110)
    plt.close(fig)
    return data


def sizes(text: str | None, default: tuple[int, ...]) -> tuple[int, ...]:
    if not text:
        return default
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"expected comma-separated integers like 64,256, got {text!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"sizes must be positive integers, got {text!r}")
    return values


def main(job: JobBase, device: torch.device, args: argparse.Namespace) -> int:
    out_dir, force = Path(args.out or "bench-scaling"), bool(getattr(args, "force", False))
    for name in FILES:  # before minutes of measuring: a refused output is refused now
        outputs.check_output(out_dir / name, "--out", force, ours=name.endswith(".png"))
    seconds = args.seconds
    max_steps = args.max_steps or MAX_STEPS
    hidden, batch = sizes(args.hidden_sizes, HIDDEN_SIZES), sizes(args.batch_sizes, BATCH_SIZES)
    task = get_task(job.task)
    report: dict[str, Any] = {
        "job": job.name, "task": job.task, "unit": task.throughput_unit, "device": device_name(device),
        "torch": torch.__version__, "threads": job.train.threads or 1, "precision": precision_of(job, device),
        "seconds_per_point": seconds, "max_steps": max_steps, "load_average": [round(x, 2) for x in os.getloadavg()],
        "points": [],
    }
    with tempfile.TemporaryDirectory(prefix="lstm-bench-scaling-") as tmp:
        for axis, label, point_job in points(job, hidden, batch):
            if axis == "processes" and device.type == "cuda" and torch.cuda.device_count() < 2:
                continue
            report["points"].append(measure_point(axis, label, point_job, device, seconds, max_steps, Path(tmp)))
    report["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    markdown = table(report)
    for name, data in zip(FILES, (json.dumps(report, indent=2) + "\n", markdown + "\n", plot(report))):
        outputs.write_output(out_dir / name, data, "--out", force, ours=name.endswith(".png"))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{report['job']} on {report['device']}, precision {report['precision']}, "
              f"{report['threads']} thread(s) per process, load average {report['load_average']}")
        print(markdown)
        print(f"wrote {out_dir / 'scaling.png'}, {out_dir / 'scaling.md'}, {out_dir / 'scaling.json'}")
    return 0
