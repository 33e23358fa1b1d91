"""`lstm-train bench [JOB] [key=value ...]`: every loop on one job, side by side, in one process.

For any task's job (default: jobs/mnist_lstm.yaml, the tutorial's settings) it measures
one epoch (or `--max-steps`) of:
- lstm_train's loop (`lstm-train run` without tracking);
- the floor (`floor.py`): the same model's forward, backward and optimizer step on
  preloaded batches, no loop around it; lstm_train's epoch time over the floor's is
  the framework's overhead;
- the tutorial's script (`tutorial.py`), for classify jobs; pytorch/examples'
  word_language_model as published (`word_lm.py`), for language-model jobs;
- PyTorch Lightning at fp32 and bf16-mixed (`lightning_loop.py`), when installed.
Throughput is in the unit the task declares (samples/s, or tokens/s for text).
`--repeats N` alternates the loops N times and reports medians (a shared machine is
noisy); `--processes` adds the job on 1 and 2 processes; `--scaling` draws the scaling
curves instead (`scaling.py`).  This is a benchmark: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data.store import prepared
from ..config import JobBase, load_job, validate_job
from ..distributed import set_threads
from ..tasks import get_task
from . import lightning_loop, scaling
from .floor import floor_epoch
from .measure import (batch_plan, device_name, held_out, job_flops_per_sample, precision_of, primary, summarise,
                      trained_units)
from .ours import launch, lstm_train_epoch
from .tutorial import same_as_tutorial, tutorial_epoch
from .word_lm import word_lm_epoch

# The loop a user of each task would otherwise write, measured as "tutorial" beside ours.
PEERS = {"classify": "tutorial (torchvision + DataLoader)",
         "language_model": "pytorch/examples word_language_model (fp32)"}

REPO_JOB = Path(__file__).resolve().parents[2] / "jobs" / "mnist_lstm.yaml"
DEFAULT_JOB: dict[str, Any] = {  # where jobs/mnist_lstm.yaml is not at hand (an installed package)
    "name": "bench_tutorial",
    "task": "classify",
    "data": {"dataset": "mnist", "batch_size": 64},
    "model": {"hidden_size": 64, "num_layers": 1, "bidirectional": False, "dropout": 0.0},
    "optim": {"name": "adam", "lr": 0.01},
    "train": {"epochs": 1, "seed": 1},
}


def load_bench_job(args: argparse.Namespace, device: torch.device) -> JobBase:
    """The job to bench (any task), one epoch, on `device`."""
    overrides = list(args.overrides or [])
    job_path = args.job
    if job_path and "=" in job_path and not Path(job_path).exists():  # `bench key=value` without a job file
        overrides.insert(0, job_path)
        job_path = None
    if job_path:
        job = load_job(job_path, overrides)
    elif REPO_JOB.is_file():  # the repository's tutorial job, whatever it has been tuned to
        job = load_job(REPO_JOB, overrides)
    else:
        import yaml

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "bench_tutorial.yaml"
            path.write_text(yaml.safe_dump(DEFAULT_JOB))
            job = load_job(path, overrides)
    spec = job.to_dict()
    spec["train"]["epochs"] = 1
    spec["train"]["cpu"] = device.type == "cpu"
    return validate_job(spec, "bench")


def pick_device(name: str | None) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device visible here")
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def ratio(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str = "per_s") -> float | None:
    """a's throughput over b's (> 1: a is faster)."""
    if not a or not b:
        return None
    return round(a[key] / max(b[key], 1e-9), 3)


def difference(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float | None:
    """a's metric minus b's, where both have one."""
    if not a or not b or a["metric"] is None or b["metric"] is None:
        return None
    return round(a["metric"] - b["metric"], 4)


@dataclass
class Race:
    """What every loop of one `lstm-train bench` runs on: the job, its data (each loop scored on the
    held-out split `scored`, named `eval_split`), the device and the machine's settings."""

    job: JobBase
    task: Any
    splits: Any
    eval_split: str
    scored: Any
    device: torch.device
    threads: int
    max_steps: int | None
    log: Any

    @property
    def metric(self) -> str:
        return f"{self.eval_split}_{self.task.primary_metric}"


