"""Helpers for the real-cluster SLURM tests (not fixtures: those are in conftest)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from lstm_train.slurm.jobstate import FINAL_STATES, slurm_states

ROOT = Path(__file__).resolve().parents[1]
JOB = ROOT / "jobs" / "mnist_lstm.yaml"


def cli(*args: str, env: dict[str, str], timeout: float = 300, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """`python -m lstm_train ARGS` with exactly `env`, forked from the tests' warm server."""
    from .warm import SERVER

    return SERVER.run(list(args), dict(env), Path(cwd), timeout)


def submit(run_dir: Path | None, *overrides: str, env: dict[str, str], job: Path = JOB, wait: bool = False,
           executor: str = "slurm", jobs: list[str] | None = None, timeout: float = 300,
           flags: tuple[str, ...] = (), cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """`lstm-train submit` (into `run_dir` when given); the job ids it wrote go to `jobs`."""
    args = ["submit", str(job), *overrides, "--executor", executor, *flags]
    if run_dir is not None:
        args.append(f"train.output_dir={run_dir}")
    p = cli(*args, *(["--wait"] if wait else []), env=env, timeout=timeout, cwd=cwd)
    record = run_dir / "submission.json" if run_dir is not None else None
    if jobs is not None and record is not None and record.exists():
        jobs.extend(json.loads(record.read_text())["job_ids"])
    return p


def job_ids(run_dir: Path) -> list[str]:
    return json.loads((run_dir / "submission.json").read_text())["job_ids"]


def assert_pinned_to_node1(run_dir: Path, ids: list[str]) -> None:
    """A `node1_jobs` test's jobs (conftest): every submission script, one per job or job array,
    asks for node1, so the node-down test (node2) cannot touch them."""
    for base in sorted({i.split("_")[0] for i in ids}):
        script = (run_dir / "slurm" / f"{base}_submission.sh").read_text()
        assert "#SBATCH --nodelist=node1" in script, script


def wait_final(ids: list[str], timeout: float, folder: Path | None = None, poll: float = 1) -> dict[str, str]:
    """Poll squeue/sacct until every job is in a final state; its state per id.  Every second:
    half a second lost per wait on average, against a second at the 2 s this polled before (a
    few tenths of a CPU second per minute for the two queries)."""
    deadline = time.monotonic() + timeout
    while True:
        states = slurm_states(ids)
        if all(st.state in FINAL_STATES for st in states.values()):
            return {j: st.state for j, st in states.items()}
        if time.monotonic() > deadline:
            logs = ""
            if folder is not None:
                logs = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(folder.glob("*_log.*")))
            pytest.fail(f"jobs {ids} not finished after {timeout:.0f} s: {states}\n{logs}")
        time.sleep(poll)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def time_to_end(job_id: str, timeout: float = 120) -> float:
    """Seconds until the job has left the queue (squeue no longer lists it)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if not subprocess.run(["squeue", "-h", "-j", job_id], capture_output=True, text=True).stdout.strip():
            return time.monotonic() - t0
        time.sleep(0.2)
    return float("inf")


def result(run_dir: Path) -> dict:
    path = run_dir / "result.json"
    assert path.exists(), f"no result.json in {run_dir}: {sorted(p.name for p in run_dir.iterdir())}"
    return json.loads(path.read_text())


def logs_of(run_dir: Path, job_id: str, task: int = 0) -> tuple[str, str]:
    folder = run_dir / "slurm"
    return ((folder / f"{job_id}_{task}_log.out").read_text(), (folder / f"{job_id}_{task}_log.err").read_text())


def rows(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []


def training_pids(job_id: str, rank: int, var: str = "SLURM_PROCID") -> list[int]:
    """Python processes of a SLURM job whose environment says `var`=`rank`: SLURM_PROCID for
    submitit's tasks, RANK for the workers that torch elastic starts (all nodes are this
    host in the local cluster, so /proc shows every rank)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        env = dict(x.split(b"=", 1) for x in environ if b"=" in x)
        if env.get(b"SLURM_JOB_ID") == job_id.encode() and b"python" in argv0 and env.get(var.encode()) == str(rank).encode():
            found.append(int(pid))
    return found
