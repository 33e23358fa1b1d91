"""The SLURM side's parsers and reports on text recorded from the local cluster
(slurm/local-cluster.sh, Slurm 22.05.8), and its module boundaries.

No cluster needed: each literal below is what the command printed there (marked
where a field was edited to show another case).  The real-cluster behaviour is
in test_submit.py, test_slurm_faults.py and test_slurm_template.py.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path


from lstm_train.slurm.diagnose import describe_attempts, explain_failure, first_casualty, parse_srun_errors
from lstm_train.slurm.jobstate import JobState, parse_history, parse_sacct, parse_squeue, read_result
from lstm_train.slurm.preflight import parse_node_cpus, parse_partitions, slurm_minutes
from lstm_train.slurm.status import primary_metric, status_sweep
from lstm_train.slurm.submission import sbatch_refusal

# `scontrol show partition --oneliner`
SCONTROL_PARTITION = (
    "PartitionName=debug AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL AllocNodes=ALL Default=YES QoS=N/A "
    "DefaultTime=NONE DisableRootJobs=NO ExclusiveUser=NO GraceTime=0 Hidden=NO MaxNodes=UNLIMITED "
    "MaxTime=UNLIMITED MinNodes=0 LLN=NO MaxCPUsPerNode=UNLIMITED Nodes=node[1-2] PriorityJobFactor=1 "
    "PriorityTier=1 RootOnly=NO ReqResv=NO OverSubscribe=FORCE:4 OverTimeLimit=NONE PreemptMode=OFF State=UP "
    "TotalCPUs=4 TotalNodes=2 SelectTypeParameters=NONE JobDefaults=(null) DefMemPerNode=UNLIMITED "
    "MaxMemPerNode=UNLIMITED TRES=cpu=4,mem=43390M,node=2,billing=4\n"
)

# `sacct -X -P -j 2,3,7,9,13 -o JobID,State,ExitCode,Elapsed,NodeList,Reason`: a job cancelled
# while pending, two FAILED (rank 1 killed), one COMPLETED after a node failure, a held array.
SACCT = """JobID|State|ExitCode|Elapsed|NodeList|Reason
2|CANCELLED by 0|0:0|00:00:00|None assigned|PartitionNodeLimit
3|FAILED|9:0|00:00:10|node[1-2]|None
7|FAILED|9:0|00:00:12|node[1-2]|None
9|COMPLETED|0:0|00:00:32|node[1-2]|BeginTime
13_[0-3%1]|PENDING|0:0|00:00:00|None assigned|JobHeldUser
"""

# The same array a few seconds after `scontrol release`: sacct still lists the pending
# range 13_[1-3%1] after task 13_1, which has already completed.
SACCT_ARRAY_RUNNING = """JobID|State|ExitCode|Elapsed|NodeList|Reason
13_0|COMPLETED|0:0|00:00:01|node1|JobHeldUser
13_1|COMPLETED|0:0|00:00:01|node1|JobArrayTaskLimit
13_[1-3%1]|PENDING|0:0|00:00:00|None assigned|JobArrayTaskLimit
"""

# `squeue -h -r -j ... -o '%i|%T|%r|%N|%M'`: a held array, a running job, the same job
# just after `scontrol requeue` (waiting out cred_expire).
SQUEUE = """13_0|PENDING|JobHeldUser||0:00
13_1|PENDING|JobHeldUser||0:00
17|RUNNING|None|node[1-2]|0:02
"""
SQUEUE_REQUEUED = "17|PENDING|BeginTime||0:00\n"

# `sacct -D -X -P -j 9,17 -o JobID,State,ExitCode,Start,End,Elapsed,NodeList,Reason`: job 9
# lost node2 (`scontrol update nodename=node2 state=down`) and finished on its second
# attempt; job 17 was requeued by hand, then cancelled while pending.
SACCT_HISTORY = """JobID|State|ExitCode|Start|End|Elapsed|NodeList|Reason
9|NODE_FAIL|0:0|2026-11-27T08:46:30|2026-11-27T08:46:38|00:00:08|node[1-2]|None
9|COMPLETED|0:0|2026-11-27T08:46:54|2026-11-27T08:47:26|00:00:32|node[1-2]|BeginTime
17|REQUEUED|0:0|2026-11-27T08:50:09|2026-11-27T08:50:11|00:00:02|node[1-2]|None
17|CANCELLED by 0|0:0|None|2026-11-27T08:50:15|00:00:00|None assigned|None
"""

# The end of <job>_0_log.err of a 2-node `lstm-train submit` job after `kill -9` of rank 1
# (srun --kill-on-bad-exit=1): srun's lines, rank 0's consequential gloo error between them.
LOG_RANK_KILLED = """srun: error: node2: task 1: Killed
srun: launch/slurm: _step_signal: Terminating StepId=7.0
slurmstepd-node1: error: *** STEP 7.0 ON node1 CANCELLED AT 2026-11-27T08:45:51 ***
submitit WARNING (2026-11-27 08:45:51,906) - Bypassing signal SIGCONT
submitit ERROR (2026-11-27 08:45:51,908) - Submitted job triggered an exception
[rank0]: Traceback (most recent call last):
[rank0]: RuntimeError: [/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:545] Read error [127.0.0.1]:9942: Connection reset by peer. This is typically caused by a remote worker hanging or bugs in the application. Check the logs of the remote worker before reporting an error. GLHF! 🏖️
srun: error: node1: task 0: Exited with exit code 1
srun: Force Terminated StepId=7.0
"""

# The same after `kill -STOP` of rank 1 with LSTM_TRAIN_COLLECTIVE_TIMEOUT_S=15: rank 0
# times out, srun ends the stopped rank.
LOG_RANK_HUNG = """[rank0]: RuntimeError: [/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 15000ms for recv operation to complete
srun: error: node1: task 0: Exited with exit code 1
srun: launch/slurm: _step_signal: Terminating StepId=10.0
srun: error: node2: task 1: Exited with exit code 1
"""


def test_partitions_from_scontrol() -> None:
    parts = parse_partitions(SCONTROL_PARTITION)
    assert list(parts) == ["debug"]
    debug = parts["debug"]
    assert (debug.default, debug.state, debug.total_nodes, debug.max_nodes, debug.nodes, debug.max_time_min) == (
        True, "UP", 2, None, "node[1-2]", None)
    assert debug.describe() == "debug (2 nodes node[1-2], up, default)"
    # Edited: a partition with limits, not the default.
    limited = SCONTROL_PARTITION.replace("PartitionName=debug", "PartitionName=short").replace(
        "Default=YES", "Default=NO").replace("MaxNodes=UNLIMITED", "MaxNodes=1").replace(
        "MaxTime=UNLIMITED", "MaxTime=1-02:00:30").replace("State=UP", "State=DRAIN")
    short = parse_partitions(SCONTROL_PARTITION + limited)["short"]
    assert (short.default, short.max_nodes, short.max_time_min, short.state) == (False, 1, 1561, "DRAIN")
    assert parse_partitions("") == {}


def test_slurm_time_formats() -> None:
    cases = {"UNLIMITED": None, "INFINITE": None, "30": 30, "30:00": 30, "30:01": 31, "2:00:00": 120,
             "2:00:01": 121, "1-0": 1440, "1-02": 1560, "1-02:30": 1590, "1-00:00:00": 1440}
    assert {text: slurm_minutes(text) for text in cases} == cases


def test_node_cpus_from_sinfo() -> None:
    assert parse_node_cpus("2\n2\n") == [2, 2]  # `sinfo -h -N -p debug -o %c`
    assert parse_node_cpus("") == []


def test_sacct_states_with_submitits_parser() -> None:
    states = parse_sacct(SACCT)
    assert states["2"] == JobState("CANCELLED", "0:0", "00:00:00", "None assigned", "PartitionNodeLimit")
    assert states["3"] == JobState("FAILED", "9:0", "00:00:10", "node[1-2]", "")
    assert states["9"].state == "COMPLETED" and states["9"].reason == ""  # stale BeginTime dropped
    assert {k: v.state for k, v in states.items() if k.startswith("13_")} == {f"13_{i}": "PENDING" for i in range(4)}
    assert states["13_2"].reason == "JobHeldUser" and states["13_2"].active
    assert not states["3"].active and not states["2"].active
    running = parse_sacct(SACCT_ARRAY_RUNNING)
    assert running["13_1"].state == "COMPLETED" and running["13_2"].state == "PENDING", running
    assert parse_sacct("") == {} and parse_sacct("JobID|State\n") == {}


def test_squeue_states() -> None:
    states = parse_squeue(SQUEUE)
    assert states["13_1"] == JobState("PENDING", "", "0:00", "", "JobHeldUser")
    assert states["17"] == JobState("RUNNING", "", "0:02", "node[1-2]", "")
    requeued = parse_squeue(SQUEUE_REQUEUED)["17"]
    assert requeued.state == "PENDING" and requeued.reason == "BeginTime" and requeued.active
    assert parse_squeue("") == {}


def test_requeue_history_from_sacct_duplicates() -> None:
    history = parse_history(SACCT_HISTORY)
    assert [a.state for a in history["9"]] == ["NODE_FAIL", "COMPLETED"]
    assert [a.state for a in history["17"]] == ["REQUEUED", "CANCELLED"]
    lines = describe_attempts(history["9"])
    assert lines == [
        "attempt 1: NODE_FAIL on node[1-2], 2026-11-27T08:46:30 .. 2026-11-27T08:46:38 (00:00:08)",
        "attempt 2: COMPLETED on node[1-2], 2026-11-27T08:46:54 .. 2026-11-27T08:47:26 (00:00:32)",
    ]
    assert "None assigned" not in describe_attempts(history["17"])[1]
    assert parse_history("") == {}


def test_srun_lines_name_the_rank_and_host_that_died_first() -> None:
    killed = parse_srun_errors(LOG_RANK_KILLED)
    assert [(e.host, e.tasks, e.what) for e in killed] == [
        ("node2", [1], "Killed"), ("node1", [0], "Exited with exit code 1")]
    assert first_casualty(killed).describe() == "rank 1 on node2: Killed"
    hung = first_casualty(parse_srun_errors(LOG_RANK_HUNG))
    assert hung.describe() == "rank 0 on node1: Exited with exit code 1"
    # Edited: srun folds tasks with the same fate into one line.
    many = parse_srun_errors("srun: error: node1: tasks 0-2,5: Terminated\n")
    assert many[0].tasks == [0, 1, 2, 5] and many[0].describe() == "ranks 0, 1, 2, 5 on node1: Terminated"
    assert first_casualty([]) is None


class Planted:
    """What an attacker puts in a pickle: unpickling it runs `touch MARKER`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_explanation_of_a_killed_rank(tmp_path: Path) -> None:
    """A job folder as submitit leaves it: the batch log with rank 0's traceback, none from
    the killed rank 1.  The explanation leads with the rank that died, not rank 0's broken
    connection.  submitit's result pickle is never read: a crafted one (that would create a
    file) changes nothing."""
    (tmp_path / "7_0_log.err").write_text(LOG_RANK_KILLED)
    marker = tmp_path / "ran"
    with open(tmp_path / "7_0_result.pkl", "wb") as f:
        pickle.dump(("error", Planted(marker)), f)
    text = explain_failure("7", JobState("FAILED", "9:0", "00:00:12", "node[1-2]"), tmp_path, 2)
    lines = text.splitlines()
    assert lines[0] == "job 7 ended FAILED (exit code 9:0) on node[1-2]"
    assert lines[1] == "first to die: rank 1 on node2: Killed (srun)"
    assert lines[2].startswith("error in task 0 (after the rank above died): RuntimeError: [/__w/pytorch/pytorch/"
                               "third_party/gloo/gloo/transport/tcp/pair.cc:545] Read error [127.0.0.1]:9942: "
                               "Connection reset by peer.")
    assert lines[3] == f"traceback and full log: {tmp_path / '7_0_log.err'}"
    assert not marker.exists()
    assert read_result(tmp_path, "7", 1) is None  # rank 1 was killed: no error of its own
    assert read_result(tmp_path, "../7", 0) is None  # a job id is a number, never a path


def test_status_never_unpickles_a_result_file(tmp_path: Path) -> None:
    """A run directory from someone else: its submission.json names a folder of crafted result
    pickles, and its own local/ folder holds one too.  `lstm-train status` and `cancel` read
    the job's state from its log, in the folder derived from the run directory, and run nothing."""
    run_dir, elsewhere, marker = tmp_path / "run", tmp_path / "elsewhere", tmp_path / "ran"
    for folder in (run_dir / "local", elsewhere):
        folder.mkdir(parents=True)
        with open(folder / "999999_0_result.pkl", "wb") as f:
            pickle.dump(("error", Planted(marker)), f)
    failed = "submitit ERROR (2026-12-02 10:00:00,000) - Submitted job triggered an exception\n"
    (run_dir / "local" / "999999_0_log.out").write_text(
        "submitit INFO (2026-12-02 09:59:00,000) - Starting with JobEnvironment(...)\n" + failed)
    (run_dir / "local" / "999999_0_log.err").write_text(
        failed + "Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\nValueError: bad input\n")
    (run_dir / "submission.json").write_text(json.dumps({
        "kind": "run", "executor": "local", "job_ids": ["999999"], "run_dir": str(run_dir), "folder": str(elsewhere)}))
    said = {}
    for command in ("status", "cancel"):
        proc = subprocess.run([sys.executable, "-m", "lstm_train", command, str(run_dir)], capture_output=True, text=True)
        expected = 1 if command == "status" else 0  # status exits 1: the job ended FAILED
        assert proc.returncode == expected and "Traceback" not in proc.stderr, proc.stderr
        assert not marker.exists(), f"{command} ran a pickle"
        said[command] = proc.stdout
    assert "job 999999 ended FAILED" in said["status"] and "error in task 0: ValueError: bad input" in said["status"]
    assert said["cancel"].startswith("nothing to cancel")


def test_sbatch_refusals() -> None:
    assert sbatch_refusal("sbatch: error: Invalid generic resource (gres) specification\n") == \
        "Invalid generic resource (gres) specification"
    assert sbatch_refusal("sbatch: error: invalid partition specified: nope\n"
                          "sbatch: error: Batch job submission failed: Invalid partition name specified\n") == \
        "invalid partition specified: nope; Batch job submission failed: Invalid partition name specified"


def test_primary_metric_of_result_files() -> None:
    assert primary_metric({"test_loss": 0.3, "test_bleu": 21.0, "primary_metric": "test_bleu",
                           "higher_is_better": True}) == ("test_bleu", True)
    assert primary_metric({"test_loss": 0.3, "test_mase": 0.9, "primary_metric": "test_mase",
                           "higher_is_better": False}) == ("test_mase", False)
    # Older files: the first test_ key, which was always the loss.
    assert primary_metric({"test_loss": 0.3, "test_accuracy": 0.9, "steps": 3}) == ("test_loss", False)
    assert primary_metric({"steps": 3}) == (None, False)


def sweep_dir_with(tmp_path: Path, results: dict[str, dict | None]) -> tuple[Path, dict]:
    """A sweep directory as `submit` leaves it (debug executor: no SLURM to ask), with
    the given result.json per point."""
    points = []
    for i, (name, res) in enumerate(results.items()):
        run_dir = tmp_path / name
        run_dir.mkdir()
        if res is not None:
            (run_dir / "result.json").write_text(json.dumps(res))
        points.append({"name": name, "params": {}, "run_dir": str(run_dir), "job_id": f"9_{i}"})
    record = {"kind": "sweep", "executor": "debug", "job_ids": [p["job_id"] for p in points],
              "folder": str(tmp_path / "debug"), "points": points}
    (tmp_path / "submission.json").write_text(json.dumps(record))
    return tmp_path, record


def table_of(out: str) -> list[list[str]]:
    lines = out.splitlines()
    header = next(i for i, ln in enumerate(lines) if ln.startswith("point"))
    return [ln.split() for ln in lines[header:]]


def test_sweep_table_ranks_by_the_tasks_primary_metric(tmp_path: Path, capsys) -> None:
    """Ranked by the primary metric on validation data, the test value beside it (never ranked by)."""
    def res(val: float, test: float) -> dict:
        return {"val_mase": val, "test_mase": test, "primary_metric": "test_mase", "higher_is_better": False}

    sweep, record = sweep_dir_with(tmp_path, {"00-a": res(0.9, 0.1), "01-b": res(0.5, 0.8), "02-c": None,
                                              "03-d": res(0.7, 0.2)})
    status_sweep(sweep, record)
    out = capsys.readouterr().out
    assert "ranked by val_mase (lower is better; validation data)" in out, out
    table = table_of(out)
    assert table[0] == ["point", "state", "val_mase", "job", "test_mase"]
    assert [r[0] for r in table[1:]] == ["01-b", "03-d", "00-a", "02-c"], out  # unfinished last
    assert [r[2] for r in table[1:]] == ["0.5000", "0.7000", "0.9000", "-"], out
    assert [r[4] for r in table[1:]] == ["0.8000", "0.2000", "0.1000", "-"], out  # shown, not ranked by

    higher = tmp_path / "higher"
    higher.mkdir()
    bleu = {name: {"val_bleu": b, "test_bleu": 0.0, "primary_metric": "test_bleu", "higher_is_better": True}
            for name, b in (("00-a", 10.0), ("01-b", 30.0), ("02-c", 20.0))}
    status_sweep(*sweep_dir_with(higher, bleu))
    assert [r[0] for r in table_of(capsys.readouterr().out)[1:]] == ["01-b", "02-c", "00-a"]

    older = tmp_path / "older"  # points with test metrics only (an older sweep): listed, never ranked by test
    older.mkdir()
    test_only = {name: {"test_mase": m, "primary_metric": "test_mase", "higher_is_better": False}
                 for name, m in (("00-a", 0.9), ("01-b", 0.5))}
    status_sweep(*sweep_dir_with(older, test_only))
    out = capsys.readouterr().out
    assert "ranked by nothing yet" in out and "points without validation metrics are not ranked" in out, out
    assert [r[0] for r in table_of(out)[1:]] == ["00-a", "01-b"], out  # submission order


def test_node_side_imports_nothing_of_the_submit_side_and_status_no_torch(tmp_path: Path) -> None:
    """Fresh interpreters: what importing the node module pulls in, and what `status` and
    `cancel` import on a login node."""
    node = subprocess.run([sys.executable, "-c", (
        "import sys, lstm_train.slurm.node as n; n.Trainer({});"
        "print(sorted(m for m in sys.modules if m.startswith('lstm_train.slurm.')))")],
        capture_output=True, text=True, check=True)
    assert node.stdout.strip() == "['lstm_train.slurm.node']", node.stdout
    sweep, _ = sweep_dir_with(tmp_path, {"00-a": {"test_loss": 0.1}})
    login = subprocess.run([sys.executable, "-c", (
        "import sys; from lstm_train.cli import main;"
        f"codes = main(['status', {str(sweep)!r}]), main(['cancel', {str(sweep)!r}]);"
        "print(codes, 'torch' in sys.modules)")], capture_output=True, text=True, check=True)
    assert login.stdout.strip().endswith("(0, 0) False"), login.stdout + login.stderr
