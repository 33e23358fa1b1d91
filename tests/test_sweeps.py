"""Sweeps beyond grids: W&B's sweep-configuration format (`method: grid | random`, values and
distributions, count, seed) drawn into points, submitted as one job array on the real local
SLURM cluster, every point's W&B runs (real offline `.wandb` files) in one group and tagged
with the sweep id; `run` of a sweep job trains one named point."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import yaml

from lstm_train.config import ConfigError, load_job, sweep_jobs, validate_job
from lstm_train.sweeps import SweepConfig, points

from .conftest import ROOT, make_fake_mnist, run_cli
from .slurm_helpers import JOB, assert_pinned_to_node1, result, submit
from .wandb_records import config_values, read_runs

RANDOM = {
    "method": "random", "count": 6, "seed": 3,
    "metric": {"name": "test_accuracy", "goal": "maximize"},
    "parameters": {
        "optim.lr": {"distribution": "log_uniform_values", "min": 1e-3, "max": 3e-2},
        "model.hidden_size": {"values": [8, 16]},
        "model": {"parameters": {"dropout": {"distribution": "uniform", "min": 0.0, "max": 0.3}}},
        "train.seed": {"distribution": "int_uniform", "min": 1, "max": 1000},
        "model.bidirectional": {"distribution": "categorical", "values": [True, False]},
        "data.batch_size": {"value": 32},
    },
}


def test_random_points_follow_their_distributions_and_the_seed() -> None:
    sweep = SweepConfig.model_validate({**RANDOM, "count": 200})
    drawn = points(sweep)
    assert drawn == points(sweep) and drawn != points(SweepConfig.model_validate({**RANDOM, "count": 200, "seed": 4}))
    lr = [p["optim.lr"] for p in drawn]
    assert all(1e-3 <= v <= 3e-2 for v in lr)
    # log-uniform: about half the draws below the geometric mean of min and max
    assert 0.35 < sum(v < math.sqrt(1e-3 * 3e-2) for v in lr) / len(lr) < 0.65
    assert {p["model.hidden_size"] for p in drawn} == {8, 16} and {p["data.batch_size"] for p in drawn} == {32}
    assert all(isinstance(p["train.seed"], int) and 1 <= p["train.seed"] <= 1000 for p in drawn)
    assert all(0.0 <= p["model.dropout"] <= 0.3 for p in drawn)  # W&B's nested form, flattened
    assert {p["model.bidirectional"] for p in drawn} == {True, False}


def test_grid_in_wbs_format_and_the_older_form_agree() -> None:
    new = SweepConfig.model_validate({"method": "grid", "parameters": {"optim.lr": {"values": [0.1, 0.01]},
                                                                       "model.hidden_size": {"values": [8, 16, 32]}}})
    old = SweepConfig.model_validate({"grid": {"optim.lr": [0.1, 0.01], "model.hidden_size": [8, 16, 32]}})
    assert points(new) == points(old) and len(points(new)) == 6
    assert len(points(SweepConfig.model_validate({**new.model_dump(), "count": 4}))) == 4
    assert len(points(SweepConfig.model_validate({**RANDOM, "count": None, "run_cap": 3}))) == 3  # W&B's name


@pytest.mark.parametrize("sweep, message", [
    ({"method": "random", "parameters": {"optim.lr": {"values": [1]}}}, "needs sweep.count"),
    ({"method": "grid", "parameters": {"optim.lr": {"min": 0.001, "max": 0.1}}}, "continuous: optim.lr"),
    ({"method": "random", "count": 2, "parameters": {"optim.lr": {"distribution": "log_uniform_values",
                                                                  "min": 0, "max": 1}}}, "min > 0"),
    ({"method": "hyperopt", "count": 2, "parameters": {"optim.lr": {"values": [1]}}}, "'grid', 'random' or 'bayes'"),
    ({"method": "bayes", "count": 2, "parameters": {"optim.lr": {"min": 0.001, "max": 0.1}}},
     "method bayes needs sweep.metric"),
    ({"method": "bayes", "count": 2, "metric": {"name": "test_accuracy", "goal": "maximize"},
      "parameters": {"optim.lr": {"min": 0.001, "max": 0.1}}}, r"the test split is never chosen on\): say 'val_accuracy'"),
    ({"method": "bayes", "count": 2, "metric": {"name": "val_accuracy"}, "parameters": {"optim.lr": {"min": 0.001,
                                                                                                    "max": 0.1}}},
     "sweep.metric.goal: give minimize or maximize for val_accuracy"),
    ({"method": "bayes", "count": 2, "metric": {"name": "val_loss", "goal": "minimize"},
      "parameters": {"optim.lr": {"values": [0.1, 0.01], "probabilities": [0.5, 0.5]}}},
     "probabilities apply to method random only"),
    ({"method": "bayes", "count": 2, "metric": {"name": "val_loss", "goal": "minimize"},
      "parameters": {"optim.lr": {"value": 0.1}}}, "needs a parameter to search"),
    ({"method": "random", "count": 2, "startup_points": 1, "parameters": {"optim.lr": {"values": [1]}}},
     "startup_points applies to method bayes only"),
    ({"method": "random", "count": 2, "parameters": {"optim.lr": {"distribution": "normal"}}}, "int_uniform"),
    ({"method": "random", "count": 2, "parameters": {"optim.lr": {"min": 2, "max": 1}}}, "above max"),
    ({"method": "random", "count": 2, "parameters": {"model.hiden_size": {"values": [8]}}}, "hiden_size"),
])
def test_bad_sweeps_are_clear(sweep: dict, message: str) -> None:
    spec = yaml.safe_load(JOB.read_text())
    spec["sweep"] = sweep
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        job = validate_job(spec, "sweep.yaml")
        sweep_jobs(job, "sweep.yaml")


def test_run_of_a_sweep_job_trains_one_named_point(tmp_path: Path) -> None:
    data = make_fake_mnist(tmp_path / "data", n_train=64, n_test=32)
    spec = yaml.safe_load(JOB.read_text())
    spec.update(name="sweep_run", sweep=RANDOM)
    job_file = tmp_path / "sweep.yaml"
    job_file.write_text(yaml.safe_dump(spec))
    out = tmp_path / "run"
    done = run_cli("run", str(job_file), "--point", "2", f"data.root={data}", "train.max_steps=3",
                   f"train.output_dir={out}", "tracking.wandb.mode=disabled", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    label, params, _ = sweep_jobs(load_job(job_file), str(job_file))[2]
    assert "random sweep of 6 point(s)" in done.stderr and f"point 2 only, {label}" in done.stderr
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["optim"]["lr"] == params["optim.lr"] and config["sweep"] is None
    assert config["model"]["hidden_size"] == params["model.hidden_size"]


@pytest.mark.node1_jobs
def test_random_sweep_on_slurm_is_one_array_tagged_with_one_sweep_id(
        cluster: None, tmp_path: Path, fake_slurm_env: dict[str, str], jobs: list[str]) -> None:
    spec = yaml.safe_load(JOB.read_text())
    # 4 points, 2 at a time: the array's throttle is still met (4 > 2); 6 points (until suite5) took
    # two more job starts, ~20 s of the node1 chain, and proved nothing more
    spec.update(name="random_sweep_test", sweep={**RANDOM, "count": 4},
                slurm={"array_parallelism": 2, "time_min": 10, "additional": {"nodelist": "node1"}})
    job_file = tmp_path / "sweep.yaml"
    job_file.write_text(yaml.safe_dump(spec))
    sweep_dir = tmp_path / "sweep"
    t0 = time.monotonic()
    p = submit(sweep_dir, "train.max_steps=4", "train.log_every=2", "data.eval_batch_size=200",
               "tracking.wandb.mode=offline", env=fake_slurm_env, job=job_file, wait=True, jobs=jobs, timeout=900)
    print(f"\n4-point random sweep, 2 at a time: {time.monotonic() - t0:.1f} s")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "random sweep of 4 point(s)" in p.stdout, p.stdout

    record = json.loads((sweep_dir / "submission.json").read_text())
    assert_pinned_to_node1(sweep_dir, record["job_ids"])
    sweep_id = record["sweep_id"]
    ids = record["job_ids"]
    assert len(ids) == 4 and len({i.split("_")[0] for i in ids}) == 1, ids  # one job array
    assert record["sweep"]["method"] == "random" and len(record["points"]) == 4
    expected = [params for _, params, _ in sweep_jobs(load_job(job_file), str(job_file))]
    assert [pt["params"] for pt in record["points"]] == expected  # the seeded draw, as submitted
    for point in record["points"]:
        run_dir = Path(point["run_dir"])
        assert result(run_dir)["steps"] == 4
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert config["optim"]["lr"] == point["params"]["optim.lr"]
        (run,) = read_runs(run_dir)
        assert run.group == sweep_id and sweep_id in run.tags, (run.group, run.tags)
        assert run.name == f"random_sweep_test-{point['name']}-rank0"
        assert run.job_type == point["name"]
        wandb_config = config_values(run.config)
        assert "tracking" not in wandb_config and "slurm" not in wandb_config  # never in W&B: they may hold secrets
        assert wandb_config["optim"]["lr"] == point["params"]["optim.lr"]
        assert any("test_accuracy" in k for k in run.summary), run.summary


# ---------------------------------------------------------------------------
# Successive halving (sweep.early_terminate): each point decides at its own rungs


def test_halving_rungs_and_decisions(tmp_path: Path) -> None:
    from lstm_train.halving import DECISION, record_and_decide, rung_at

    assert [rung_at(s, 2, 2) for s in (1, 2, 3, 4, 7, 8, 9)] == [None, 2, 2, 4, 4, 8, 8]
    sweep = tmp_path / "sweep"
    a, b, c = (sweep / name for name in ("00-a", "01-b", "02-c"))
    for d in (a, b, c):
        d.mkdir(parents=True)
    decide = lambda run, step, value: record_and_decide(run, step, "val_mase", value, False, 2, 2)  # noqa: E731
    assert decide(a, 1, 5.0) is None  # before the first rung: nothing recorded
    assert decide(a, 2, 1.0) is None  # alone at rung 2: goes on
    assert decide(b, 3, 2.0).startswith("successive halving at rung 2 steps: val_mase 2 is not in the best 1")
    assert (b / DECISION).is_file() and decide(b, 4, 0.1) is not None  # a resumed point stays stopped
    assert decide(c, 2, 0.5) is None  # the best of three: goes on
    assert decide(a, 2, 9.0) is None  # one decision per rung
    assert decide(a, 4, 3.0) is None and decide(c, 4, 4.0) is not None  # rung 4: a and c, c the worse
    assert record_and_decide(a, 8, "val_mase", 9.0, False, 2, 2, final=True) is None  # the last step: recorded only
    assert json.loads((sweep / "rungs" / "00-a.json").read_text())["8"]["value"] == 9.0


@pytest.mark.node1_jobs
def test_random_sweep_with_successive_halving_on_slurm(
        cluster: None, tmp_path: Path, fake_slurm_env: dict[str, str], jobs: list[str]) -> None:
    """Six sine forecasters, 16 steps each at most, evaluated every 2; rungs at 2, 4, 8 steps:
    the points that are worse than half of those at a rung stop there, and say so."""
    spec = yaml.safe_load((ROOT / "jobs" / "sine_forecast.yaml").read_text())
    node1 = {"array_parallelism": 2, "time_min": 10, "additional": {"nodelist": "node1"}}
    spec.update(name="halving_test", slurm=node1, sweep={
        "method": "random", "count": 6, "seed": 0, "early_terminate": {"type": "hyperband", "min_iter": 2, "eta": 2},
        "parameters": {"optim.lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-1}}})
    job_file = tmp_path / "sweep.yaml"
    job_file.write_text(yaml.safe_dump(spec))
    sweep_dir = tmp_path / "sweep"
    t0 = time.monotonic()
    p = submit(sweep_dir, "data.sine.series=4", "data.sine.length=300", "data.val_size=40", "data.test_size=60",
               "model.hidden_size=8", "train.epochs=100", "train.max_steps=16", "train.eval_every_steps=2",
               "data.classical=none",
               "tracking.wandb.mode=disabled", env=fake_slurm_env, job=job_file, wait=True, jobs=jobs, timeout=900)
    assert p.returncode == 0, p.stdout + p.stderr
    record = json.loads((sweep_dir / "submission.json").read_text())
    assert_pinned_to_node1(sweep_dir, record["job_ids"])
    results = {pt["name"]: result(Path(pt["run_dir"])) for pt in record["points"]}
    steps = {name: r["steps"] for name, r in results.items()}
    print(f"\n6-point sweep with successive halving: {sum(steps.values())} of {6 * 16} steps trained "
          f"({time.monotonic() - t0:.1f} s): {steps}")
    stopped = {name for name, r in results.items() if r["stopped_early"]}
    assert stopped and len(stopped) < 6, steps
    assert all(steps[n] < 16 for n in stopped) and all(steps[n] == 16 for n in steps if n not in stopped), steps
    for name in stopped:
        decision = json.loads((sweep_dir / name / "halving.json").read_text())
        assert decision["value"] > decision["cutoff"] and len(decision["points_at_rung"]) >= 2, decision
        assert steps[name] == decision["step"]
