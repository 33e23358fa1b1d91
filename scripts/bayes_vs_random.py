"""A `bayes` sweep against a `random` sweep of the same space on the local SLURM cluster (issue 36).

    .venv/bin/python scripts/bayes_vs_random.py --seeds 0 1 2 3 4 --json out.json

The shipped sine forecaster (jobs/sine_forecast.yaml) with tiny budgets: 12 points each, over
the learning rate, the width, the depth and the scheduler, two at a time (`slurm.array_parallelism:
2`: bayes asks in batches of 2, 4 drawn at random first; random is one array of 12).  Both are
ranked by val_mase (lower is better), the sweep's validation metric; test_mase is reported for
the best point of each, never chosen on.  Each seed is a pair of sweeps (the random draw, TPE's
sampler) in fresh sweep directories under --folder; the points train with the same train.seed,
so a point's value depends on its parameters alone (the random sweeps repeat to the digit).
Needs sbatch (`sudo slurm/local-cluster.sh up`); run it through testslot and flock
/tmp/slurm.lock where the cluster is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SPACE = {
    "optim.lr": {"distribution": "log_uniform_values", "min": 1.0e-4, "max": 3.0e-1},
    "model.hidden_size": {"values": [4, 8, 16, 32, 64]},
    "model.num_layers": {"distribution": "int_uniform", "min": 1, "max": 3},
    "optim.scheduler": {"values": ["none", "cosine"]},
}
TINY = ["data.sine.series=16", "data.sine.length=400", "data.val_size=60", "data.test_size=60", "data.classical=none",
        "train.epochs=1000", "train.max_steps=40", "train.eval_every_steps=10", "train.log_every=10",
        "train.checkpoint_every=1000", "train.threads=2", "data.batch_size=32", "tracking.wandb.mode=disabled",
        "data.plot_series=1"]


def job_file(folder: Path, method: str, seed: int, count: int) -> Path:
    spec = yaml.safe_load((ROOT / "jobs" / "sine_forecast.yaml").read_text())
    sweep = {"method": method, "count": count, "seed": seed, "parameters": SPACE,
             "metric": {"name": "val_mase", "goal": "minimize"}}
    if method == "bayes":
        sweep["startup_points"] = 4
    spec.update(name=f"sine_{method}", sweep=sweep, slurm={"array_parallelism": 2, "time_min": 20, "cpus_per_task": 2})
    path = folder / f"sine_{method}_{seed}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def sweep(folder: Path, method: str, seed: int, count: int) -> dict:
    path = job_file(folder, method, seed, count)
    out = folder / f"{method}-{seed}"
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT)}
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "lstm_train", "submit", str(path), *TINY, f"train.output_dir={out}",
                           "--wait"], capture_output=True, text=True, env=env, cwd=ROOT)
    seconds = time.monotonic() - began
    if done.returncode != 0:
        raise SystemExit(f"{method} seed {seed} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    status = json.loads(subprocess.run([sys.executable, "-m", "lstm_train", "status", str(out), "--json"],
                                       capture_output=True, text=True, env=env, cwd=ROOT).stdout)
    points = [p for p in status["points"] if isinstance(p["value"], (int, float))]
    best = min(points, key=lambda p: p["value"])
    values = [p["value"] for p in sorted(status["points"], key=lambda p: p["name"])]
    return {"method": method, "seed": seed, "points": len(status["points"]), "best_val_mase": best["value"],
            "best_point": best["name"], "best_test_mase": best["result"].get("test_mase"),
            "best_params": best["params"], "median_val_mase": statistics.median(values),
            "val_mase_in_order": values, "seconds": round(seconds, 1), "sweep_dir": str(out),
            "bayes_history": status.get("bayes", {}).get("history")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--count", type=int, default=12)
    parser.add_argument("--folder", type=Path, default=None, help="where the sweeps go (default: a temporary one)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows to this file (after each sweep)")
    args = parser.parse_args()
    folder = args.folder or Path(tempfile.mkdtemp(prefix="bayes-vs-random-"))
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in args.seeds:
        for method in ("random", "bayes"):
            row = sweep(folder, method, seed, args.count)
            rows.append(row)
            print(f"seed {seed} {method:6s}: best val_mase {row['best_val_mase']:.4f} (test_mase "
                  f"{row['best_test_mase']:.4f}) at {row['best_point']}, median {row['median_val_mase']:.2f}, "
                  f"{row['points']} points, {row['seconds']} s", flush=True)
            if args.json:
                args.json.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"sweeps in {folder}")


if __name__ == "__main__":
    main()
