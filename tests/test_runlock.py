"""One live writer per run directory: the lock's decisions, then real processes racing for a run."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lstm_train.runlock import LOCK, Holder, LockLost, RunLock, RunLocked, StaleLockWarning, slurm_job_state, stale_reason

from .conftest import ROOT, run_cli

JOB = str(ROOT / "jobs" / "mnist_lstm.yaml")


def holder(**changes: object) -> Holder:
    base = Holder(host="node1", pid=4242, pid_start="1000", boot_id="boot-a", pid_namespace="pid:[1]", slurm_job_id=None,
                  slurm_restart_count=0, since="2026-01-01T00:00:00+00:00", token="t")
    return dataclasses.replace(base, **changes)


def never_asked(*args: object) -> object:
    raise AssertionError(f"should not be asked: {args}")


def dead_pid() -> int:
    """The pid of a process of this host that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# -- decisions -------------------------------------------------------------------------------

def test_same_host_is_decided_by_the_pid_and_its_start() -> None:
    me = holder(pid=1, token="me")
    seen = []

    def running(pid: int, start: str | None) -> bool:
        seen.append((pid, start))
        return pid == 4242 and start == "1000"

    assert stale_reason(holder(), me, running, never_asked) is None
    assert stale_reason(holder(pid_start="999"), me, running, never_asked) == "pid 4242 no longer runs on host node1"
    assert stale_reason(holder(pid=77), me, running, never_asked) == "pid 77 no longer runs on host node1"
    assert seen == [(4242, "1000"), (4242, "999"), (77, "1000")]
    # A reboot ends every process of the host, whatever pid now has that number.
    assert stale_reason(holder(boot_id="boot-b"), me, running, never_asked) == "host node1 has rebooted since"
    # A holder inside a SLURM job on this host: the pid still decides (SLURM is not asked).
    assert stale_reason(holder(slurm_job_id="55"), me, running, never_asked) is None


def test_another_host_without_slurm_is_never_taken_over() -> None:
    me = holder(host="node2", token="me")
    assert stale_reason(holder(), me, never_asked, never_asked) is None
    # A container on the same host with its own pid namespace cannot see the holder's pid either.
    container = holder(pid_namespace="pid:[2]", token="me")
    assert stale_reason(holder(), container, never_asked, never_asked) is None
    assert stale_reason(holder(slurm_job_id="55"), container, never_asked, lambda job: "FAILED") is not None


def test_a_lock_file_from_another_version_is_still_read(tmp_path: Path) -> None:
    (tmp_path / LOCK).write_text(json.dumps({"host": "node9", "pid": 12, "since": "x", "future_field": 1}))
    with pytest.raises(RunLocked, match="in use by another run: pid 12 on host node9, since x"):
        RunLock.acquire(tmp_path)


def test_another_host_is_taken_over_once_its_slurm_job_has_ended() -> None:
    me = holder(host="node2", slurm_job_id="99", token="me")
    other = holder(slurm_job_id="55")
    for state, stale in (("RUNNING", False), ("PENDING", False), ("COMPLETING", False), ("SUSPENDED", False),
                         ("COMPLETED", True), ("CANCELLED", True), ("FAILED", True), ("TIMEOUT", True),
                         ("NODE_FAIL", True), ("OUT_OF_MEMORY", True), ("", True), (None, False)):
        reason = stale_reason(other, me, never_asked, lambda job, state=state: state if job == "55" else "?")
        assert (reason is not None) == stale, (state, reason)
    assert stale_reason(other, me, never_asked, lambda job: "COMPLETED") == "its SLURM job 55 has ended (COMPLETED)"
    assert "SLURM no longer knows it" in stale_reason(other, me, never_asked, lambda job: "")


def test_a_requeued_job_takes_over_from_its_earlier_run_even_while_it_runs() -> None:
    old = holder(slurm_job_id="55", slurm_restart_count=0)
    requeued = holder(host="node2", slurm_job_id="55", slurm_restart_count=1, token="me")
    assert stale_reason(old, requeued, never_asked, never_asked) == (
        "it is run 0 of SLURM job 55, which was requeued (this is run 1)")
    # The same run of the same job (two `lstm-train run` in one allocation) is no takeover:
    # on another host SLURM says the job runs, on this host the pid does.
    same_run = holder(host="node2", slurm_job_id="55", token="me")
    assert stale_reason(old, same_run, never_asked, lambda job: "RUNNING") is None
    assert stale_reason(old, dataclasses.replace(same_run, host="node1"), lambda pid, start: True, never_asked) is None
    # An older run never takes the lock from a newer one.
    assert stale_reason(requeued, dataclasses.replace(old, host="node3", token="x"), never_asked,
                        lambda job: "RUNNING") is None


# -- the lock file, in this process ------------------------------------------------------------