def main(args: argparse.Namespace) -> int:
    device = pick_device(args.device)
    job = load_bench_job(args, device)
    if args.scaling:
        return scaling.main(job, device, args)
    threads = set_threads(job.train.threads)
    repeats = max(1, args.repeats or 1)
    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731

    task = get_task(job.task)(job)
    splits = prepared.load(task).to(device)  # the one data path: the store, as a run reads it
    eval_split, scored = held_out(splits)  # test, or validation where the data has no test split
    race = Race(job, task, splits, eval_split, scored, device, threads, args.max_steps, log)
    tutorial_status = ("skipped (--skip-tutorial)" if args.skip_tutorial else None if job.task in PEERS
                       else f"not applicable (the tutorial is MNIST classification; this is {job.task})")
    lightning_status = ("skipped (--skip-lightning)" if args.skip_lightning
                        else lightning_loop.unavailable(splits.train, job.task))
    load_start = [round(x, 2) for x in os.getloadavg()]  # 1, 5, 15-minute: how busy the machine was
    runs: dict[str, list[dict[str, Any]]] = {"tutorial": [], "lstm_train": [], "floor": [], "fp32": [], "bf16": []}
    precision = precision_of(job, device)
    plan = batch_plan(job, task, splits.train)
    peer_failures: dict[str, str] = {}  # a peer that cannot run here is reported, not fatal
    for r in range(repeats):
        tag = f"[bench] repeat {r + 1}/{repeats}:"
        if tutorial_status is None:
            runs["tutorial"].append(tutorial_loop(race, precision, tag))
        precision = ours_and_floor(race, plan, precision, runs, tag)
        if lightning_status is None:
            lightning_status = lightning_loops(race, args.lightning_optimizer, runs, peer_failures, tag)
        for name, measured in runs.items():
            if measured and len(measured) == r + 1:
                log(f"[bench]   {name}: epoch {measured[-1]['epoch_s']:.2f} s, {race.metric} {measured[-1]['metric']}")

    report = report_of(race, runs, precision, repeats, args.lightning_optimizer, load_start,
                       tutorial_status or "measured", lightning_status or "measured")
    if args.processes:
        report["processes"] = measure_processes(job, device, task, splits.train, report["flops_per_sample"],
                                                args.max_steps, log)
    report["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def tutorial_loop(race: Race, precision: str, tag: str) -> dict[str, Any]:
    """The loop a user of this task would otherwise write (`PEERS`), one epoch."""
    torch.set_num_threads(race.threads)
    race.log(f"{tag} the tutorial's loop on {race.device}, {race.threads} thread(s)")
    job, device = race.job, race.device
    if job.task == "classify":
        return tutorial_epoch(job, device, race.max_steps, race.log)
    return word_lm_epoch(job, race.task, race.splits, race.scored, device, precision, race.max_steps, race.log)


def ours_and_floor(race: Race, plan: Any, precision: str, runs: dict[str, list[dict[str, Any]]], tag: str) -> str:
    """lstm_train's loop, then the floor on as many steps; the precision lstm_train's loop ran at."""
    race.log(f"{tag} lstm_train's loop")
    ours, result = lstm_train_epoch(race.job, race.max_steps)
    precision = ours.get("precision", precision)
    trained, samples = trained_units(race.task, race.splits.train, plan, ours["steps"])
    ours.update(units=trained, samples=samples, metric=primary(race.task, result))
    runs["lstm_train"].append(ours)
    race.log(f"{tag} the floor ({precision})")
    torch.set_num_threads(race.threads)
    runs["floor"].append(floor_epoch(race.job, race.task, race.splits.train, race.scored, race.splits.info,
                                     race.device, precision, ours["steps"]))
    return precision


def lightning_loops(race: Race, optimizer: str, runs: dict[str, list[dict[str, Any]]], failures: dict[str, str],
                    tag: str) -> str | None:
    """Lightning at each precision that has not failed here (a failure is noted in `failures` and left
    out); what to report instead of Lightning's numbers once every precision has failed, else None."""
    for name in lightning_loop.PRECISIONS:
        if name in failures:
            continue
        race.log(f"{tag} Lightning {name}")
        try:
            runs[name].append(lightning_loop.lightning_epoch(race.job, race.task, race.splits.train, race.scored,
                                                             race.splits.info, race.device, name, race.threads,
                                                             race.max_steps, optimizer))
        except RuntimeError as e:  # e.g. oneDNN has no bf16 LSTM primitive for this shape on this CPU
            failures[name] = str(e).strip().splitlines()[-1][:200]
            race.log(f"[bench] Lightning {name} failed on this machine, left out: {failures[name]}")
    if len(failures) == len(lightning_loop.PRECISIONS):
        return "failed on this machine: " + next(iter(failures.values()))
    return None


def report_of(race: Race, runs: dict[str, list[dict[str, Any]]], precision: str, repeats: int,
              lightning_optimizer: str, load_start: list[float], tutorial_status: str,
              lightning_status: str) -> dict[str, Any]:
    """The races' medians side by side, with the ratios the report leads with."""
    job = race.job
    flops = job_flops_per_sample(job)
    tutorial_flops = job_flops_per_sample(job.model_copy(update={"model": job.model.model_copy(
        update={"bidirectional": False})})) if job.task == "classify" else None  # its model is one-directional
    summary = {k: summarise(v, tutorial_flops if k == "tutorial" else flops) if v else None for k, v in runs.items()}
    lightning = {k: summary[k] for k in lightning_loop.PRECISIONS if summary[k]} or None
    fastest = max(lightning, key=lambda k: lightning[k]["per_s"]) if lightning else None
    ours_s, floor_s, tutorial_s = summary["lstm_train"], summary["floor"], summary["tutorial"]
    return {
        "job": job.name,
        "task": job.task,
        "unit": race.task.throughput_unit,
        "metric": race.metric,
        "eval_split": race.eval_split,
        "device": device_name(race.device),
        "torch": torch.__version__,
        "threads": race.threads,
        "precision": precision,
        "compile": job.train.compile,
        "repeats": repeats,
        "max_steps": race.max_steps,
        "flops_per_sample": flops,
        "vocab_size": race.splits.info.get("vocab_size"),  # a language model's softmax width
        "same_settings": same_as_tutorial(job),
        "lstm_train": ours_s,
        "floor": floor_s,
        # Epoch-time ratio at equal work: how much longer lstm_train's loop takes than the bare step.
        "floor_ratio": ratio(floor_s, ours_s),
        "floor_ratio_cpu": ratio(floor_s, ours_s, "per_cpu_s"),
        "tutorial": tutorial_s,
        "tutorial_status": tutorial_status,
        "speedup": ratio(ours_s, tutorial_s),
        "speedup_cpu": ratio(ours_s, tutorial_s, "per_cpu_s"),
        "metric_delta": difference(ours_s, tutorial_s),
        "lightning": lightning,
        "lightning_status": lightning_status,
        "lightning_optimizer": lightning_optimizer,
        "lightning_fastest": fastest,
        "vs_lightning": ratio(ours_s, lightning[fastest]) if fastest else None,
        "load_average": load_start,
        "cpu_count": os.cpu_count(),
    }


def measure_processes(job: JobBase, device: torch.device, task: Any, train: Any, flops: float | None,
                      max_steps: int | None, log: Any) -> dict[str, Any] | None:
    """The job on 1 and on 2 processes (each a fresh launch), per-process batch unchanged."""
    if device.type == "cuda" and torch.cuda.device_count() < 2:
        log("[bench] --processes: fewer than 2 GPUs visible; skipped")
        return None
    procs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="lstm-bench-procs-") as tmp:
        for n in (1, 2):
            log(f"[bench] {n} process(es)")
            run, result = launch(job, n, Path(tmp), max_steps)
            trained, samples = trained_units(task, train, batch_plan(job, task, train, n), run["steps"])
            run.update(units=trained, samples=samples, metric=primary(task, result))
            procs[str(n)] = summarise([run], flops)
    procs["scaling"] = ratio(procs["2"], procs["1"])
    return procs


def signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.4f}"


def format_report(report: dict[str, Any]) -> str:
    unit, metric = report["unit"], report["metric"]
    lines = [
        f"device {report['device']}, torch {report['torch']}, {report['threads']} thread(s) per process, "
        f"precision {report['precision']}, {report['repeats']} repeat(s), load average {report['load_average']}",
        f"job {report['job']} ({report['task']}): throughput in {unit}/s, metric {metric}"
        + (f", {report['flops_per_sample'] / 1e6:.2f} MFLOP per training sample" if report["flops_per_sample"] else ""),
        f"{'loop':40s} {unit + '/s':>11s} {'epoch s':>8s} {'CPU s':>7s} {'eval s':>7s} {metric:>14s} {'GFLOP/s':>8s}",
    ]

    def row(name: str, r: dict[str, Any]) -> str:
        gflops = f"{r['gflops']:8.2f}" if "gflops" in r else f"{'-':>8s}"
        value = f"{r['metric']:14.4f}" if r["metric"] is not None else f"{'-':>14s}"
        return f"{name:40s} {r['per_s']:11.0f} {r['epoch_s']:8.2f} {r['cpu_s']:7.2f} {r['eval_s']:7.2f} {value} {gflops}"

    if report["tutorial"]:
        lines.append(row(PEERS.get(report["task"], "tutorial"), report["tutorial"]))
        if "parameters" in report["tutorial"] and "parameters" in report["floor"]:
            lines.append(f"{'':40s} parameters: {report['tutorial']['parameters']:,} (lstm_train's model: "
                         f"{report['floor']['parameters']:,}); vocabulary {report['vocab_size']:,}")
    else:
        lines.append(f"{'tutorial':40s} {report['tutorial_status']}")
    if report["lightning"]:
        for name, r in report["lightning"].items():
            lines.append(row(f"Lightning {r['precision']} ({report['lightning_optimizer']} optim.)", r))
    else:
        lines.append(f"{'Lightning':40s} {report['lightning_status']}")
    lines.append(row(f"lstm_train ({report['precision']})", report["lstm_train"]))
    lines.append(row(f"floor ({report['floor']['mode']}, {report['precision']})", report["floor"]))
    ours = report["lstm_train"]
    lines.append(f"framework overhead: lstm_train's epoch takes {report['floor_ratio']:.2f}x the floor's "
                 f"({report['floor_ratio_cpu']:.2f}x in CPU time)")
    if report["speedup"] is not None:
        note = "" if report["same_settings"] else "  (the job's settings differ from the tutorial's)"
        lines.append(f"lstm_train vs the tutorial: {report['speedup']:.2f}x {unit}/s ({report['speedup_cpu']:.2f}x "
                     f"per CPU second), {metric} {signed(report['metric_delta'])}{note}")
    if report["vs_lightning"] is not None:
        best = report["lightning"][report["lightning_fastest"]]
        lines.append(f"lstm_train vs Lightning at its fastest ({best['precision']}): {report['vs_lightning']:.2f}x "
                     f"{unit}/s, {metric} {signed(difference(ours, best))}")
    procs = report.get("processes")
    if procs:
        for n in ("1", "2"):
            lines.append(row(f"lstm_train, {n} process(es)", procs[n]))
        lines.append(f"2-process scaling: {procs['scaling']:.2f}x {unit}/s of 1 process")
    return "\n".join(lines)
