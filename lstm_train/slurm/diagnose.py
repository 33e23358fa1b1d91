"""Why a job did not finish: SLURM's state, the task that died first, its exception, the log.

Where each piece comes from:
  - the state, exit code and nodes: sacct (`jobstate`);
  - which rank died on which host: srun's own lines in the batch log
    (`srun: error: node2: task 1: Killed`); a SLURM task is a rank (SLURM_PROCID);
  - the exception: the traceback after submitit's "Submitted job triggered an exception" in
    the log of the first task that has one (`<job id>_<task>_log.err`; never submitit's
    result pickle, which could run code as you); a rank killed by a signal leaves none;
  - the log tail: `<job id>_<task>_log.err`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .jobstate import Attempt, JobState, read_result

# srun: error: node2: task 1: Killed
# srun: error: node1: tasks 0-1: Exited with exit code 1
SRUN_TASK = re.compile(r"^srun: error: (?P<host>\S+): tasks? (?P<tasks>[\d,\-]+): (?P<what>.+)$", re.MULTILINE)


@dataclass
class TaskExit:
    """One task (rank) that srun saw end badly."""

    host: str
    tasks: list[int]
    what: str

    def describe(self) -> str:
        ranks = ", ".join(map(str, self.tasks))
        return f"rank{'s' if len(self.tasks) > 1 else ''} {ranks} on {self.host}: {self.what}"


def expand_ranges(text: str) -> list[int]:
    """'0-2,5' -> [0, 1, 2, 5] (srun's task lists)."""
    out: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        out += range(int(low), int(high or low) + 1)
    return out


def parse_srun_errors(text: str) -> list[TaskExit]:
    """srun's lines about tasks that ended badly, in the order srun saw them."""
    return [TaskExit(m["host"], expand_ranges(m["tasks"]), m["what"].strip()) for m in SRUN_TASK.finditer(text)]


def first_casualty(exits: list[TaskExit]) -> TaskExit | None:
    """The task that took the job down: srun reports task ends in the order it sees them,
    and the ones after the first are its consequences (peers failing on a broken
    connection, or killed by srun's --kill-on-bad-exit)."""
    return exits[0] if exits else None


def error_trace(folder: Path, job_id: str, ntasks: int, first: list[int] = ()) -> tuple[int, str] | None:
    """(task, traceback) of the first task whose log holds an error, looking at
    the tasks in `first` (the rank that died first) before the others."""
    order = list(first) + [t for t in range(max(ntasks, 1)) if t not in first]
    for task in order:
        found = read_result(folder, job_id, task)
        if found and found[0] == "error":
            return task, str(found[1])
    return None


def exception_text(trace: str, max_lines: int = 8) -> str:
    """The exception (type: message) at the end of a formatted traceback."""
    lines = trace.rstrip().splitlines()
    frames = [i for i, ln in enumerate(lines) if ln.startswith("  File ")]
    rest = lines[frames[-1] + 1:] if frames else lines
    rest = [ln for ln in rest if not ln.startswith(("    ", "Traceback (most recent call last)"))] or lines[-1:]
    return "\n".join(rest[:max_lines])


def read_log(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def tail(path: Path, lines: int = 20) -> str:
    return "\n".join(read_log(path).rstrip().splitlines()[-lines:])


def describe_attempts(history: list[Attempt]) -> list[str]:
    """One line per earlier incarnation of a requeued job (node failure, preemption, timeout)."""
    lines = []
    for n, a in enumerate(history, 1):
        reason = f", {a.reason}" if a.reason and a.state not in ("COMPLETED", "RUNNING") else ""
        where = f" on {a.nodes}" if a.nodes and a.nodes != "None assigned" else ""
        lines.append(f"attempt {n}: {a.state}{where}, {a.start} .. {a.end} ({a.elapsed}{reason})")
    return lines


def explain_failure(job_id: str, st: JobState, folder: Path, ntasks: int) -> str:
    """Why a job did not finish: SLURM's state, the rank that died, the exception, the log's last lines."""
    nodes = f" on {st.nodes}" if st.nodes and st.nodes not in ("None assigned", "(null)") else ""
    lines = [f"job {job_id} ended {st.state}" + (f" (exit code {st.exit_code})" if st.exit_code else "") + nodes +
             (f", reason: {st.reason}" if st.reason else "")]
    batch_err = folder / f"{job_id}_0_log.err"  # srun's own messages land in the batch script's stderr
    casualty = first_casualty(parse_srun_errors(read_log(batch_err)))
    if casualty is not None:
        lines.append(f"first to die: {casualty.describe()} (srun)")
    found = error_trace(folder, job_id, ntasks, casualty.tasks if casualty else [])
    task = 0
    if found:
        task, trace = found
        after = " (after the rank above died)" if casualty and task not in casualty.tasks else ""
        lines.append(f"error in task {task}{after}: {exception_text(trace)}")
    elif st.state == "TIMEOUT":
        lines.append("the time limit was reached before a checkpoint+requeue (raise slurm.time_min, or "
                     "slurm.signal_delay_s so the signal comes earlier)")
    elif st.state == "OUT_OF_MEMORY":
        lines.append("out of memory: raise slurm.mem_gb or lower data.batch_size")
    elif st.state == "NODE_FAIL":
        lines.append("a node of the job failed; SLURM requeues such a job unless it was submitted with --no-requeue")
    err = folder / f"{job_id}_{task}_log.err"
    text = tail(err)
    if found and text:
        lines.append(f"traceback and full log: {err}")
    elif text:
        lines += [f"--- last lines of {err} ---", text, "---"]
    else:
        lines.append(f"no error log at {err}" + (" (the job never started?)" if not err.exists() else " (empty)"))
        out = folder / f"{job_id}_{task}_log.out"
        if out.exists():
            lines += [f"--- last lines of {out} ---", tail(out), "---"]
    return "\n".join(lines)
