"""Pre-flight: check a job against the cluster before sbatch sees it.

A partition that does not exist, more nodes than it has, a time limit over its
maximum or more CPUs per node than its nodes hold would otherwise leave a job
PENDING forever (sbatch accepts most of these).  Each becomes one message that
lists what the cluster does offer.  The parsers take the commands' text, so the
unit tests feed them recorded output.
"""

from __future__ import annotations

import re
import shutil
import sys
from dataclasses import dataclass

from ..config import JobBase
from .commands import SubmitError, no_slurm_message, run_slurm


def tasks_per_node(job: JobBase) -> int:
    """`slurm.tasks_per_node`, else one task per GPU, else one."""
    s = job.slurm
    return s.tasks_per_node or s.gpus_per_node or 1


def world_size(job: JobBase) -> int:
    return job.slurm.nodes * tasks_per_node(job)


@dataclass
class Partition:
    name: str
    default: bool
    state: str
    total_nodes: int
    max_nodes: int | None
    nodes: str
    max_time_min: int | None = None

    def describe(self) -> str:
        flags = ", default" if self.default else ""
        return f"{self.name} ({self.total_nodes} nodes {self.nodes}, {self.state.lower()}{flags})"


def parse_partitions(text: str) -> dict[str, Partition]:
    """Partitions from `scontrol show partition --oneliner` (one `Key=Value ...` line each)."""
    parts: dict[str, Partition] = {}
    for line in text.splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if "PartitionName" not in fields:
            continue
        max_nodes = fields.get("MaxNodes", "UNLIMITED")
        parts[fields["PartitionName"]] = Partition(
            name=fields["PartitionName"],
            default=fields.get("Default") == "YES",
            state=fields.get("State", "UNKNOWN"),
            total_nodes=int(fields.get("TotalNodes", "0") or 0),
            max_nodes=int(max_nodes) if max_nodes.isdigit() else None,
            nodes=fields.get("Nodes", "?"),
            max_time_min=slurm_minutes(fields.get("MaxTime", "UNLIMITED")),
        )
    return parts


def slurm_minutes(text: str) -> int | None:
    """SLURM's time formats (minutes, minutes:seconds, hours:minutes:seconds,
    days-hours[:minutes[:seconds]]) as whole minutes, rounded up; None for UNLIMITED."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not m:
        return None
    days, a, b, c = (int(x) if x else 0 for x in m.groups())
    if m.group(1) is None and m.group(3) is None:
        return a  # minutes
    if m.group(1) is None and m.group(4) is None:
        return a + (1 if b else 0)  # minutes:seconds
    if m.group(1) is None:
        return a * 60 + b + (1 if c else 0)  # hours:minutes:seconds
    return days * 1440 + a * 60 + b + (1 if c else 0)  # days-hours[:minutes[:seconds]]


def parse_node_cpus(text: str) -> list[int]:
    """CPUs per node from `sinfo -h -N -p PART -o %c` (one number per line)."""
    return [int(x) for x in text.split() if x.isdigit()]


def check_cluster(job: JobBase) -> Partition:
    """The partition exists, is up, has enough nodes, CPUs and time; else say what does."""
    if shutil.which("sbatch") is None:
        raise SubmitError(no_slurm_message())
    parts = parse_partitions(run_slurm(["scontrol", "show", "partition", "--oneliner"], "list the partitions"))
    if not parts:
        raise SubmitError("the SLURM controller lists no partitions (`scontrol show partition`)")
    listing = "; ".join(p.describe() for p in parts.values())
    s = job.slurm
    if s.partition is None:
        part = next((p for p in parts.values() if p.default), None)
        if part is None:
            raise SubmitError(f"slurm.partition is not set and the cluster has no default partition: "
                              f"set slurm.partition=NAME. Partitions: {listing}")
    elif s.partition not in parts:
        raise SubmitError(f"slurm.partition={s.partition!r} does not exist on this cluster. "
                          f"Partitions: {listing}")
    else:
        part = parts[s.partition]
    limit = min(part.total_nodes, part.max_nodes or part.total_nodes)
    if s.nodes > limit:
        raise SubmitError(f"slurm.nodes={s.nodes} but partition {part.name} has at most {limit} "
                          f"node(s) per job ({part.nodes}): use slurm.nodes<={limit} or another partition. "
                          f"Partitions: {listing}")
    if part.max_time_min is not None and s.time_min > part.max_time_min:
        raise SubmitError(f"slurm.time_min={s.time_min} but partition {part.name} allows at most "
                          f"{part.max_time_min} min per job")
    cpus = parse_node_cpus(run_slurm(["sinfo", "-h", "-N", "-p", part.name, "-o", "%c"], "list the nodes"))
    need = tasks_per_node(job) * (s.cpus_per_task or 1)
    if cpus and need > max(cpus):
        raise SubmitError(f"{tasks_per_node(job)} task(s) per node x {s.cpus_per_task or 1} CPU(s) per task = "
                          f"{need} CPUs per node, but the nodes of partition {part.name} have at most "
                          f"{max(cpus)}: lower slurm.tasks_per_node or slurm.cpus_per_task")
    if part.state != "UP":
        print(f"warning: partition {part.name} is {part.state}; the job will wait until it is UP",
              file=sys.stderr)
    return part
