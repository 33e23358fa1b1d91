"""`lstm-train bench`: the tutorial's loop and lstm_train's, side by side, in one process.

(a) the tutorial's loop exactly as published: torchvision's MNIST (or Fashion-MNIST)
    Dataset with ToTensor, DataLoader(batch_size=64, shuffle=True), the tutorial's
    `simpleLSTM` (nn.LSTM(28, 64) fed explicit zero states + Linear(64, 10)),
    Adam(lr=0.01), cross-entropy, `loss.item()` printed every 100 steps, then the
    test set through DataLoader(batch_size=64, shuffle=False).
(b) lstm_train's own loop: `lstm_train.train.train()` on the job (default:
    jobs/mnist_lstm.yaml, the tutorial's settings), one epoch, tracking disabled, a
    temporary run directory and no checkpoint until the end.

Both run on the same data, machine and torch thread count; the epoch time is the
training loop alone (evaluation is timed apart).  `--repeats N` alternates a, b,
a, b, ... and reports medians, since a shared machine is noisy.  `--processes`
adds the same job trained by 1 process and by 2 (`accelerate launch --multi_gpu
--num_processes 2`, a gloo group on CPU), each a fresh subprocess.

Achieved GFLOP/s are counted analytically: per sample, each LSTM layer and
direction does 4 gates x H x (I + H) multiply-adds per step (2 FLOPs each), the
head 2 x features x classes, and the backward pass about twice the forward.
This is a benchmark, not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from .config import JobBase, load_job, save_job, validate_job

# The tutorial's hyperparameters (lstm-tutorial, section 2.1), also the default job.
TUTORIAL = {"batch_size": 64, "time_step": 28, "input_size": 28, "hidden_size": 64, "num_layers": 1,
            "num_classes": 10, "lr": 0.01, "epochs": 1, "seed": 1}
REPO_JOB = Path(__file__).resolve().parents[1] / "jobs" / "mnist_lstm.yaml"
DEFAULT_JOB: dict[str, Any] = {  # used where jobs/mnist_lstm.yaml is not at hand (an installed package)
    "name": "bench_tutorial",
    "task": "classify",
    "data": {"dataset": "mnist", "batch_size": 64},
    "model": {"hidden_size": 64, "num_layers": 1, "bidirectional": False, "dropout": 0.0},
    "optim": {"name": "adam", "lr": 0.01},
    "train": {"epochs": 1, "seed": 1},
}


# ---------------------------------------------------------------------------
# FLOP count


def lstm_flops_per_sample(steps: int, input_size: int, hidden: int, layers: int, bidirectional: bool,
                          classes: int) -> float:
    """Forward + backward FLOPs of one sample (matrix products only; backward = 2 x forward)."""
    dirs = 2 if bidirectional else 1
    forward = 0.0
    for layer in range(layers):
        inp = input_size if layer == 0 else hidden * dirs
        forward += dirs * steps * 2 * 4 * hidden * (inp + hidden)
    forward += 2 * hidden * dirs * classes
    return 3 * forward


def job_flops_per_sample(job: JobBase) -> float:
    """FLOPs per training sample of a classify job on 28 x 28 images."""
    height = width = 28
    if getattr(job.data, "sequence", "rows") == "pixels":
        steps, inp = height * width, 1
    else:
        steps, inp = height, width
    m = job.model
    return lstm_flops_per_sample(steps, inp, m.hidden_size, m.num_layers, m.bidirectional, 10)


# ---------------------------------------------------------------------------
# (a) the tutorial's loop


def tutorial_epoch(root: str, dataset: str, device: torch.device, max_steps: int | None = None,
                   log=print) -> dict[str, Any]:
    """The tutorial's script, one epoch, timed: training loop and test pass apart."""
    import torchvision.datasets as dsets
    import torchvision.transforms as transforms
    from torch import nn
    from torch.utils.data import DataLoader

    from .data.mnist import FOLDERS

    t = TUTORIAL
    torch.manual_seed(t["seed"])
    cls = getattr(dsets, FOLDERS[dataset])
    train_data = cls(root=root, train=True, transform=transforms.ToTensor(), download=False)
    test_data = cls(root=root, train=False, transform=transforms.ToTensor())
    train_loader = DataLoader(dataset=train_data, batch_size=t["batch_size"], shuffle=True)
    test_loader = DataLoader(dataset=test_data, batch_size=t["batch_size"], shuffle=False)

    class simpleLSTM(nn.Module):  # noqa: N801 - the tutorial's name
        def __init__(self, input_size, hidden_size, num_layers, num_classes):
            super().__init__()
            self.hidden_size = hidden_size
            self.num_layers = num_layers
            self.lstm = nn.LSTM(input_size, hidden_size, num_layers, batch_first=True)
            self.fc = nn.Linear(hidden_size, num_classes)

        def forward(self, x):
            h0 = torch.zeros(self.num_layers, x.size(0), self.hidden_size).to(device)
            c0 = torch.zeros(self.num_layers, x.size(0), self.hidden_size).to(device)
            out, (h_n, h_c) = self.lstm(x, (h0, c0))
            return self.fc(out[:, -1, :])

    model = simpleLSTM(t["input_size"], t["hidden_size"], t["num_layers"], t["num_classes"]).to(device)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), t["lr"])
    total_step = len(train_loader)
    time_step, input_size = t["time_step"], t["input_size"]

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start, start_cpu = time.perf_counter(), time.process_time()
    steps = samples = 0
    for epoch in range(t["epochs"]):
        for i, (images, labels) in enumerate(train_loader):
            images = images.reshape(-1, time_step, input_size).to(device)
            labels = labels.to(device)
            outputs = model(images)
            loss = criterion(outputs, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
            samples += len(labels)
            if i % 100 == 0:
                log("Epoch [{}/{}], Step [{}/{}], Loss: {:.4f}".format(epoch + 1, t["epochs"], i + 1, total_step,
                                                                       loss.item()))
            if max_steps and steps >= max_steps:
                break
    sync()
    epoch_s, cpu_s = time.perf_counter() - start, time.process_time() - start_cpu

    start = time.perf_counter()
    model.eval()
    with torch.no_grad():
        correct = 0
        total = 0
        for images, labels in test_loader:
            images = images.reshape(-1, time_step, input_size).to(device)
            labels = labels.to(device)
            outputs = model(images)
            _, predicted = torch.max(outputs.data, 1)
            total += labels.size(0)
            correct += (predicted == labels).sum().item()
    eval_s = time.perf_counter() - start
    return {"steps": steps, "samples": samples, "epoch_s": epoch_s, "cpu_s": cpu_s, "eval_s": eval_s,
            "test_accuracy": correct / total}


# ---------------------------------------------------------------------------
# (b) lstm_train's loop


def reset_accelerate() -> None:
    """Forget accelerate's process-wide state, so the next train() may use other settings."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    if not torch.distributed.is_initialized():
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
        PartialState._reset_state()


def bench_job(job: JobBase, output_dir: Path, max_steps: int | None = None) -> JobBase:
    """The job as the bench trains it: one epoch, no tracking, no checkpoint until the end."""
    spec = job.to_dict()
    train = spec["train"]
    train.update(output_dir=str(output_dir), checkpoint_every=10**9, keep_checkpoints=1, eval_every_epochs=1)
    if max_steps:
        train["max_steps"] = max_steps
    spec["tracking"]["wandb"]["mode"] = "disabled"
    spec["sweep"] = None
    return validate_job(spec, "bench")


def lstm_train_epoch(job: JobBase, max_steps: int | None = None) -> dict[str, Any]:
    """lstm_train.train.train() on the job, in this process; its stdout goes to stderr."""
    from .train import train

    reset_accelerate()
    with tempfile.TemporaryDirectory(prefix="lstm-bench-") as tmp:
        run = bench_job(job, Path(tmp) / "run", max_steps)
        with contextlib.redirect_stdout(sys.stderr):
            result = train(run)
    return from_result(result, job.data.batch_size)


def from_result(result: dict[str, Any], batch_size: int) -> dict[str, Any]:
    """Epoch time (training loop without evaluation), samples and accuracy from a result.json."""
    eval_s = float(result.get("eval_seconds", 0.0))
    epoch_s = float(result["train_seconds"]) - eval_s
    cpu_s = float(result.get("train_cpu_seconds", math.nan)) - float(result.get("eval_cpu_seconds", 0.0))
    samples = int(result["steps"]) * batch_size * int(result.get("world_size", 1))
    return {"steps": int(result["steps"]), "samples": samples, "epoch_s": epoch_s, "cpu_s": cpu_s, "eval_s": eval_s,
            "test_accuracy": float(result["test_accuracy"]), "world_size": int(result.get("world_size", 1))}


# ---------------------------------------------------------------------------
# 1 vs 2 processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(job: JobBase, processes: int, workdir: Path, max_steps: int | None) -> dict[str, Any]:
    """Train the job in fresh process(es): `python -m lstm_train run` or `accelerate launch` for > 1."""
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
    out = from_result(json.loads(result_file.read_text()), job.data.batch_size)
    out["command"] = " ".join(cmd)
    return out


# ---------------------------------------------------------------------------
# Reporting


def summarise(runs: list[dict[str, Any]], flops: float) -> dict[str, Any]:
    """Medians over repeats: samples/s, epoch seconds, GFLOP/s; every repeat's epoch time too."""
    epoch_s = statistics.median(r["epoch_s"] for r in runs)
    cpu_s = statistics.median(r["cpu_s"] for r in runs)
    samples = runs[0]["samples"]
    out = {
        "samples_per_s": round(samples / max(epoch_s, 1e-9), 1),
        "epoch_s": round(epoch_s, 3),
        "cpu_s": round(cpu_s, 3),
        "samples_per_cpu_s": round(samples / max(cpu_s, 1e-9), 1),  # this process's CPU time: steadier when busy
        "test_accuracy": round(statistics.median(r["test_accuracy"] for r in runs), 4),
        "eval_s": round(statistics.median(r["eval_s"] for r in runs), 3),
        "steps": runs[0]["steps"],
        "samples": samples,
        "gflops": round(flops * samples / max(epoch_s, 1e-9) / 1e9, 2),
        "epoch_s_all": [round(r["epoch_s"], 3) for r in runs],
    }
    if "world_size" in runs[0]:
        out["world_size"] = runs[0]["world_size"]
    return out


def same_as_tutorial(job: JobBase) -> bool:
    m, o = job.model, job.optim
    return (job.task == "classify" and job.data.batch_size == TUTORIAL["batch_size"]
            and m.hidden_size == TUTORIAL["hidden_size"] and m.num_layers == TUTORIAL["num_layers"]
            and not m.bidirectional and o.name == "adam" and o.lr == TUTORIAL["lr"]
            and o.scheduler == "none" and not o.weight_decay and not o.grad_clip
            and getattr(job.data, "sequence", "rows") == "rows")


def load_bench_job(args: argparse.Namespace) -> JobBase:
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
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "bench_tutorial.yaml"
            import yaml

            path.write_text(yaml.safe_dump(DEFAULT_JOB))
            job = load_job(path, overrides)
    if job.task != "classify":
        raise ValueError(f"bench needs a classify job (it races the tutorial's MNIST classifier); "
                         f"{job.name} is a {job.task} job")
    spec = job.to_dict()
    spec["train"]["epochs"] = 1
    return validate_job(spec, "bench")


def print_table(report: dict[str, Any]) -> None:
    rows = [("tutorial (torchvision + DataLoader)", report.get("tutorial")), ("lstm_train", report["lstm_train"])]
    print(f"device {report['device']}, torch {report['torch']}, {report['threads']} thread(s) per process, "
          f"{report['repeats']} repeat(s), load average {report['load_average']}")
    print(f"job {report['job']}: {report['flops_per_sample'] / 1e6:.2f} MFLOP per training sample")
    header = f"{'loop':38s} {'samples/s':>10s} {'epoch s':>8s} {'CPU s':>7s} {'eval s':>7s} {'test acc':>9s} {'GFLOP/s':>8s}"
    line = lambda name, r: (f"{name:38s} {r['samples_per_s']:10.0f} {r['epoch_s']:8.2f} {r['cpu_s']:7.2f} "  # noqa: E731
                            f"{r['eval_s']:7.2f} {r['test_accuracy']:9.4f} {r['gflops']:8.2f}")
    print(header)
    for name, r in rows:
        if r:
            print(line(name, r))
    if report.get("speedup"):
        note = "" if report["same_settings"] else "  (job's settings differ from the tutorial's)"
        print(f"speedup (lstm_train samples/s over the tutorial's): {report['speedup']:.2f}x wall, "
              f"{report['speedup_cpu']:.2f}x CPU time; accuracy difference {report['accuracy_delta']:+.4f}{note}")
    procs = report.get("processes")
    if procs:
        for n in ("1", "2"):
            print(line(f"lstm_train, {n} process(es)", procs[n]))
        print(f"2-process scaling: {procs['scaling']:.2f}x samples/s of 1 process")


def main(args: argparse.Namespace) -> int:
    job = load_bench_job(args)
    if args.device == "cpu" or (args.device is None and not torch.cuda.is_available()):
        device_type = "cpu"
    else:
        if not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device visible here")
        device_type = "cuda"
    if device_type == "cpu" and not job.train.cpu:
        spec = job.to_dict()
        spec["train"]["cpu"] = True
        job = validate_job(spec, "bench")
    device = torch.device(device_type)
    threads = job.train.threads or 1  # what lstm_train.distributed.set_threads gives each process
    max_steps = getattr(args, "max_steps", None)
    repeats = max(1, getattr(args, "repeats", 1) or 1)
    skip_tutorial = bool(getattr(args, "skip_tutorial", False))
    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731

    flops = job_flops_per_sample(job)
    load_start = [round(x, 2) for x in os.getloadavg()]  # 1, 5, 15-minute: how busy the machine was
    tutorial_runs: list[dict[str, Any]] = []
    ours: list[dict[str, Any]] = []
    for r in range(repeats):
        if not skip_tutorial:
            torch.set_num_threads(threads)
            log(f"[bench] repeat {r + 1}/{repeats}: (a) the tutorial's loop on {device}, {threads} thread(s)")
            tutorial_runs.append(tutorial_epoch(job.data.root, job.data.dataset, device, max_steps, log))
            log(f"[bench]   epoch {tutorial_runs[-1]['epoch_s']:.2f} s, "
                f"test accuracy {tutorial_runs[-1]['test_accuracy']:.4f}")
        log(f"[bench] repeat {r + 1}/{repeats}: (b) lstm_train's loop")
        ours.append(lstm_train_epoch(job, max_steps))
        log(f"[bench]   epoch {ours[-1]['epoch_s']:.2f} s, test accuracy {ours[-1]['test_accuracy']:.4f}")

    tutorial_flops = lstm_flops_per_sample(28, 28, 64, 1, False, 10)
    report: dict[str, Any] = {
        "tutorial": summarise(tutorial_runs, tutorial_flops) if tutorial_runs else None,
        "lstm_train": summarise(ours, flops),
        "speedup": None,
        "speedup_cpu": None,
        "accuracy_delta": None,
        "gflops": None,
        "threads": threads,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "job": job.name,
        "same_settings": same_as_tutorial(job),
        "mixed_precision": job.train.mixed_precision,
        "compile": job.train.compile,
        "loader": getattr(job.data, "loader", "tensor"),
        "repeats": repeats,
        "max_steps": max_steps,
        "flops_per_sample": flops,
        "load_average": load_start,
        "cpu_count": os.cpu_count(),
    }
    report["gflops"] = {"lstm_train": report["lstm_train"]["gflops"]}
    if report["tutorial"]:
        a, b = report["tutorial"], report["lstm_train"]
        # Throughput ratios: the epoch-time ratio for whole epochs, still fair with --max-steps
        # or a job of another batch size.
        report["speedup"] = round(b["samples_per_s"] / max(a["samples_per_s"], 1e-9), 3)
        report["speedup_cpu"] = round(b["samples_per_cpu_s"] / max(a["samples_per_cpu_s"], 1e-9), 3)
        report["accuracy_delta"] = round(b["test_accuracy"] - a["test_accuracy"], 4)
        report["gflops"]["tutorial"] = a["gflops"]

    if args.processes:
        if device.type == "cuda" and torch.cuda.device_count() < 2:
            log("[bench] --processes: fewer than 2 GPUs visible; skipped")
        else:
            with tempfile.TemporaryDirectory(prefix="lstm-bench-procs-") as tmp:
                procs: dict[str, Any] = {}
                for n in (1, 2):
                    log(f"[bench] {n} process(es)")
                    run = launch(job, n, Path(tmp), max_steps)
                    procs[str(n)] = {**summarise([run], flops), "command": run["command"]}
                procs["scaling"] = round(procs["2"]["samples_per_s"] / max(procs["1"]["samples_per_s"], 1e-9), 3)
                report["processes"] = procs
    report["load_average_end"] = [round(x, 2) for x in os.getloadavg()]

    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return 0
