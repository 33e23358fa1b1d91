"""Job states: where each submitted job is, from sacct (the record) and squeue (what is live).

sacct knows every job that ran, with its exit code and elapsed time, and with
`--duplicates` every earlier incarnation of a requeued job (timeouts,
preemptions, node failures).  squeue knows why a pending job waits.  sacct's
`--parsable2` text is read with submitit's own parser (`SlurmInfoWatcher.read_info`,
which also expands pending array ranges such as `12_[0-3%2]`).

The parsers take the commands' text, so the unit tests feed them recorded output.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from submitit.slurm.slurm import SlurmInfoWatcher

from .commands import query

FINAL_STATES = {
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL",
    "DEADLINE", "PREEMPTED", "REVOKED", "SPECIAL_EXIT",
}

STUCK_REASONS = {
    "PartitionConfig": "it asks for more than its partition offers",
    "PartitionNodeLimit": "it asks for more nodes than its partition allows",
    "PartitionTimeLimit": "its time limit exceeds the partition's",
    "ReqNodeNotAvail": "a node it needs is down or reserved",
    "InvalidAccount": "its account is invalid",
    "InvalidQOS": "its QOS is invalid",
}

SACCT_FIELDS = "JobID,State,ExitCode,Elapsed,NodeList,Reason"
HISTORY_FIELDS = "JobID,State,ExitCode,Start,End,Elapsed,NodeList,Reason"


@dataclass
class JobState:
    state: str
    exit_code: str = ""
    elapsed: str = ""
    nodes: str = ""
    reason: str = ""

    @property
    def active(self) -> bool:
        """Queued, running or on its way back (requeued): not finished in any way."""
        return self.state not in FINAL_STATES and self.state not in ("UNKNOWN", "INTERRUPTED", "FINISHED")


@dataclass
class Attempt:
    """One incarnation of a job (sacct --duplicates lists one row per requeue)."""

    state: str
    exit_code: str
    start: str
    end: str
    elapsed: str
    nodes: str
    reason: str


def base_state(text: str) -> str:
    """'CANCELLED by 0' -> 'CANCELLED'; '' -> 'UNKNOWN'."""
    return text.split()[0] if text.strip() else "UNKNOWN"


def no_reason(text: str) -> str:
    return "" if text in ("None", "") else text


def parse_sacct(text: str) -> dict[str, JobState]:
    """`sacct -X -P -o JobID,State,ExitCode,Elapsed,NodeList,Reason` (header included) by
    job id; a pending array range (`12_[0-3%2]`) gives one entry per task (`12_0`...)."""
    # An array's pending range (`13_[1-3%1]`) can be listed after a task that has left
    # it (`13_1 COMPLETED`); read_info keeps the last row per id, so ranges go first.
    header, *lines = text.splitlines() or [""]
    ordered = "\n".join([header] + sorted(lines, key=lambda ln: "[" not in ln.split("|", 1)[0]))
    states = {}
    for jid, row in SlurmInfoWatcher().read_info(ordered).items():
        state = base_state(row.get("State", ""))
        reason = "" if state in ("COMPLETED", "RUNNING") else no_reason(row.get("Reason", ""))
        states[jid] = JobState(state, row.get("ExitCode", ""), row.get("Elapsed", ""), row.get("NodeList", ""), reason)
    return states


def parse_squeue(text: str) -> dict[str, JobState]:
    """`squeue -h -r -o '%i|%T|%r|%N|%M'` (id, state, reason, nodes, elapsed) by job id."""
    states = {}
    for line in text.splitlines():
        f = line.split("|")
        if len(f) >= 5:
            states[f[0]] = JobState(f[1], "", f[4], f[3], no_reason(f[2]))
    return states


def parse_history(text: str) -> dict[str, list[Attempt]]:
    """`sacct -D -X -P -o JobID,State,ExitCode,Start,End,Elapsed,NodeList,Reason` (header
    included): every incarnation of each job, oldest first."""
    lines = text.splitlines()
    if len(lines) < 2:
        return {}
    names = lines[0].split("|")
    history: dict[str, list[Attempt]] = {}
    for line in lines[1:]:
        row = dict(zip(names, line.split("|")))
        jid = row.get("JobID", "")
        if not jid or "." in jid:
            continue
        history.setdefault(jid, []).append(Attempt(
            base_state(row.get("State", "")), row.get("ExitCode", ""), row.get("Start", ""), row.get("End", ""),
            row.get("Elapsed", ""), row.get("NodeList", ""), no_reason(row.get("Reason", ""))))
    return history


def slurm_states(ids: list[str]) -> dict[str, JobState]:
    """sacct for the record (exit code, elapsed), squeue on top for what is live (and why it waits)."""
    if not ids:
        return {}
    states = {i: JobState("UNKNOWN") for i in ids}
    bases = ",".join(sorted({i.split("_")[0] for i in ids}))
    if shutil.which("sacct"):
        for jid, st in parse_sacct(query(["sacct", "-X", "-P", "-j", bases, "-o", SACCT_FIELDS])).items():
            if jid in states:
                states[jid] = st
    if shutil.which("squeue"):
        for jid, live in parse_squeue(query(["squeue", "-h", "-r", "-j", bases, "-o", "%i|%T|%r|%N|%M"])).items():
            if jid in states:
                live.exit_code = states[jid].exit_code
                states[jid] = live
    return states


def job_history(ids: list[str]) -> dict[str, list[Attempt]]:
    """Every incarnation of each job (requeues after a timeout, preemption or node failure)."""
    if not ids or not shutil.which("sacct"):
        return {}
    bases = ",".join(sorted({i.split("_")[0] for i in ids}))
    found = parse_history(query(["sacct", "-D", "-X", "-P", "-j", bases, "-o", HISTORY_FIELDS]))
    return {i: found[i] for i in ids if i in found}


EXECUTORS = ("slurm", "local", "debug")
JOB_ID = re.compile(r"^[0-9]+(_[0-9]+)?$")  # a SLURM job (array task) id, or a local job's pid
SUCCESS_LINE = "Job completed successfully"  # submitit's own log lines, at the end of a task
ERROR_LINE = "Submitted job triggered an exception"
LOG_TAIL_BYTES = 256 * 1024
RANK_PREFIX = re.compile(r"^\[rank\d+\]: ")  # torch.distributed's prefix on a rank's error lines
OTHER_WRITERS = ("srun:", "slurmstepd", "submitit ")


def submitit_folder(run_dir: Path, record: dict[str, Any]) -> Path:
    """submitit's folder of a run (or sweep) directory: `<dir>/<executor>`, a sweep point's in
    its sweep's directory (the point's parent).  Derived from the directory the user named,
    never from a path in submission.json, which whoever wrote the directory chose."""
    executor = record.get("executor", "slurm")
    if executor not in EXECUTORS:
        raise ValueError(f"{run_dir / 'submission.json'}: executor {str(executor)[:40]!r} is none of {', '.join(EXECUTORS)}")
    return (run_dir.parent if record.get("kind") == "run" and record.get("sweep_dir") else run_dir) / executor


def job_states(record: dict[str, Any], run_dir: Path) -> dict[str, JobState]:
    """State of each job id of a submission record (`submission.json` of `run_dir`), by executor."""
    ids = [str(i) for i in record.get("job_ids", [])]
    executor = record.get("executor", "slurm")
    if executor == "slurm":
        return slurm_states(ids)
    if executor == "local":
        return {i: local_state(i, submitit_folder(run_dir, record)) for i in ids}
    return {i: JobState("FINISHED") for i in ids}


def local_state(job_id: str, folder: Path) -> JobState:
    """A local-executor job (its id is its controller's pid): running while that
    process lives, else what its log says."""
    try:
        os.kill(int(job_id), 0)
        with open(f"/proc/{job_id}/cmdline", "rb") as f:
            if b"submitit" in f.read():
                return JobState("RUNNING")
    except (OSError, ValueError):
        pass
    outcome = result_outcome(folder, job_id)
    return JobState({"success": "COMPLETED", "error": "FAILED"}.get(outcome or "", "INTERRUPTED"))


def result_outcome(folder: Path, job_id: str, task: int = 0) -> str | None:
    """'success' / 'error' from a task's log, None if it says neither."""
    found = read_result(folder, job_id, task)
    return found[0] if found else None


def read_result(folder: Path, job_id: str, task: int = 0) -> tuple[str, str] | None:
    """(outcome, traceback) of a task, from submitit's own lines in the task's logs (the last
    attempt's: a requeued job appends): "success" with no traceback, or "error" with the
    traceback Python printed to stderr after submitit's line.  (submitit logs every line to
    stdout and warnings and errors to stderr too.)  Never from submitit's result pickle:
    unpickling a file from a shared run directory would run whatever its writer put there."""
    if not JOB_ID.match(job_id):
        return None
    out = log_tail(folder / f"{job_id}_{task}_log.out")
    error, success = out.rfind(ERROR_LINE), out.rfind(SUCCESS_LINE)
    err = log_tail(folder / f"{job_id}_{task}_log.err")
    if error < 0 and success < 0 and ERROR_LINE in err:  # stdout lost (or cut): stderr has the error line too
        error = 0
    if error > success:
        at = err.rfind(ERROR_LINE)
        lines = [RANK_PREFIX.sub("", line) for line in err[at + len(ERROR_LINE):].splitlines()[1:]] if at >= 0 else []
        start = next((i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last):")), 0)
        trace = []
        for line in lines[start:]:
            if line.startswith(OTHER_WRITERS):  # srun's, slurmstepd's, submitit's own lines end the traceback
                break
            trace.append(line)
        return "error", "\n".join(trace)
    if success >= 0:
        return "success", ""
    return None


def log_tail(path: Path, size: int = LOG_TAIL_BYTES) -> str:
    """The last `size` bytes of a log ("" when there is none): a log can be any size."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - size))
            return f.read().decode(errors="replace")
    except OSError:
        return ""
