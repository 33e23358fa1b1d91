"""Finding, telling apart, comparing and watching runs (issue 29 items 1, 2, 4 and 7).

Real parts only: tiny real runs of jobs/mnist_lstm.yaml (a small fake MNIST, a few steps) in
a temporary working directory, so `runs/<job>/...` is where a user would find it; real
offline W&B files read back (`wandb_records`); a real run training in another process for
`status`; submitit's real local and debug executors for sweeps.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lstm_train import livestatus, runnames
from lstm_train.config import ConfigError, load_job, sweep_jobs

from .conftest import ROOT, job_env, make_fake_mnist
from .slurm_helpers import rows, wait_for
from .wandb_records import read_runs

JOB = ROOT / "jobs" / "mnist_lstm.yaml"
QUICK = ["train.epochs=3", "train.log_every=4", "train.threads=1", "data.eval_batch_size=200"]


@pytest.fixture
def workdir(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A working directory (runs/ lands here) and the environment: a small fake MNIST, W&B
    offline and kept in the test's folder, this checkout importable from anywhere."""
    env = job_env(tmp_path, make_fake_mnist(tmp_path / "data", n_train=256, n_test=100))
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    work = tmp_path / "work"
    work.mkdir()
    return work, env


def cli(work: Path, env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m lstm_train ARGS` in `work` with exactly `env`, forked from the tests' warm server
    (tests/warm.py: none of these calls is about the process; ~3 CPU-s of imports saved each)."""
    from .warm import SERVER

    return SERVER.run(list(args), dict(env), work, timeout)


def in_process(work: Path, *args: str) -> str:
    """`lstm-train ARGS` in this process (the commands that only read run directories), its stdout."""
    import contextlib
    import io

    from lstm_train.cli import main

    out, here = io.StringIO(), Path.cwd()
    os.chdir(work)
    try:
        with contextlib.redirect_stdout(out):
            assert main(list(args)) == 0
    finally:
        os.chdir(here)
    return out.getvalue()


def start(work: Path, env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lstm_train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=work)


# ---------------------------------------------------------------------------
# Readable run directories and W&B names; `runs` and `compare`


def test_two_runs_get_readable_dirs_and_wandb_names_and_runs_and_compare_show_them(workdir) -> None:
    work, env = workdir
    first = ["optim.lr=0.003", "model.hidden_size=32"]
    second = ["optim.lr=0.03"]
    procs = [start(work, env, "run", str(JOB), *QUICK, *o, "tracking.wandb.mode=offline") for o in (first, second)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    job_dir = work / "runs" / "mnist_lstm"
    dirs = sorted(d.name for d in job_dir.iterdir())
    assert len(dirs) == 2 and dirs[0].startswith("hidden=32,lr=0.003,epochs=3-") and dirs[1].startswith(
        "lr=0.03,epochs=3-"), dirs
    names = {}
    for d in dirs:
        (run,) = read_runs(job_dir / d)  # the real offline .wandb file
        names[d] = run.name
        assert run.group == f"mnist_lstm-{json.loads((job_dir / d / 'started.json').read_text())['date']}"
        assert run.job_type == runnames.label_of(d)
    assert sorted(names.values()) == ["mnist_lstm-hidden=32,lr=0.003,epochs=3-rank0", "mnist_lstm-lr=0.03,epochs=3-rank0"]

    table = in_process(work, "runs", str(JOB), "--sort", "metric")
    lines = table.splitlines()
    assert lines[0] == "2 run(s) in runs/mnist_lstm" and lines[1].split()[:4] == ["run", "state", "step", "test_accuracy"]
    listed = json.loads(in_process(work, "runs", "--json", "--sort", "test_accuracy"))
    accuracy = [r["test"] for r in listed]
    assert accuracy == sorted(accuracy, reverse=True) and {r["state"] for r in listed} == {"finished"}  # best first
    assert [ln.split()[0] for ln in lines[2:]] == [r["run"].removeprefix("mnist_lstm/") for r in listed]
    by_time = json.loads(in_process(work, "runs", "--json", "--sort", "train_seconds"))
    assert [r["train_seconds"] for r in by_time] == sorted(r["train_seconds"] for r in listed)  # another key: ascending
    assert {r["differs"] for r in listed} == {"hidden=32,lr=0.003,epochs=3", "lr=0.03,epochs=3"}
    assert all(r["step"] == 12 for r in listed)
    bad = cli(work, env, "runs", "--sort", "nonsense")
    assert bad.returncode == 2 and "--sort nonsense: no run has it" in bad.stderr and "Traceback" not in bad.stderr

    png = work / "lr.png"
    shown = cli(work, env, "compare", *(str(job_dir / d) for d in dirs), "--out", str(png))
    assert shown.returncode == 0, shown.stderr
    table = {ln.split()[0]: ln.split()[1:] for ln in shown.stdout.splitlines()[1:] if ln.strip() and " " in ln}
    assert table["model.hidden_size"] == ["32", "64"] and table["optim.lr"] == ["0.003", "0.03"]
    assert table["test_accuracy"] == [f"{json.loads((job_dir / d / 'result.json').read_text())['test_accuracy']:.4g}"
                                      for d in dirs]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"wrote {png}" in shown.stdout
    from lstm_train.compare import curves, run_names, runs_of

    compared = runs_of([str(job_dir / d) for d in dirs])
    plotted = curves(compared)
    assert set(plotted) >= {"train loss", "test/accuracy"} and all(
        steps == [4.0, 8.0, 12.0] for steps, _ in plotted["train loss"].values())
    names = ["mnist_lstm-hidden=32,lr=0.003,epochs=3", "mnist_lstm-lr=0.03,epochs=3"]
    assert run_names(compared) == names == sorted(plotted["train loss"])  # legends: the W&B names, less -rank0
    by_samples = curves(compared, "samples")  # 64 images a step, evaluations at logged steps
    assert by_samples.keys() == plotted.keys() and all(
        by_samples[panel][name] == ([64 * s for s in x], y) for panel in plotted for name, (x, y) in plotted[panel].items())
    by_time = curves(compared, "time")
    for name in names:
        x, y = by_time["train loss"][name]
        assert x[0] >= 0 and x == sorted(x) and y == plotted["train loss"][name][1]
    assert cli(work, env, "compare", *(str(job_dir / d) for d in dirs), "--out", str(png), "--x", "time").returncode == 0


def test_a_run_begun_before_readable_names_keeps_its_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lstm_train import runfiles

    monkeypatch.chdir(tmp_path)
    job = load_job(JOB, ["optim.lr=0.003"])
    legacy = Path("runs") / "mnist_lstm" / runfiles.identity(job.to_dict())
    assert job.run_dir.name.startswith("lr=0.003-")
    legacy.mkdir(parents=True)
    assert load_job(JOB, ["optim.lr=0.003"]).run_dir == legacy


# ---------------------------------------------------------------------------
# `status` of a running run: step, epoch, loss, throughput, time left


def test_status_of_a_running_run_shows_its_loss_and_time_left(workdir) -> None:
    work, env = workdir
    proc = start(work, env, "run", str(JOB), "train.epochs=400", "train.log_every=10", "train.threads=1",
                 "train.checkpoint_every=40", "tracking.wandb.mode=disabled")
    try:
        run_dir = work / "runs" / "mnist_lstm"
        metrics = wait_for(lambda: list(run_dir.glob("*/metrics/rank-0.jsonl")), 120, "the run to start")[0]
        wait_for(lambda: len([r for r in rows(metrics) if "loss" in r]) >= 3, 120, "three logged steps")
        status = cli(work, env, "status", str(metrics.parent.parent))
        assert status.returncode == 0, status.stderr
        out = status.stdout
        assert "(running: pid" in out and "progress: step " in out and " of 1,600 (" in out, out  # 4 steps/epoch
        assert "epoch " in out and " of 400" in out and "loss " in out and "samples/s" in out, out
        assert "left (by epochs)" in out, out
        data = json.loads(cli(work, env, "status", str(metrics.parent.parent), "--json").stdout)["progress"]
        assert data["state"] == "running" and data["total_steps"] == 1600 and data["eta_s"] > 0, data
        assert data["loss"] == pytest.approx([r for r in rows(metrics) if r["step"] == data["step"]][0]["global_loss"])
    finally:
        proc.send_signal(signal.SIGTERM)  # the run checkpoints and stops
        proc.communicate(timeout=120)
    assert proc.returncode == 143
    stopped = cli(work, env, "status", str(metrics.parent.parent))
    assert "(stopped)" in stopped.stdout and "run the same command again to resume" in stopped.stdout, stopped.stdout


def test_progress_reads_only_the_tail_of_a_long_metrics_file(tmp_path: Path) -> None:
    """A week-long run's metrics file: the answer comes from its last rows (and its first line)."""
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    t0 = 1_700_000_000.0
    lines = [json.dumps({"step": s, "time": t0 + s / 10, "loss": 1.0, "global_loss": 1 / s, "lr": 0.01,
                         "samples_per_s": 640.0, "epoch": s / 1000}) for s in range(1, 50_001)]
    (metrics / "rank-0.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"name": "long", "train": {"epochs": 300, "max_steps": 60_000}}))
    p = livestatus.progress(tmp_path)
    assert (p.step, p.total_steps, p.eta_by, p.loss) == (50_000, 60_000, "max_steps", 1 / 50_000)
    assert p.steps_per_s == pytest.approx(10.0) and p.eta_s == pytest.approx(1000.0)
    assert p.train_seconds == pytest.approx(4_999.9) and p.throughput == 640.0
    assert len(livestatus.tail_rows(metrics / "rank-0.jsonl")) < 1000


# ---------------------------------------------------------------------------
# Sweeps are compared on validation data


def sweep_file(tmp_path: Path, base: Path, **changes: object) -> Path:
    spec = yaml.safe_load(base.read_text())
    spec.update(changes)
    path = tmp_path / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_a_sweep_without_validation_gets_one_or_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    grid = {"grid": {"optim.lr": [0.01, 0.003]}}
    path = sweep_file(tmp_path, JOB, name="mnist_sweep", sweep=grid)
    points = sweep_jobs(load_job(path), str(path))
    assert [p.data.val_fraction for _, _, p in points] == [0.1, 0.1]
    assert "compared on one split off the training data (data.val_fraction=0.1), never on the test split" in \
        capsys.readouterr().err
    kept = sweep_jobs(load_job(path, ["data.val_fraction=0.2"]), str(path))
    assert [p.data.val_fraction for _, _, p in kept] == [0.2, 0.2]
    tag = sweep_file(tmp_path, ROOT / "jobs" / "ud_ewt_upos.yaml", name="tag_sweep", sweep=grid)
    with pytest.raises(ConfigError, match="compares its points on validation data.*data.val is null: name a "
                                          "validation file"):
        sweep_jobs(load_job(tag, ["data.val=null"]), str(tag))
    text = sweep_file(tmp_path, ROOT / "jobs" / "text_csv_example.yaml", name="text_sweep", sweep=grid)
    with pytest.raises(ConfigError, match="data.train_path is given without data.val_path"):
        sweep_jobs(load_job(text, ["data.path=null", "data.train_path=a.csv", "data.test_path=b.csv"]), str(text))
    sine = sweep_file(tmp_path, ROOT / "jobs" / "sine_forecast.yaml", name="sine_sweep", sweep=grid)
    assert {p.data.val_size for _, _, p in sweep_jobs(load_job(sine, ["data.val_size=0"]), str(sine))} == {0.1}


@pytest.mark.usefixtures("one_thread")
def test_sweep_points_hold_out_validation_and_status_ranks_by_it(workdir, tmp_path: Path) -> None:
    """Two points through the debug executor (in one process): each holds out 10% of the
    training images, selects on them, and `status` ranks by val_accuracy, test beside it."""
    work, env = workdir
    path = sweep_file(tmp_path, JOB, name="val_sweep", sweep={"grid": {"optim.lr": [0.03, 0.0003]}})
    done = cli(work, env, "submit", str(path), *QUICK, "tracking.wandb.mode=disabled", "--executor", "debug")
    assert done.returncode == 0, done.stderr[-3000:]
    (sweep_dir,) = (work / "runs" / "val_sweep").iterdir()
    assert sweep_dir.name.startswith("sweep-lr,epochs=3-"), sweep_dir.name
    results = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/result.json"))]
    assert len(results) == 2 and all(r["val_samples"] == 26 and r["best_step"] for r in results), results
    status = json.loads(cli(work, env, "status", str(sweep_dir), "--json").stdout)
    assert status["metric"] == "val_accuracy" and status["test_metric"] == "test_accuracy", status
    values = [p["value"] for p in status["points"]]
    assert values == sorted(values, reverse=True) and None not in values
    table = cli(work, env, "status", str(sweep_dir)).stdout
    assert "ranked by val_accuracy (higher is better; validation data)" in table and "test_accuracy" in table, table


def test_local_sweep_runs_array_parallelism_points_at_a_time(workdir, tmp_path: Path) -> None:
    """submitit's local executor starts every point at once; with slurm.array_parallelism=1
    the second point waits for the first one's slot, as a SLURM array `%1` would."""
    work, env = workdir
    path = sweep_file(tmp_path, JOB, name="local_sweep", slurm={"array_parallelism": 1, "time_min": 10},
                      sweep={"grid": {"optim.lr": [0.03, 0.01]}})
    done = cli(work, env, "submit", str(path), *QUICK, "tracking.wandb.mode=disabled", "--executor", "local", "--wait",
               timeout=400)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    points = sorted(p.parent for p in (work / "runs" / "local_sweep").glob("sweep-*/*/result.json"))
    assert len(points) == 2
    spans = []
    for point in points:
        times = [r["time"] for r in rows(point / "metrics" / "rank-0.jsonl")]
        spans.append((min(times), max(times)))
    first, second = sorted(spans)
    assert second[0] > first[1], spans  # the second point logged its first row after the first one's last
    logs = "".join(p.read_text() for p in (work / "runs" / "local_sweep").glob("sweep-*/local/*_log.err"))
    assert "waiting for one of 1 slot(s)" in logs and logs.count("took slot 1 of 1") == 2, logs[-3000:]
