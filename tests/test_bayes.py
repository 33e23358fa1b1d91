"""`sweep.method: bayes`: Optuna's TPE asked and told in batches, its study a JSON-lines journal in
the sweep directory.  The study on its own (asked, reopened, refused when damaged or another
sweep's), then real sweeps of tiny sine forecasters: local processes driven by two `submit`s
(the second resumes from the first's journal), and a job array on the real local SLURM cluster
with successive halving, whose stopped points are told to TPE as pruned."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import optuna
import pytest
import yaml

from lstm_train import bayes, runfiles
from lstm_train.sweeps import SweepConfig

from .conftest import ROOT, job_env, run_cli
from .slurm_helpers import assert_pinned_to_node1, result, submit

SINE = ROOT / "jobs" / "sine_forecast.yaml"
BAYES = {
    "method": "bayes", "count": 4, "seed": 0, "startup_points": 2,
    "metric": {"name": "val_mase", "goal": "minimize"},
    "parameters": {
        "optim.lr": {"distribution": "log_uniform_values", "min": 1e-3, "max": 1e-1},
        "model.hidden_size": {"values": [4, 8]},
        "model.num_layers": {"distribution": "int_uniform", "min": 1, "max": 2},
        "data.batch_size": {"value": 32},
    },
}
# Four sine series of 300 points, val and test spans cut off their ends: a few seconds a point.
TINY = ("data.sine.series=4", "data.sine.length=300", "data.val_size=40", "data.test_size=60", "data.classical=none",
        "train.epochs=100", "train.max_steps=8", "train.eval_every_steps=4", "train.log_every=4", "train.threads=1",
        "tracking.wandb.mode=disabled")


def sweep_job(tmp_path: Path, name: str, sweep: dict, **sections: dict) -> Path:
    spec = yaml.safe_load(SINE.read_text())
    spec.update(name=name, sweep=sweep, slurm={"array_parallelism": 2, "time_min": 10})
    spec.update(sections)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def journal_trials(sweep_dir: Path) -> list[optuna.trial.FrozenTrial]:
    """The study as Optuna itself reads the journal (no lstm_train code in between)."""
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(sweep_dir / "study.jsonl")))
    return optuna.load_study(study_name="sweep", storage=storage).trials


# ---------------------------------------------------------------------------
# The study alone


def test_study_is_a_json_journal_that_reopens_and_refuses_what_is_not_this_sweeps(tmp_path: Path) -> None:
    sweep = SweepConfig.model_validate(BAYES)
    assert sweep.startup == 2 and sweep.optimised() == ("val_mase", False)
    assert SweepConfig.model_validate({**BAYES, "startup_points": None, "count": 30}).startup == 10
    assert SweepConfig.model_validate({**BAYES, "metric": {"name": "val/mase", "goal": "minimize"}}).optimised() \
        == ("val_mase", False)  # W&B's logged name

    study = bayes.open_study(tmp_path, sweep)
    asked = bayes.ask(study, sweep, 3, batch=0)
    assert [s.number for s in asked] == [0, 1, 2] and [s.label[:3] for s in asked] == ["00-", "01-", "02-"]
    for s in asked:
        assert list(s.params) == ["optim.lr", "model.hidden_size", "model.num_layers", "data.batch_size"]
        assert 1e-3 <= s.params["optim.lr"] <= 1e-1 and s.params["model.hidden_size"] in (4, 8)
        assert s.params["model.num_layers"] in (1, 2) and s.params["data.batch_size"] == 32
    lines = (tmp_path / "study.jsonl").read_text().splitlines()
    assert lines and all(isinstance(json.loads(line), dict) for line in lines)  # JSON, nothing pickled
    assert (tmp_path / "study.jsonl").stat().st_mode & 0o007 == 0  # never readable by others

    again = bayes.open_study(tmp_path, sweep)  # another process would see the same
    assert bayes.open_points(again, sweep, tmp_path) == asked
    assert len((tmp_path / "study.jsonl").read_text().splitlines()) == len(lines)  # opening appends nothing
    other = tmp_path / "other"
    other.mkdir()
    assert [s.params for s in bayes.ask(bayes.open_study(other, sweep), sweep, 3, 0)] == [s.params for s in asked]
    assert len({bayes.batch_seed(seed, asked) for seed in range(4) for asked in (0, 2, 4)}) == 12  # no stream shared

    maximizing = SweepConfig.model_validate({**BAYES, "metric": {"name": "val_accuracy", "goal": "maximize"}})
    with pytest.raises(runfiles.RunDirError, match="belongs to another sweep"):
        bayes.open_study(tmp_path, maximizing)
    narrower = SweepConfig.model_validate({**BAYES, "parameters": {**BAYES["parameters"], "optim.lr": {
        "distribution": "log_uniform_values", "min": 1e-2, "max": 1e-1}}})
    with pytest.raises(runfiles.RunDirError, match="trial 0's optim.lr .* is not in this sweep's space"):
        bayes.open_points(bayes.open_study(tmp_path, narrower), narrower, tmp_path)

    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "study.jsonl").write_text('{"op_code": 0, "worker_id": "x"}\nnot json\n{"op_code": 4}\n')
    with pytest.raises(runfiles.RunDirError, match="study.jsonl: not a study journal Optuna can replay"):
        bayes.open_study(damaged, sweep)
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "study.jsonl").symlink_to(tmp_path / "study.jsonl")
    with pytest.raises(runfiles.RunDirError, match="not a plain file"):
        bayes.open_study(linked, sweep)


def test_a_point_is_told_its_validation_metric_or_why_not(tmp_path: Path) -> None:
    """What `tell` reads of a point's directory: result.json's sweep.metric; a diverged loss
    (rank 0's summary) is a failure; a result without the metric names the ones it has."""
    sweep = SweepConfig.model_validate(BAYES)
    study = bayes.open_study(tmp_path, sweep)
    done, diverged, pending, unnamed = bayes.ask(study, sweep, 4, 0)
    for s in (done, diverged, pending, unnamed):
        (tmp_path / s.label / "metrics").mkdir(parents=True)
    runfiles.write_json(tmp_path / done.label / "result.json", {"val_mase": 0.75, "test_mase": 0.8, "steps": 8})
    runfiles.write_json(tmp_path / diverged.label / "metrics" / "rank-0-summary.json",
                        {"error": "NonFiniteLoss: loss is nan at step 3", "steps": 3})
    runfiles.write_json(tmp_path / unnamed.label / "result.json", {"val_loss": 0.1, "val_rmse": 0.2, "steps": 8})
    assert bayes.tell(study, sweep, tmp_path, done).state == "COMPLETE"
    assert bayes.tell(study, sweep, tmp_path, diverged) == bayes.Told(diverged.label, "FAIL", None,
                                                                      "NonFiniteLoss: loss is nan at step 3")
    assert bayes.tell(study, sweep, tmp_path, pending) is None
    with pytest.raises(ValueError, match=r"result.json: no val_mase \(sweep.metric.name\) in it; its validation "
                                         "metrics: val_loss, val_rmse"):
        bayes.tell(study, sweep, tmp_path, unnamed)
    states = [t.state.name for t in journal_trials(tmp_path)]
    assert states == ["COMPLETE", "FAIL", "RUNNING", "RUNNING"]
    assert bayes.best(study, sweep, tmp_path)["point"] == done.label


def test_run_of_a_bayes_job_says_its_points_come_from_submit(tmp_path: Path) -> None:
    job_file = sweep_job(tmp_path, "bayes_run", BAYES)
    done = run_cli("run", str(job_file), *TINY)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "a bayes sweep has no points known in advance" in done.stderr and "lstm-train submit" in done.stderr


# ---------------------------------------------------------------------------
# Real sweeps


def test_local_bayes_sweep_submitted_in_batches_resumes_from_its_journal(tmp_path: Path) -> None:
    """Four points, two at a time, on this machine: the first `submit` asks for two random
    points and leaves; the second (a new process) reads the journal, waits for them, tells
    their val_mase, asks TPE for two more and drives them to the end."""
    job_file = sweep_job(tmp_path, "bayes_local", BAYES)
    env = job_env(tmp_path, tmp_path)
    sweep_dir = tmp_path / "sweep"
    first = submit(sweep_dir, *TINY, env=env, job=job_file, executor="local", timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "batch 0: submitted 2 point(s) of bayes_local's bayes sweep (2 of 4 asked), drawn at random" in first.stdout
    assert "without --wait one batch is submitted" in first.stdout
    assert [t.state.name for t in journal_trials(sweep_dir)] == ["RUNNING", "RUNNING"]

    second = submit(sweep_dir, *TINY, env=env, job=job_file, executor="local", wait=True, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    out = second.stdout
    told_first = [re.search(rf"told {n}-\S+: complete, val_mase=", out) for n in ("00", "01")]
    assert all(told_first) and max(m.start() for m in told_first) < out.index("batch 1: submitted 2 point(s)"), out
    assert "suggested by TPE from 2 result(s)" in out and "all 4 point(s) of the bayes sweep told" in out, out

    trials = journal_trials(sweep_dir)
    record = json.loads((sweep_dir / "submission.json").read_text())
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    assert [t.user_attrs["batch"] for t in trials] == [0, 0, 1, 1]
    assert [p["trial"] for p in record["points"]] == [0, 1, 2, 3] and len(record["job_ids"]) == 4
    for trial, point in zip(trials, record["points"]):
        res = result(Path(point["run_dir"]))
        assert trial.value == res["val_mase"] and res["steps"] == 8  # told the validation value, never the test
        config = yaml.safe_load((Path(point["run_dir"]) / "config.yaml").read_text())
        assert config["optim"]["lr"] == trial.params["optim.lr"] == point["params"]["optim.lr"]
        assert config["model"]["num_layers"] == trial.params["model.num_layers"]

    status = run_cli("status", str(sweep_dir), "--json", env=env)
    assert status.returncode == 0, status.stderr
    history = json.loads(status.stdout)["bayes"]
    best = min(trials, key=lambda t: t.value)
    assert [r["by"] for r in history["history"]] == ["random", "random", "tpe", "tpe"]
    assert history["best"]["number"] == best.number and history["best"]["value"] == best.value
    text = run_cli("status", str(sweep_dir), env=env).stdout
    assert "bayes (Optuna TPE" in text and "4 of 4 point(s) asked, 4 told; the first 2 at random" in text, text
    assert f"best: #{best.number} {history['best']['point']}  val_mase={best.value:.4g}" in text, text

    third = submit(sweep_dir, *TINY, env=env, job=job_file, executor="local", timeout=300)
    assert third.returncode == 0 and "all 4 point(s) of the bayes sweep told" in third.stdout, third.stdout
    assert json.loads((sweep_dir / "submission.json").read_text())["job_ids"] == record["job_ids"]  # nothing new


@pytest.mark.node1_jobs
def test_bayes_sweep_with_halving_on_slurm_tells_stopped_points_as_pruned(
        cluster: None, tmp_path: Path, jobs: list[str]) -> None:
    """Four points as two job arrays of two on the real cluster, halved at rungs of 2, 4 and 8
    steps: of two points at a rung the worse stops, and TPE is told it as pruned, with the
    values it reached at its rungs; the best point is one that ran to the end."""
    sweep = {**BAYES, "early_terminate": {"type": "hyperband", "min_iter": 2, "eta": 2}}
    job_file = sweep_job(tmp_path, "bayes_slurm", sweep,
                         slurm={"array_parallelism": 2, "time_min": 10, "additional": {"nodelist": "node1"}})
    env = job_env(tmp_path, tmp_path)
    sweep_dir = tmp_path / "sweep"
    done = submit(sweep_dir, *TINY, "train.max_steps=12", "train.eval_every_steps=2", env=env, job=job_file,
                  wait=True, jobs=jobs, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    record = json.loads((sweep_dir / "submission.json").read_text())
    assert_pinned_to_node1(sweep_dir, record["job_ids"])
    assert len({i.split("_")[0] for i in record["job_ids"]}) == 2  # one job array per batch
    trials = journal_trials(sweep_dir)
    states = [t.state.name for t in trials]
    assert len(trials) == 4 and set(states) <= {"COMPLETE", "PRUNED"} and "PRUNED" in states, states
    for trial, point in zip(trials, record["points"]):
        run_dir = Path(point["run_dir"])
        res = result(run_dir)
        if trial.state.name == "PRUNED":
            decision = json.loads((run_dir / "halving.json").read_text())
            rungs = json.loads((sweep_dir / "rungs" / f"{run_dir.name}.json").read_text())
            assert res["stopped_early"] and res["steps"] == decision["step"] < 12
            assert trial.intermediate_values == {v["step"]: v["value"] for v in rungs.values()}
            assert trial.value == decision["value"]  # where it stopped: the last rung it reached
        else:
            assert res["steps"] == 12 and trial.value == res["val_mase"] and not (run_dir / "halving.json").exists()
    history = json.loads(run_cli("status", str(sweep_dir), "--json", env=env).stdout)["bayes"]
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert history["best"]["number"] == min(complete, key=lambda t: t.value).number
    assert all(math.isfinite(t.value) for t in trials) and os.path.isfile(sweep_dir / "study.jsonl")