def test_acquire_records_the_holder_and_refuses_a_second_writer(tmp_path: Path) -> None:
    lock = RunLock.acquire(tmp_path, environ={"SLURM_JOB_ID": "123", "SLURM_RESTART_COUNT": "2"})
    record = json.loads((tmp_path / LOCK).read_text())
    assert record["host"] == socket.gethostname() and record["pid"] == os.getpid()
    assert record["slurm_job_id"] == "123" and record["slurm_restart_count"] == 2 and record["since"]
    with pytest.raises(RunLocked) as e:
        RunLock.acquire(tmp_path)  # this process is alive: the lock is not stale
    assert f"pid {os.getpid()} on host {socket.gethostname()}, SLURM job 123 (restart 2), since {record['since']}" in str(e.value)
    assert isinstance(e.value, ValueError)
    lock.check()
    lock.release()
    assert not (tmp_path / LOCK).exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no private files left behind
    RunLock.acquire(tmp_path).release()


def test_a_dead_holder_is_taken_over_with_a_warning_and_learns_it_lost(tmp_path: Path) -> None:
    gone = dataclasses.replace(Holder.current(), pid=dead_pid(), token="old")
    (tmp_path / LOCK).write_text(json.dumps(dataclasses.asdict(gone)))
    with pytest.warns(StaleLockWarning, match=f"from pid {gone.pid} on host .*: pid {gone.pid} no longer runs"):
        lock = RunLock.acquire(tmp_path)
    assert json.loads((tmp_path / LOCK).read_text())["token"] == lock.holder.token

    # The old holder, had it survived, would see on its next write that it lost the run.
    stale = RunLock(tmp_path / LOCK, gone)
    with pytest.raises(LockLost, match="no longer holds the run; held now by pid"):
        stale.check()
    stale.release()  # releasing a lock taken over leaves the new holder's file alone
    assert json.loads((tmp_path / LOCK).read_text())["token"] == lock.holder.token
    lock.release()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_requeued_job_takes_over_from_its_earlier_run_that_still_runs(tmp_path: Path) -> None:
    earlier = RunLock.acquire(tmp_path, environ={"SLURM_JOB_ID": "77"})  # alive: this very process
    with pytest.warns(StaleLockWarning, match=r"it is run 0 of SLURM job 77, which was requeued \(this is run 1\)"):
        requeued = RunLock.acquire(tmp_path, environ={"SLURM_JOB_ID": "77", "SLURM_RESTART_COUNT": "1"})
    with pytest.raises(LockLost, match="held now by pid .*SLURM job 77 \\(restart 1\\)"):
        earlier.check()  # the earlier run stops at its next write
    earlier.release()
    requeued.check()
    requeued.release()
    assert list(tmp_path.iterdir()) == []


def test_slurm_job_states_from_the_real_cluster(cluster: None, tmp_path: Path) -> None:
    submit = subprocess.run(["sbatch", "--parsable", "-o", str(tmp_path / "out"), "--wrap", "sleep 120"],
                            capture_output=True, text=True, check=True)
    job = submit.stdout.strip().split(";")[0]
    try:
        assert slurm_job_state(job) in ("PENDING", "CONFIGURING", "RUNNING")
    finally:
        subprocess.run(["scancel", job], check=True)
    deadline = time.time() + 60
    while (state := slurm_job_state(job)) not in ("CANCELLED", ""):
        assert time.time() < deadline, state
        time.sleep(0.5)
    assert slurm_job_state("999999999") == ""  # a job SLURM never had
    me = holder(host="elsewhere", token="me")
    assert stale_reason(holder(slurm_job_id=job), me) is not None  # asks the real SLURM


# -- real runs ---------------------------------------------------------------------------------

def test_two_concurrent_runs_on_one_directory(fake_mnist: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["run", JOB, f"data.root={fake_mnist}", f"train.output_dir={out}", "train.epochs=2"]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    first = subprocess.Popen([sys.executable, "-m", "lstm_train", *args], env=env, cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / LOCK).exists():
        assert first.poll() is None and time.time() < deadline, "the first run never took its lock"
        time.sleep(0.05)
    # Hold the first run still (it keeps its lock, as a slow live run would) while the second starts.
    first.send_signal(signal.SIGSTOP)
    try:
        second = run_cli(*args)
    finally:
        first.send_signal(signal.SIGCONT)
    stdout, stderr = first.communicate(timeout=300)

    assert second.returncode == 2, second.stderr[-3000:]
    assert f"error: {out} is in use by another run: pid {first.pid} on host {socket.gethostname()}, since " in second.stderr
    assert "Traceback" not in second.stderr
    assert first.returncode == 0, stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["steps"] == 16 and result["resumed_from_step"] is None and result["test_samples"] == 200
    assert result == json.loads(stdout[stdout.index("{"):])
    assert not (out / LOCK).exists()  # released at the end


def test_a_lock_left_by_a_killed_run_is_taken_over(fake_mnist: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    gone = dataclasses.replace(Holder.current(), pid=dead_pid(), since="2026-01-01T00:00:00+00:00")
    (out / LOCK).write_text(json.dumps(dataclasses.asdict(gone)))
    proc = run_cli("run", JOB, f"data.root={fake_mnist}", f"train.output_dir={out}", "train.max_steps=4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"warning: taking over {out / LOCK} from pid {gone.pid} on host {gone.host}" in proc.stderr
    assert f"pid {gone.pid} no longer runs on host {gone.host}" in proc.stderr
    assert json.loads((out / "result.json").read_text())["steps"] == 4
    assert not (out / LOCK).exists()
