"""`lstm-train submit / status / cancel` against a real SLURM cluster (slurm/local-cluster.sh).

No mocks: real sbatch/squeue/sacct/scontrol, real submitit pickles, real DDP over gloo
between the SLURM tasks, real signals.  In CI (CI=true) a missing cluster or MNIST is a
failure; locally those tests skip with the reason.  The local/debug executor tests need
no cluster.

Timings on the 2-core development machine are printed (run with `-s` to see them).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from lstm_train.config import load_job
from lstm_train.tracking import wandb_run_id

from .slurm_helpers import JOB, cli, job_ids, logs_of, result, rows, submit, wait_final, wait_for

TINY = ["train.max_steps=30", "train.log_every=10", "tracking.wandb.mode=disabled", "slurm.time_min=10"]


# ---------------------------------------------------------------------------
# Bad input: one clear message each, never a traceback


def test_bad_inputs_are_clear(cluster: None, tmp_path: Path, slurm_env: dict[str, str], jobs: list[str]) -> None:
    def refused(p: subprocess.CompletedProcess, *needles: str) -> str:
        out = p.stdout + p.stderr
        assert p.returncode == 2, out
        assert "Traceback" not in out, out
        for needle in needles:
            assert needle in p.stderr, p.stderr
        return p.stderr

    refused(submit(tmp_path / "a", *TINY, "slurm.partition=gpu", env=slurm_env),
            "slurm.partition='gpu' does not exist", "debug (2 nodes")
    refused(submit(tmp_path / "b", *TINY, "slurm.nodes=3", env=slurm_env), "slurm.nodes=3", "at most 2 node(s)")
    refused(submit(tmp_path / "c", *TINY, "slurm.cpus_per_task=64", env=slurm_env),
            "64 CPUs per node", "at most 2")
    refused(submit(tmp_path / "f", *TINY, "slurm.gpus_per_node=1", env=slurm_env),
            "sbatch refused the job", "Invalid generic resource (gres) specification")
    no_slurm = {**slurm_env, "PATH": str(tmp_path / "empty-path")}
    refused(submit(tmp_path / "d", *TINY, env=no_slurm), "`sbatch` not found", "--executor local")
    refused(submit(tmp_path / "e", *TINY, "slurm.nodes=2", env=slurm_env, executor="local"),
            "runs on this machine only", "slurm.tasks_per_node=2")
    refused(cli("status", str(tmp_path), env=slurm_env), "submission.json not found")
    for name in "abcdef":
        assert not (tmp_path / name / "submission.json").exists()


def test_job_failing_on_the_node_says_why(cluster: None, tmp_path: Path, slurm_env: dict[str, str], jobs: list[str]) -> None:
    run_dir = tmp_path / "fails"
    p = submit(run_dir, *TINY, "data.root=/nonexistent/mnist", env=slurm_env, wait=True, jobs=jobs)
    err = p.stderr
    assert p.returncode == 1, p.stdout + err
    jid = job_ids(run_dir)[0]
    assert f"error: job {jid} ended FAILED" in err, err
    assert "error in task 0:" in err and "/nonexistent/mnist" in err, err
    assert f"full log: {run_dir / 'slurm' / f'{jid}_0_log.err'}" in err, err
    status = cli("status", str(run_dir), env=slurm_env)
    assert status.returncode == 1 and "FAILED" in status.stdout and "/nonexistent/mnist" in status.stdout, status.stdout
    machine = cli("status", str(run_dir), "--json", env=slurm_env)
    assert machine.returncode == 1, machine.stderr
    data = json.loads(machine.stdout)  # nothing but the JSON on stdout
    assert data["kind"] == "run" and data["failed"] is True and data["result"] is None, data
    assert [(j["job_id"], j["state"]) for j in data["jobs"]] == [(jid, "FAILED")], data


# ---------------------------------------------------------------------------
# Jobs that run


def test_one_node_job_to_completion(cluster: None, tmp_path: Path, slurm_env: dict[str, str], jobs: list[str]) -> None:
    run_dir = tmp_path / "one"
    t0 = time.monotonic()
    p = submit(run_dir, *TINY, env=slurm_env, wait=True, jobs=jobs)
    assert p.returncode == 0, p.stdout + p.stderr
    print(f"\none-node job: {time.monotonic() - t0:.1f} s from submit to result")
    record = json.loads((run_dir / "submission.json").read_text())
    jid = record["job_ids"][0]
    run_id, group = record["run_id"], record["wandb"]["group"]
    assert run_id == load_job(JOB, TINY).run_id  # what `run` (here, salloc, sbatch) calls the same job
    assert group == f"mnist_lstm-{json.loads((run_dir / 'started.json').read_text())['date']}"
    for needle in (f"as job {jid}", f"run dir:   {run_dir}", f"{jid}_0_log.out", f"{jid}_0_log.err",
                   f"W&B group: {group}", "COMPLETED"):
        assert needle in p.stdout, p.stdout
    res = result(run_dir)
    assert res["world_size"] == 1 and res["steps"] == 30 and not res["interrupted"]
    assert json.loads(p.stdout[p.stdout.index("{"):]) == res  # --wait prints the result
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["train"]["run_id"] == run_id and config["train"]["output_dir"] == str(run_dir)

    status = cli("status", str(run_dir), env=slurm_env)
    assert status.returncode == 0, status.stderr
    metric = res.get("primary_metric") or next(k for k in res if k.startswith("test_"))
    assert re.search(rf"^{jid}\s+COMPLETED", status.stdout, re.M) and f"{metric}=" in status.stdout, status.stdout

    again = submit(run_dir, *TINY, env=slurm_env)  # finished: not submitted twice
    assert again.returncode == 0 and "already finished" in again.stderr, again.stdout + again.stderr
    assert job_ids(run_dir) == [jid]


def test_ddp_two_nodes_and_two_tasks(cluster: None, tmp_path: Path, slurm_env: dict[str, str], jobs: list[str]) -> None:
    """2 nodes x 1 task and 1 node x 2 tasks: one gloo group of 2, identical weights on both ranks."""
    layouts = {"2x1": ["slurm.nodes=2"], "1x2": ["slurm.tasks_per_node=2"]}
    t0 = time.monotonic()
    for name, extra in layouts.items():
        p = submit(tmp_path / name, *TINY, *extra, env=slurm_env, jobs=jobs)
        assert p.returncode == 0, p.stdout + p.stderr
    ids = {name: job_ids(tmp_path / name)[0] for name in layouts}
    states = wait_final(list(ids.values()), 400, tmp_path / "2x1" / "slurm")
    print(f"\nDDP 2x1 and 1x2 side by side: {time.monotonic() - t0:.1f} s")
    for name, jid in ids.items():
        run_dir = tmp_path / name
        assert states[jid] == "COMPLETED", (name, states, logs_of(run_dir, jid))
        res = result(run_dir)
        assert res["world_size"] == 2
        digests = res["weights_sha1_per_rank"]
        assert len(digests) == 2 and digests[0] == digests[1], digests
        out0, _ = logs_of(run_dir, jid, 0)
        out1, _ = logs_of(run_dir, jid, 1)
        assert "MULTI_CPU" in out0 and "2 process(es)" in out0, out0
        assert rows(run_dir / "metrics" / "rank-1.jsonl"), "rank 1 logged nothing"
        if name == "2x1":
            assert "node=0(2)" in out0 and "node=1(2)" in out1 and "global_rank=1(2)" in out1, out1
        else:
            assert "node=0(1)" in out1 and "local_rank=1(2)" in out1, out1


@pytest.mark.node1_jobs
def test_sweep_is_one_array_with_status_table(cluster: None, tmp_path: Path, slurm_env: dict[str, str], jobs: list[str]) -> None:
    spec = yaml.safe_load(JOB.read_text())
    spec["name"] = "mnist_sweep_test"
    spec["slurm"] = {"array_parallelism": 2, "time_min": 10, "additional": {"nodelist": "node1"}}
    spec["sweep"] = {"grid": {"optim.lr": [0.01, 0.003], "model.hidden_size": [16, 32]}}
    job_file = tmp_path / "sweep.yaml"
    job_file.write_text(yaml.safe_dump(spec))
    sweep_dir = tmp_path / "sweep"
    t0 = time.monotonic()
    p = submit(sweep_dir, *TINY, env=slurm_env, job=job_file, wait=True, jobs=jobs, timeout=600)
    print(f"\n4-point sweep, 2 at a time: {time.monotonic() - t0:.1f} s")
    assert p.returncode == 0, p.stdout + p.stderr

    record = json.loads((sweep_dir / "submission.json").read_text())
    ids = record["job_ids"]
    assert record["kind"] == "sweep" and len(ids) == 4
    arrays = {i.split("_")[0] for i in ids}
    assert len(arrays) == 1 and sorted(i.split("_")[1] for i in ids) == ["0", "1", "2", "3"], ids
    script = (sweep_dir / "slurm" / f"{arrays.pop()}_submission.sh").read_text()
    assert "#SBATCH --array=0-3%2" in script and "#SBATCH --nodelist=node1" in script, script

    score = {}
    for point in record["points"]:
        run_dir = Path(point["run_dir"])
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert config["optim"]["lr"] == point["params"]["optim.lr"]
        assert config["model"]["hidden_size"] == point["params"]["model.hidden_size"]
        res = result(run_dir)
        # Ranked by the task's primary metric on validation data (held out of MNIST's training
        # images for the sweep), never by the test split.
        metric = "val_" + res["primary_metric"].removeprefix("test_")
        higher = res["higher_is_better"]
        assert config["data"]["val_fraction"] == 0.1 and res["val_samples"] == 6000, res
        score[point["name"]] = res[metric]
    assert len(set(record["points"][i]["run_dir"] for i in range(4))) == 4

    status = cli("status", str(sweep_dir), env=slurm_env)
    assert status.returncode == 0, status.stderr
    machine = json.loads(cli("status", str(sweep_dir), "--json", env=slurm_env).stdout)
    assert machine["kind"] == "sweep" and machine["completed"] == 4 and machine["failed"] == [], machine
    assert sorted(p["name"] for p in machine["points"]) == sorted(p["name"] for p in record["points"])
    lines = status.stdout.splitlines()
    header = next(i for i, ln in enumerate(lines) if ln.startswith("point"))
    assert "state" in lines[header] and metric in lines[header], status.stdout
    table = [ln.split() for ln in lines[header + 1: header + 5]]
    assert [r[0] for r in table] == sorted(score, key=score.get, reverse=higher), status.stdout
    assert all(r[1] == "COMPLETED" for r in table) and [float(r[2]) for r in table] == sorted(
        (round(a, 4) for a in score.values()), reverse=higher), status.stdout

    # Resubmitted: finished points are skipped; a point without result.json runs again.
    again = submit(sweep_dir, *TINY, env=slurm_env, job=job_file)
    assert again.returncode == 0 and again.stdout.count("finished") >= 4 and "nothing to submit" in again.stdout, again.stdout
    assert json.loads((sweep_dir / "submission.json").read_text())["job_ids"] == ids
    redo = record["points"][2]
    Path(redo["run_dir"], "result.json").unlink()
    third = submit(sweep_dir, *TINY, env=slurm_env, job=job_file, jobs=jobs)
    assert third.returncode == 0 and third.stdout.count("skipping") == 3, third.stdout
    new = [i for i in job_ids(sweep_dir) if i not in ids]
    assert len(new) == 1, job_ids(sweep_dir)
    assert wait_final(new, 300, sweep_dir / "slurm")[new[0]] == "COMPLETED"
    res = result(Path(redo["run_dir"]))
    assert res["resumed_from_step"] == 30  # its final checkpoint: nothing trained twice


@pytest.mark.node1_jobs
def test_requeue_resumes_with_same_wandb_runs(cluster: None, tmp_path: Path, slurm_env: dict[str, str], jobs: list[str]) -> None:
    """`scontrol requeue` mid-training (SIGTERM, then the same job id runs again)."""
    run_dir = tmp_path / "requeue"
    slurm_env = {**slurm_env, "LSTM_TRAIN_CACHE": str(tmp_path / "prepared")}  # this test's own store
    p = submit(run_dir, "train.max_steps=600", "train.log_every=10", "train.checkpoint_every=50",
               "tracking.wandb.mode=offline", "slurm.time_min=10", "slurm.additional.nodelist=node1",
               env=slurm_env, jobs=jobs)
    assert p.returncode == 0, p.stdout + p.stderr
    jid = job_ids(run_dir)[0]
    assert "#SBATCH --nodelist=node1" in (run_dir / "slurm" / f"{jid}_submission.sh").read_text()
    t0 = time.monotonic()
    wait_for(lambda: list((run_dir / "checkpoints").glob("step-*")), 240, "the first checkpoint")
    t_requeue = time.monotonic()
    subprocess.run(["scontrol", "requeue", jid], check=True)
    states = wait_final([jid], 300, run_dir / "slurm")
    t_done = time.monotonic()
    print(f"\nrequeue test: first checkpoint {t_requeue - t0:.1f} s after submit, "
          f"finished {t_done - t_requeue:.1f} s after the requeue")
    out, err = logs_of(run_dir, jid)
    assert states[jid] == "COMPLETED", (states, out, err)
    assert "DUE TO JOB REQUEUE" in err and "received SIGTERM" in err, err
    res = result(run_dir)
    assert res["resumed_from_step"] and res["resumed_from_step"] > 0 and res["steps"] == 600, res
    assert f"resuming from {run_dir / 'checkpoints'}" in out, out
    # The data was prepared once, by the first attempt; the requeued one mapped it.
    assert err.count("prepared data: preparing classify data") == 1, err
    assert "prepared data: mapping " in err.split("DUE TO JOB REQUEUE")[-1], err

    # Both attempts wrote into the same W&B run (offline: one directory per attempt, same id).
    run_id = json.loads((run_dir / "submission.json").read_text())["run_id"]
    expected = wandb_run_id("mnist_lstm", run_id, 0)
    attempts = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(attempts) >= 2, attempts
    assert {d.name.split("-", 3)[-1] for d in attempts} == {expected}, attempts


def test_cancel_checkpoints_and_status(cluster: None, tmp_path: Path, slurm_env: dict[str, str], jobs: list[str]) -> None:
    run_dir = tmp_path / "cancel"
    p = submit(run_dir, "train.max_steps=3000", "train.log_every=10", "train.checkpoint_every=100000",
               "tracking.wandb.mode=disabled", "slurm.time_min=10", env=slurm_env, jobs=jobs)
    assert p.returncode == 0, p.stdout + p.stderr
    jid = job_ids(run_dir)[0]
    wait_for(lambda: len(rows(run_dir / "metrics" / "rank-0.jsonl")) >= 2, 240, "training to start")
    c = cli("cancel", str(run_dir), env=slurm_env)
    assert c.returncode == 0 and f"cancelled {jid}" in c.stdout, c.stdout + c.stderr
    assert wait_final([jid], 120)[jid] == "CANCELLED"
    assert list((run_dir / "checkpoints").glob("step-*")), "SIGTERM from scancel saved no checkpoint"
    status = cli("status", str(run_dir), env=slurm_env)
    assert "CANCELLED" in status.stdout and "newest checkpoint: step" in status.stdout, status.stdout
    assert status.returncode == 1  # ended without a result
    assert "nothing to cancel" in cli("cancel", str(run_dir), env=slurm_env).stdout


# ---------------------------------------------------------------------------
# Without SLURM: the same Trainer through submitit's local and debug executors


def test_local_executor_two_processes(tmp_path: Path, slurm_env: dict[str, str]) -> None:
    run_dir = tmp_path / "local"
    p = submit(run_dir, *TINY, "slurm.tasks_per_node=2", env=slurm_env, executor="local", wait=True)
    assert p.returncode == 0, p.stdout + p.stderr
    res = result(run_dir)
    assert res["world_size"] == 2 and len(set(res["weights_sha1_per_rank"])) == 1
    status = cli("status", str(run_dir), env=slurm_env)
    assert "COMPLETED" in status.stdout, status.stdout


def test_debug_executor_runs_in_process(tmp_path: Path, slurm_env: dict[str, str]) -> None:
    run_dir = tmp_path / "debug"
    p = submit(run_dir, "train.max_steps=5", "train.log_every=5", "tracking.wandb.mode=disabled",
               env=slurm_env, executor="debug")
    assert p.returncode == 0, p.stdout + p.stderr
    assert result(run_dir)["steps"] == 5
