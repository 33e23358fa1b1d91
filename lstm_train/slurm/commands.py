"""SLURM client commands (scontrol, sinfo, sacct, squeue, scancel) run from Python.

Two flavours: `run_slurm` for commands whose failure stops what the user asked
for (one clear `SubmitError`, never a traceback), and `query` for state lookups
whose failure just leaves a state unknown.
"""

from __future__ import annotations

import subprocess

TIMEOUT_S = 60


class SubmitError(ValueError):
    """A submission that cannot go ahead as asked; the message says why and what would do."""


def no_slurm_message(command: str = "sbatch") -> str:
    return (f"`{command}` not found: this machine is not a SLURM submit host. Run the same job on this "
            "machine with `--executor local` (one node, slurm.tasks_per_node processes), or start a "
            "test cluster here with `sudo slurm/local-cluster.sh up`.")


def run_slurm(cmd: list[str], what: str) -> str:
    """stdout of a SLURM command; a missing command, a silent controller or a refusal
    becomes a `SubmitError` that says which command and what it said."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    except FileNotFoundError:
        raise SubmitError(no_slurm_message(cmd[0])) from None
    except subprocess.TimeoutExpired:
        raise SubmitError(f"`{' '.join(cmd)}` did not answer in {TIMEOUT_S} s: is the SLURM controller up?") from None
    if done.returncode != 0:
        raise SubmitError(f"could not {what}: `{' '.join(cmd)}` said: {(done.stderr or done.stdout).strip()}")
    return done.stdout


def query(cmd: list[str]) -> str:
    """stdout of a SLURM query, '' when it fails (the state then reads UNKNOWN)."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
