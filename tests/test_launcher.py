"""Launcher settings: `accelerate launch --mixed_precision`, accelerate's config file and
`--num_cpu_threads_per_process` (OMP_NUM_THREADS) decide a job that says `auto` / sets no
threads; a job that sets them against the launcher wins with a one-line warning naming both;
slurm/accelerate.sbatch's thread count reaches torch.  Real `accelerate launch`, real sbatch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lstm_train.distributed import native_bf16, resolve_precision, set_threads
from lstm_train.schema import ConfigError

from .conftest import ROOT, make_fake_mnist, result_of
from .slurm_helpers import wait_final

JOB = str(ROOT / "jobs" / "mnist_lstm.yaml")
TINY = ["train.max_steps=2", "model.hidden_size=8", "tracking.wandb.mode=disabled"]


def launch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`accelerate launch [ARGS] -m lstm_train run ...` as a user types it (one process)."""
    accelerate = str(Path(sys.executable).parent / "accelerate")
    full = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "OMP_"))}
    full.update(WANDB_MODE="disabled", PYTHONUNBUFFERED="1", **(env or {}))
    return subprocess.run([accelerate, "launch", *args], capture_output=True, text=True, env=full, timeout=300, cwd=ROOT)


def warnings_in(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning: ")]


def test_auto_follows_the_launchers_precision(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.delenv("RANK", raising=False)
    # precedence only: as on a CPU with native bf16 (elsewhere bf16 resolves to fp32, said: the next test)
    import lstm_train.distributed as distributed

    monkeypatch.setattr(distributed, "native_bf16", lambda device: True)
    for launcher in ("no", "bf16", "fp16"):
        monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", launcher)
        assert resolve_precision("auto", "auto", force_cpu=True, warn=True) == launcher
        assert resolve_precision("auto", "fp32", force_cpu=True) == launcher  # asked for at launch: given
    assert capsys.readouterr().err == ""
    assert resolve_precision("bf16", warn=True) == "bf16"  # the job's explicit value wins, said once
    assert warnings_in(capsys.readouterr().err) == [
        "warning: train.mixed_precision=bf16 (the job) overrides the launcher's ACCELERATE_MIXED_PRECISION=fp16 "
        "(accelerate launch --mixed_precision or its config file); the job's value is used"]
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp8")
    with pytest.raises(ConfigError, match="ACCELERATE_MIXED_PRECISION='fp8'.*no, bf16, fp16"):
        resolve_precision("auto")


def test_threads_from_the_environment_unless_the_job_sets_them(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import torch

    before = torch.get_num_threads()
    monkeypatch.delenv("RANK", raising=False)
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert set_threads(None, warn=True) == 2 and torch.get_num_threads() == 2
        assert capsys.readouterr().err == ""
        assert set_threads(1, warn=True) == 1 and torch.get_num_threads() == 1
        assert warnings_in(capsys.readouterr().err) == [
            "warning: train.threads=1 (the job) overrides the launcher's OMP_NUM_THREADS=2 "
            "(accelerate launch --num_cpu_threads_per_process); the job's value is used"]
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert set_threads(None) == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "many")
        with pytest.raises(ConfigError, match="OMP_NUM_THREADS='many'"):
            set_threads(None)
    finally:
        torch.set_num_threads(before)


def test_accelerate_launch_flags_decide_an_auto_job(tmp_path: Path) -> None:
    """On a CPU with native bf16 `auto` alone would train in bf16 (`run` without a launcher);
    `--mixed_precision no` makes it fp32, `--num_cpu_threads_per_process 2` two threads."""
    data = make_fake_mnist(tmp_path / "data", n_train=64, n_test=32)
    out = tmp_path / "no"
    done = launch("--num_processes", "1", "--mixed_precision", "no", "--num_cpu_threads_per_process", "2",
                  "-m", "lstm_train", "run", JOB, f"data.root={data}", f"train.output_dir={out}", *TINY)
    assert done.returncode == 0, done.stderr[-3000:]
    result = result_of(out)
    assert result["mixed_precision"] == "no", result["mixed_precision"]
    assert "2 thread(s) each, precision no" in done.stdout, done.stdout[-2000:]
    assert warnings_in(done.stderr) == [], done.stderr[-2000:]


def test_accelerate_config_file_decides_and_explicit_job_values_warn(tmp_path: Path) -> None:
    data = make_fake_mnist(tmp_path / "data", n_train=64, n_test=32)
    config = tmp_path / "accelerate.yaml"
    config.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: 'NO'\nmixed_precision: bf16\n"
                      "num_machines: 1\nnum_processes: 1\nuse_cpu: true\n")
    auto = tmp_path / "auto"
    done = launch("--config_file", str(config), "-m", "lstm_train", "run", JOB, f"data.root={data}",
                  f"train.output_dir={auto}", "train.mixed_precision=auto", *TINY, env={"OMP_NUM_THREADS": "2"})
    assert done.returncode == 0, done.stderr[-3000:]
    # bf16 where this CPU runs it natively; elsewhere oneDNN has no bf16 LSTM, and the run says so and trains in fp32
    runs = "bf16" if native_bf16("cpu") else "no"
    assert result_of(auto)["mixed_precision"] == runs
    assert f"2 thread(s) each, precision {runs}" in done.stdout
    assert native_bf16("cpu") or "this CPU has no native bf16" in done.stderr

    explicit = tmp_path / "explicit"
    done = launch("--config_file", str(config), "-m", "lstm_train", "run", JOB, f"data.root={data}",
                  f"train.output_dir={explicit}", "train.mixed_precision=no", "train.threads=1", *TINY,
                  env={"OMP_NUM_THREADS": "2"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert result_of(explicit)["mixed_precision"] == "no" and "1 thread(s) each, precision no" in done.stdout
    said = warnings_in(done.stderr)
    assert len(said) == 2, done.stderr[-3000:]
    assert "train.mixed_precision=no (the job)" in said[0] and "ACCELERATE_MIXED_PRECISION=bf16" in said[0]
    assert "train.threads=1 (the job)" in said[1] and "OMP_NUM_THREADS=2" in said[1]


def test_sbatch_templates_threads_reach_torch(cluster: None, tmp_path: Path, fake_slurm_env: dict[str, str],
                                             jobs: list[str]) -> None:
    """--cpus-per-task=2 on two nodes, one process each: the template works out 2 threads, torch uses 2."""
    out, log = tmp_path / "run", tmp_path / "job.out"
    job_id = subprocess.run(
        ["sbatch", "--parsable", "--nodes=2", "--cpus-per-task=2", f"--output={log}", "slurm/accelerate.sbatch",
         JOB, *TINY, f"train.output_dir={out}"],
        capture_output=True, text=True, cwd=ROOT, env=fake_slurm_env, timeout=60, check=True).stdout.strip()
    jobs.append(job_id)
    state = wait_final([job_id], 300)[job_id]
    text = log.read_text() if log.exists() else ""
    assert state == "COMPLETED", text[-3000:]
    assert "2 process(es)" in text and "2 thread(s) each" in text, text[-3000:]
    assert json.loads((out / "result.json").read_text())["steps"] == 2
