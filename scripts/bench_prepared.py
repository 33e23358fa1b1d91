"""Prepared data, measured: start-up (process start to the first training step) and each rank's
anonymous memory (RssAnon in /proc/PID/status) while training, for real jobs at 1 and 2
processes, first run (prepares) and second run (maps); then generated text-classification CSVs of
two sizes: preparation time and peak RSS (prepared in chunks: `text_classify.stream_data`),
and each rank's RssAnon while training from each.

    LSTM_TRAIN_DATA=/work/shared/data python scripts/bench_prepared.py --quick
    LSTM_TRAIN_DATA=/work/shared/data python scripts/bench_prepared.py --before ecce956   # the full one

`--before REF` also measures the code at git REF (a temporary worktree) the same way: the
numbers before the store.  Results go to stdout as a table and to --out as JSON.  Runs use
tracking.wandb.mode=disabled, a fresh cache directory per measurement (so "first" prepares)
and a temporary output directory.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEP = re.compile(r"^step \d+/\d+ ", re.M)
WORDS = ("good bad film plot actor story slow great boring fun long short music scene end "
         "love hate funny sad dull bright dark script cast role").split()


def rss_anon_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def ranks_of(root_pid: int) -> dict[int, int]:
    """{pid: rank} of the training processes under `root_pid` (the root itself when it has no
    RANK: a single process)."""
    found: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        rank = next((int(e[5:]) for e in env if e.startswith(b"RANK=")), None)
        if rank is not None and ppid == root_pid:
            found[int(proc.name)] = rank
    return found or {root_pid: 0}


def measure_run(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float) -> dict:
    """Start-up to the first `step N/M` line, and each rank's peak RssAnon after that."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out: list[str] = []
    first: list[float] = []
    peaks: dict[int, int] = {}

    def read() -> None:
        for line in proc.stdout:
            out.append(line)
            if not first and STEP.match(line):
                first.append(time.monotonic() - start)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    while proc.poll() is None and time.monotonic() - start < timeout:
        if first:
            for pid, rank in ranks_of(proc.pid).items():
                kib = rss_anon_kib(pid)
                if kib:
                    peaks[rank] = max(peaks.get(rank, 0), kib)
        time.sleep(0.1)
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    reader.join(5)
    text = "".join(out)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{text[-3000:]}")
    return {"startup_s": round(first[0], 2) if first else None,
            "rss_anon_mib": {r: round(k / 1024, 1) for r, k in sorted(peaks.items())},
            "mapped": "prepared data: mapping" in text, "prepared": "prepared data: preparing" in text}


def command(procs: int, job: str, overrides: list[str]) -> list[str]:
    if procs == 1:
        return [sys.executable, "-m", "lstm_train", "run", job, *overrides]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(procs),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(port), "-m", "lstm_train", "run", job, *overrides]


def generate_csv(path: Path, rows: int, seed: int = 0) -> None:
    """`rows` texts of 16 words with a label; written in blocks (bounded memory)."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        f.write("text,label\n")
        for start in range(0, rows, 100_000):
            block = []
            for _ in range(min(100_000, rows - start)):
                words = rng.choices(WORDS, k=16)
                block.append(f"{' '.join(words)},{'pos' if words.count('good') >= words.count('bad') else 'neg'}\n")
            f.write("".join(block))


def prepare_peak(job: str, overrides: list[str], env: dict[str, str], cwd: Path) -> dict:
    """`lstm-train prepare` in a child: wall time and that process's own peak RSS (ru_maxrss)."""
    t = time.monotonic()
    code = ("import resource, sys; from lstm_train.cli import main; rc = main(sys.argv[1:]); "
            "print(f'peak_rss_kib={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}', file=sys.stderr); "
            "sys.exit(rc)")
    p = subprocess.run([sys.executable, "-c", code, "prepare", job, *overrides], cwd=cwd, env=env,
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"prepare failed:\n{p.stderr[-3000:]}")
    peak = int(re.findall(r"peak_rss_kib=(\d+)", p.stderr)[-1])
    return {"seconds": round(time.monotonic() - t, 1), "peak_rss_mib": round(peak / 1024, 1),
            "entry_mb": round(json.loads(p.stdout)["bytes"] / 1e6, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="sst2_lstm only, 30 steps, CSVs of 20k and 200k rows")
    ap.add_argument("--before", default=None, help="git ref of the code before the store, measured too")
    ap.add_argument("--jobs", default="sst2_lstm,ud_ewt_upos,multi30k_de_en")
    ap.add_argument("--procs", default="1,2")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--rows", default="400000,40000000", help="generated CSV sizes (rows of 16 words)")
    ap.add_argument("--prepare-only", action="store_true",
                    help="generated corpora: preparation (streamed, chunk by chunk) only, no training runs")
    ap.add_argument("--out", default="bench-prepared.json")
    args = ap.parse_args()
    if args.quick:
        args.jobs, args.steps, args.rows = "sst2_lstm", 30, "20000,200000"
    procs = [int(p) for p in args.procs.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench-prepared-"))
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    trees = {"after": ROOT}
    if args.before:
        before = work / "before"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(before), args.before], check=True,
                       capture_output=True)
        trees["before"] = before
    results: dict = {"jobs": [], "corpus": [], "command": " ".join(sys.argv)}
    common = lambda out: [f"train.max_steps={args.steps}", "train.log_every=1", "train.epochs=1",  # noqa: E731
                          "tracking.wandb.mode=disabled", f"train.output_dir={out}", "train.checkpoint_every=100000"]
    for job in [j for j in args.jobs.split(",") if j]:  # --jobs "": the generated corpora only
        for version, tree in trees.items():
            for n in procs:
                cache = work / f"cache-{job}-{version}-{n}"
                for attempt in ("first", "second"):
                    out = work / f"run-{job}-{version}-{n}-{attempt}"
                    r = measure_run(command(n, str(ROOT / "jobs" / f"{job}.yaml"), common(out)),
                                    {**env, "LSTM_TRAIN_CACHE": str(cache),
                                     **({"PYTHONPATH": str(tree)} if version == "before" else {})}, tree, 3600)
                    row = {"job": job, "code": version, "processes": n, "run": attempt, **r}
                    results["jobs"].append(row)
                    print(json.dumps(row), flush=True)
    job = str(ROOT / "jobs" / "text_csv_example.yaml")
    for rows in [int(r) for r in args.rows.split(",")]:
        csv = work / f"texts-{rows}.csv"
        generate_csv(csv, rows)
        cache = work / f"cache-csv-{rows}"
        data = [f"data.path={csv}", f"data.cache_dir={cache}", "train.epochs=1"]
        prep = prepare_peak(job, data, env, ROOT)
        row = {"rows": rows, "csv_mb": round(csv.stat().st_size / 1e6, 1), "prepare": prep}
        for n in [] if args.prepare_only else procs:
            r = measure_run(command(n, job, data + common(work / f"run-csv-{rows}-{n}")), env, ROOT, 3600)
            row[f"train_{n}p"] = r
        results["corpus"].append(row)
        print(json.dumps(row), flush=True)
        csv.unlink()
    if args.before:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(trees["before"])], check=False)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(f"results: {args.out}  (work dir {work}: delete when done)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
