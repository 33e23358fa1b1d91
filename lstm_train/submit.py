"""`lstm-train submit / status / cancel`: jobs and sweeps on SLURM through submitit.

    lstm-train submit jobs/mnist_lstm.yaml slurm.nodes=2 --wait
    lstm-train status runs/mnist_lstm/<run id>          # or a sweep directory
    lstm-train cancel runs/mnist_lstm/<run id>

What runs where
    The login node validates the job (strictly, as `run` does), checks the partition
    and node count against the cluster, fixes the run directory (`train.output_dir`)
    and W&B group (`train.run_id`) so that both are known now and stay the same
    across requeues, and hands a `Trainer` to submitit.  Every SLURM task runs
    `Trainer()`: the torch.distributed variables come from submitit's job
    environment, then the same `lstm_train.train.train` as `lstm-train run`.

Requeue (the DeiT/DINO `run_with_submitit.py` pattern)
    SLURM sends USR2 `slurm.signal_delay_s` before the time limit (up to 30 s more
    on top, the controller checks every 30 s) and on preemption when the cluster
    is set up to (`preempt_send_user_signal`).  The signal only sets a stop flag;
    the training loop notices it at its next sync point (every `train.log_every`
    steps), every rank saves one checkpoint and `train` returns.  Then submitit's
    own handler does the bookkeeping on rank 0: timeout or preemption, the
    timeout budget (`slurm.max_num_timeout`), `Trainer.checkpoint()`, `scontrol
    requeue`.  The requeued job builds a fresh `Trainer` from the same job dict and
    `train` resumes from the newest checkpoint in the run directory (mid-epoch),
    logging to the same W&B runs (their ids derive from the run id).
    SIGTERM alone (scancel, `scontrol requeue`, preemption without the user
    signal) also saves a checkpoint if the loop reaches a sync point within
    SLURM's KillWait; SLURM itself decides whether the job comes back.

Files
    run dir:   config.yaml, checkpoints/, metrics/, result.json (from `train`),
               submission.json (job ids, executor, log paths, W&B group),
               slurm/ (submitit's folder: <job id>_<task>_log.out/.err, pickles)
    sweep dir: runs/<job>/sweep-<hash>/ with submission.json, slurm/ and one run
               dir per grid point (`00-lr=0.01,hidden_size=64`, ...).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import JobBase, apply_override, load_job, validate_job

SUBMISSION = "submission.json"
EXECUTOR_FOLDERS = {"slurm": "slurm", "local": "local", "debug": "debug"}
DIST_VARS = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
EXIT_INTERRUPTED = 143
POLL_S = 3.0
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


class SubmitError(ValueError):
    """A submission that cannot go ahead as asked; the message says why and what would do."""


# ---------------------------------------------------------------------------
# Inside each task


class Trainer:
    """What every SLURM task runs: `train(job, stop)` with submitit's distributed env
    and its requeue bookkeeping.  Holds the job as a plain dict (validated again in
    the task); all state lives in the run directory, none in the pickle."""

    def __init__(self, job: dict[str, Any]) -> None:
        self.job = job

    def __call__(self) -> dict[str, Any]:
        import submitit

        usr_sig = submitit.JobEnvironment._usr_sig()
        stop = threading.Event()
        received: list[int] = []

        def on_signal(signum: int, frame: Any) -> None:
            received.append(signum)
            if not stop.is_set():
                print(f"received {signal.Signals(signum).name}: checkpointing at the next sync point",
                      file=sys.stderr, flush=True)
            stop.set()

        # Ours first (importing torch takes seconds): a signal from now on stops at step 1.
        previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, usr_sig)}
        for s in previous:
            signal.signal(s, on_signal)
        try:
            from .train import train

            job = validate_job(self.job, f"{self.job['train']['output_dir']} (submitted job)")
            env = export_distributed_env()
            result = train(job, stop)
            if not result.get("interrupted"):
                return result
            submitit_handler = previous[usr_sig]
            if usr_sig in received and callable(submitit_handler):
                # submitit's bookkeeping, now that the checkpoint is on disk.  Rank 0:
                # timed out or preempted?  checkpoint(), `scontrol requeue`, exit; or an
                # UncompletedJobError once the timeout budget is spent.  Other ranks:
                # it returns and they leave quietly (exit 0, so that KillOnBadExit
                # cannot end the step while rank 0 requeues).
                submitit_handler(usr_sig, None)
                raise SystemExit(0)
            if env.cluster == "debug":
                return result  # in-process: the caller sees "interrupted"
            # SIGTERM only: SLURM is ending the job (scancel, requeue, preemption
            # without the user signal); the checkpoint is saved, SLURM decides
            # whether the job comes back.
            raise SystemExit(EXIT_INTERRUPTED)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def checkpoint(self) -> Any:
        """submitit calls this on the timeout/preemption signal: the same job again.
        Nothing is frozen here; the next attempt finds the newest checkpoint on disk."""
        import submitit

        return submitit.helpers.DelayedSubmission(type(self)(self.job))


def export_distributed_env() -> Any:
    """RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR/PORT from the job.

    CUDA_VISIBLE_DEVICES is left as SLURM set it (all GPUs of the node): Accelerate
    picks `cuda:LOCAL_RANK`.  A one-task job clears inherited variables so that it
    trains alone instead of waiting for a group that does not exist."""
    import submitit

    env = submitit.JobEnvironment()
    if env.num_tasks > 1:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    else:
        for key in DIST_VARS:
            os.environ.pop(key, None)
    return env


# ---------------------------------------------------------------------------
# Preparing a submission


def tasks_per_node(job: JobBase) -> int:
    s = job.slurm
    return s.tasks_per_node or s.gpus_per_node or 1


def world_size(job: JobBase) -> int:
    return job.slurm.nodes * tasks_per_node(job)


def identity(job: JobBase, extra: dict[str, Any] | None = None) -> str:
    """Same training, same id: what is trained and by how many processes (not where,
    how long or how it is tracked), so a resubmission lands in the same directory."""
    spec = job.to_dict()
    for volatile in ("tracking", "slurm", "sweep"):
        spec.pop(volatile, None)
    spec["train"].pop("output_dir", None)
    spec["train"].pop("run_id", None)
    spec["processes"] = [job.slurm.nodes, tasks_per_node(job), job.slurm.gpus_per_node]
    if extra:
        spec["extra"] = extra
    return hashlib.sha1(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:10]


def pinned(job: JobBase, run_dir: Path, run_id: str) -> dict[str, Any]:
    """The job as a dict with its run directory and run id fixed (absolute, for the nodes)."""
    spec = job.to_dict()
    spec["train"]["output_dir"] = str(run_dir.resolve())
    spec["train"]["run_id"] = run_id
    spec["sweep"] = None
    return spec


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


def slurm_partitions() -> dict[str, Partition]:
    """Partitions as the controller sees them (`scontrol show partition`)."""
    out = run_slurm(["scontrol", "show", "partition", "--oneliner"], "list the partitions")
    parts: dict[str, Partition] = {}
    for line in out.splitlines():
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
    """SLURM's [days-]hours:minutes:seconds (or minutes) as minutes; None for UNLIMITED."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not m:
        return None
    days, a, b, c = (int(x) if x else 0 for x in m.groups())
    if m.group(3) is None and m.group(1) is None:
        return a  # plain minutes
    if m.group(4) is None and m.group(1) is None:
        return a + (1 if b else 0)  # minutes:seconds
    return days * 1440 + a * 60 + b + (1 if c else 0)


def node_cpus(partition: str) -> list[int]:
    """CPUs of each node of a partition (`sinfo -N`)."""
    out = run_slurm(["sinfo", "-h", "-N", "-p", partition, "-o", "%c"], "list the nodes")
    return [int(x) for x in out.split() if x.isdigit()]


def run_slurm(cmd: list[str], what: str) -> str:
    """A SLURM client command; failures become one clear message, not a traceback."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise SubmitError(no_slurm_message(cmd[0])) from None
    except subprocess.TimeoutExpired:
        raise SubmitError(f"`{' '.join(cmd)}` did not answer in 60 s: is the SLURM controller up?") from None
    if done.returncode != 0:
        raise SubmitError(f"could not {what}: `{' '.join(cmd)}` said: {(done.stderr or done.stdout).strip()}")
    return done.stdout


def no_slurm_message(command: str = "sbatch") -> str:
    return (f"`{command}` not found: this machine is not a SLURM submit host. Run the same job on this "
            "machine with `--executor local` (one node, slurm.tasks_per_node processes), or start a "
            "test cluster here with `sudo slurm/local-cluster.sh up`.")


def check_cluster(job: JobBase) -> Partition:
    """The partition exists, is up and has enough nodes; else say what does."""
    if shutil.which("sbatch") is None:
        raise SubmitError(no_slurm_message())
    parts = slurm_partitions()
    if not parts:
        raise SubmitError("the SLURM controller lists no partitions (`scontrol show partition`)")
    listing = "; ".join(p.describe() for p in parts.values())
    s = job.slurm
    if s.partition is None:
        default = next((p for p in parts.values() if p.default), None)
        if default is None:
            raise SubmitError(f"slurm.partition is not set and the cluster has no default partition: "
                              f"set slurm.partition=NAME. Partitions: {listing}")
        part = default
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
    cpus = node_cpus(part.name)
    need = tasks_per_node(job) * (s.cpus_per_task or 1)
    if cpus and need > max(cpus):
        raise SubmitError(f"{tasks_per_node(job)} task(s) per node x {s.cpus_per_task or 1} CPU(s) per task = "
                          f"{need} CPUs per node, but the nodes of partition {part.name} have at most "
                          f"{max(cpus)}: lower slurm.tasks_per_node or slurm.cpus_per_task")
    if part.state != "UP":
        print(f"warning: partition {part.name} is {part.state}; the job will wait until it is UP",
              file=sys.stderr)
    return part


def make_executor(kind: str, folder: Path, job: JobBase) -> Any:
    """submitit's executor for `kind`, with the job's `slurm:` section as its parameters."""
    import submitit

    s = job.slurm
    ntasks = tasks_per_node(job)
    if kind == "local" and s.nodes > 1:
        raise SubmitError(f"--executor local runs on this machine only, but slurm.nodes={s.nodes}: "
                          f"use slurm.nodes=1 slurm.tasks_per_node={world_size(job)} for the same "
                          "number of processes here")
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "debug":
        return submitit.DebugExecutor(folder)
    if kind == "local":
        ex = submitit.LocalExecutor(folder, max_num_timeout=s.max_num_timeout)
        params: dict[str, Any] = dict(timeout_min=s.time_min, tasks_per_node=ntasks,
                                      signal_delay_s=s.signal_delay_s)
        if s.gpus_per_node:
            params["gpus_per_node"] = s.gpus_per_node
        if s.setup:
            params["setup"] = list(s.setup)
        ex.update_parameters(**params)
        return ex
    try:
        ex = submitit.SlurmExecutor(folder, max_num_timeout=s.max_num_timeout)
    except RuntimeError as e:  # no srun
        raise SubmitError(f"{no_slurm_message('srun')} ({e})") from None
    params = dict(
        job_name=job.name, time=s.time_min, nodes=s.nodes, ntasks_per_node=ntasks,
        signal_delay_s=s.signal_delay_s, array_parallelism=s.array_parallelism,
        partition=s.partition, cpus_per_task=s.cpus_per_task, account=s.account, qos=s.qos,
        constraint=s.constraint,
        mem=(f"{int(s.mem_gb)}GB" if float(s.mem_gb).is_integer() else f"{int(s.mem_gb * 1024)}MB") if s.mem_gb else None,
        gpus_per_node=s.gpus_per_node or None,
        setup=list(s.setup) or None,
        additional_parameters=dict(s.additional) or None,
    )
    try:
        ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
    except ValueError as e:
        raise SubmitError(f"slurm section rejected by submitit: {e}") from None
    return ex


def submitted(call: Any) -> Any:
    """Run a submitit submission; sbatch's complaint becomes the message."""
    import submitit

    try:
        return call()
    except submitit.core.utils.FailedJobError as e:
        raise SubmitError(f"sbatch refused the job: {str(e).strip()}") from None
    except submitit.core.utils.FailedSubmissionError as e:
        raise SubmitError(f"submission failed: {str(e).strip()}") from None
    except FileNotFoundError as e:
        raise SubmitError(f"{no_slurm_message()} ({e})") from None


def log_paths(folder: Path, job_id: str, task: int = 0) -> dict[str, str]:
    return {"stdout": str(folder / f"{job_id}_{task}_log.out"), "stderr": str(folder / f"{job_id}_{task}_log.err")}


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


# ---------------------------------------------------------------------------
# submit


def submit_main(args: Any) -> int:
    job = load_job(args.job, args.overrides)
    if args.executor == "slurm":
        part = check_cluster(job)
    else:
        part = None
    if job.sweep and job.sweep.grid:
        return submit_sweep(job, args, part)
    return submit_run(job, args, part)


def describe_layout(job: JobBase, kind: str, part: Partition | None) -> str:
    n, t = job.slurm.nodes, tasks_per_node(job)
    where = f"partition {part.name}" if part else ("this machine" if kind == "local" else "this process")
    gpus = f", {job.slurm.gpus_per_node} GPU(s)/node" if job.slurm.gpus_per_node else ""
    return f"{kind}, {where}, {n} node(s) x {t} task(s) = {n * t} process(es){gpus}, time limit {job.slurm.time_min} min"


def submit_run(job: JobBase, args: Any, part: Partition | None) -> int:
    run_id = job.train.run_id or identity(job)
    run_dir = (Path(job.train.output_dir) if job.train.output_dir else Path("runs") / job.name / run_id).resolve()
    previous = read_json(run_dir / SUBMISSION)
    result = read_json(run_dir / "result.json")
    if result is not None:
        print(f"{run_dir} already finished (result.json); not submitting again. "
              "For a fresh run set train.run_id=NEW (or change the job).", file=sys.stderr)
        print(json.dumps(result, indent=2))
        return 0
    if previous:
        active = [i for i, st in job_states(previous).items() if st.active]
        if active:
            raise SubmitError(f"{run_dir} is already submitted: job(s) {', '.join(active)} still queued or "
                              f"running. See `lstm-train status {run_dir}`, or `lstm-train cancel {run_dir}` first.")
    spec = pinned(job, run_dir, run_id)
    folder = run_dir / EXECUTOR_FOLDERS[args.executor]
    executor = make_executor(args.executor, folder, job)
    run_dir.mkdir(parents=True, exist_ok=True)
    sub = submitted(lambda: executor.submit(Trainer(spec)))
    job_id = str(sub.job_id)
    record = {
        "kind": "run",
        "executor": args.executor,
        "job_ids": [job_id],
        "submitted_at": now(),
        "job_file": str(Path(args.job).resolve()),
        "overrides": list(args.overrides),
        "run_dir": str(run_dir),
        "folder": str(folder),
        "world_size": world_size(job),
        "logs": log_paths(folder, job_id),
        "wandb": {"group": run_id, "project": job.tracking.wandb.project, "mode": job.tracking.wandb.mode},
        "earlier": (previous or {}).get("earlier", []) + (
            [{k: v for k, v in previous.items() if k != "earlier"}] if previous else []),
    }
    write_json(run_dir / SUBMISSION, record)
    logs = record["logs"]
    print(f"submitted {job.name} as job {job_id} ({describe_layout(job, args.executor, part)})")
    print(f"run dir:   {run_dir}")
    print(f"logs:      {logs['stdout']}\n           {logs['stderr']}" +
          (f"\n           (rank R: {job_id}_R_log.out/.err)" if world_size(job) > 1 else ""))
    print(f"W&B group: {run_id} (project {job.tracking.wandb.project}; runs {job.name}-rank0..{world_size(job) - 1})")
    print(f"status:    lstm-train status {run_dir}")
    if args.executor == "debug":
        return run_debug(sub, run_dir)
    if not args.wait:
        return 0
    return wait_and_report(run_dir, {job_id: sub})


def run_debug(sub: Any, run_dir: Path) -> int:
    """The debug executor runs the Trainer here and now (no pdb, unlike DebugJob.result)."""
    os.environ["SUBMITIT_DEBUG_JOB_ID"] = str(sub.job_id)
    try:
        result = sub.submission().result()
    finally:
        os.environ.pop("SUBMITIT_DEBUG_JOB_ID", None)
    if result.get("interrupted"):
        print(f"stopped at step {result['steps']}; submit again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(json.dumps(result, indent=2))
    return 0


# ---------------------------------------------------------------------------
# Sweeps


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def point_label(index: int, params: dict[str, Any]) -> str:
    parts = ",".join(f"{k.split('.')[-1]}={v}" for k, v in params.items())
    return f"{index:02d}-" + re.sub(r"[^A-Za-z0-9_.,=+-]", "_", parts)[:80]


def submit_sweep(job: JobBase, args: Any, part: Partition | None) -> int:
    grid = job.sweep.grid
    if any(not values for values in grid.values()):
        raise SubmitError(f"{args.job}: sweep.grid has a key with no values: "
                          f"{[k for k, v in grid.items() if not v]}")
    sweep_id = job.train.run_id or "sweep-" + identity(job, {"grid": grid})
    sweep_dir = (Path(job.train.output_dir) if job.train.output_dir else Path("runs") / job.name / sweep_id).resolve()
    base = job.to_dict()
    base["sweep"] = None
    base["train"]["output_dir"] = base["train"]["run_id"] = None
    points = []
    for i, params in enumerate(grid_points(grid)):
        spec = json.loads(json.dumps(base))
        for key, value in params.items():
            apply_override(spec, f"{key}={json.dumps(value)}", f"{args.job}: sweep.grid")
        label = point_label(i, params)
        point_job = validate_job(spec, f"{args.job} (sweep point {label})")
        points.append((label, params, point_job, f"{sweep_id}-{i:02d}"))

    previous = read_json(sweep_dir / SUBMISSION) or {}
    prev_points = {p["name"]: p for p in previous.get("points", [])}
    states = job_states(previous) if previous else {}
    todo, skipped = [], []
    for label, params, point_job, point_id in points:
        pdir = sweep_dir / label
        old = prev_points.get(label, {})
        if (pdir / "result.json").is_file():
            skipped.append((label, "finished"))
        elif old.get("job_id") and states.get(old["job_id"], JobState("UNKNOWN")).active:
            skipped.append((label, f"still {states[old['job_id']].state.lower()} as job {old['job_id']}"))
        else:
            todo.append((label, params, point_job, point_id))
    for label, why in skipped:
        print(f"skipping {label}: {why}")
    if not todo:
        print(f"nothing to submit: every point of {sweep_dir} is finished or queued")
        return status_sweep(sweep_dir, previous)

    folder = sweep_dir / EXECUTOR_FOLDERS[args.executor]
    executor = make_executor(args.executor, folder, job)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    trainers = []
    for label, params, point_job, point_id in todo:
        (sweep_dir / label).mkdir(parents=True, exist_ok=True)
        trainers.append(Trainer(pinned(point_job, sweep_dir / label, point_id)))

    def submit_all() -> list[Any]:
        with executor.batch():
            jobs = [executor.submit(t) for t in trainers]
        return jobs

    subs = submitted(submit_all)
    ids = [str(s.job_id) for s in subs]
    point_records = dict(prev_points)
    for (label, params, point_job, point_id), job_id in zip(todo, ids):
        rec = {"name": label, "params": params, "run_dir": str(sweep_dir / label), "job_id": job_id,
               "logs": log_paths(folder, job_id), "wandb_group": point_id}
        point_records[label] = rec
        write_json(sweep_dir / label / SUBMISSION, {
            "kind": "run", "executor": args.executor, "job_ids": [job_id], "submitted_at": now(),
            "run_dir": rec["run_dir"], "folder": str(folder), "world_size": world_size(job),
            "logs": rec["logs"], "wandb": {"group": rec["wandb_group"], "project": job.tracking.wandb.project},
            "sweep_dir": str(sweep_dir),
        })
    record = {
        "kind": "sweep",
        "executor": args.executor,
        "job_ids": list(dict.fromkeys(previous.get("job_ids", []) + ids)),
        "submitted_at": now(),
        "job_file": str(Path(args.job).resolve()),
        "overrides": list(args.overrides),
        "run_dir": str(sweep_dir),
        "folder": str(folder),
        "grid": grid,
        "points": [point_records[p[0]] for p in points if p[0] in point_records],
    }
    write_json(sweep_dir / SUBMISSION, record)
    array = f"job array {ids[0].split('_')[0]}" if len(ids) > 1 else f"job {ids[0]}"
    print(f"submitted {len(ids)} point(s) of {job.name} as {array} "
          f"({describe_layout(job, args.executor, part)}, at most {job.slurm.array_parallelism} at once): "
          f"{', '.join(ids)}")
    print(f"sweep dir: {sweep_dir}")
    print(f"logs:      {folder}/<job id>_0_log.out/.err")
    print(f"W&B groups: {sweep_id}-00 .. {sweep_id}-{len(points) - 1:02d} (project {job.tracking.wandb.project})")
    print(f"status:    lstm-train status {sweep_dir}")
    if args.executor == "debug":
        code = 0
        for s in subs:
            code = max(code, run_debug(s, Path()))
        return status_sweep(sweep_dir, record) or code
    if not args.wait:
        return 0
    code = wait_and_report(sweep_dir, dict(zip(ids, subs)), quiet_result=True)
    status_sweep(sweep_dir, record)
    return code


# ---------------------------------------------------------------------------
# Job states


@dataclass
class JobState:
    state: str
    exit_code: str = ""
    elapsed: str = ""
    nodes: str = ""
    reason: str = ""

    @property
    def active(self) -> bool:
        return self.state not in FINAL_STATES and self.state not in ("UNKNOWN", "INTERRUPTED", "FINISHED")


def job_states(record: dict[str, Any]) -> dict[str, JobState]:
    """State of each job id of a submission record (by executor)."""
    ids = [str(i) for i in record.get("job_ids", [])]
    executor = record.get("executor", "slurm")
    if executor == "slurm":
        return slurm_states(ids)
    if executor == "local":
        return {i: local_state(i, Path(record.get("folder", "."))) for i in ids}
    return {i: JobState("FINISHED") for i in ids}


def slurm_states(ids: list[str]) -> dict[str, JobState]:
    """sacct for the record (exit code, elapsed), squeue for what is live (and why it waits)."""
    if not ids:
        return {}
    from submitit.slurm.slurm import read_job_id

    states: dict[str, JobState] = {i: JobState("UNKNOWN") for i in ids}

    def expand(raw: str) -> list[str]:
        """sacct's ids: '12', '12_3', or a pending array range '12_[0-3%2]'."""
        try:
            parsed = read_job_id(raw)
        except Exception:  # noqa: BLE001 - an odd id is just not matched
            return [raw]
        out = []
        for parts in parsed:
            if len(parts) <= 2:
                out.append("_".join(parts))
            else:
                out += [f"{parts[0]}_{k}" for k in range(int(parts[1]), int(parts[2]) + 1)]
        return out

    bases = sorted({i.split("_")[0] for i in ids})
    if shutil.which("sacct"):
        out = quiet(["sacct", "-X", "-n", "-P", "-j", ",".join(bases),
                     "-o", "JobID,State,ExitCode,Elapsed,NodeList,Reason"])
        for line in out.splitlines():
            f = line.split("|")
            if len(f) < 6:
                continue
            for jid in expand(f[0]):
                if jid in states:
                    state = f[1].split()[0] if f[1] else "UNKNOWN"
                    reason = "" if f[5] == "None" or state in ("COMPLETED", "RUNNING") else f[5]
                    states[jid] = JobState(state, f[2], f[3], f[4], reason)
    if shutil.which("squeue"):
        out = quiet(["squeue", "-h", "-r", "-j", ",".join(bases), "-o", "%i|%T|%r|%N|%M"])
        for line in out.splitlines():
            f = line.split("|")
            if len(f) >= 5 and f[0] in states:
                old = states[f[0]]
                states[f[0]] = JobState(f[1], old.exit_code, f[4], f[3], "" if f[2] == "None" else f[2])
    return states


def quiet(cmd: list[str]) -> str:
    """stdout of a SLURM query, '' when it fails (the state then reads UNKNOWN)."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def local_state(job_id: str, folder: Path) -> JobState:
    """A local job: its controller process alive, else what its result pickle says."""
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
    """'success' / 'error' from submitit's result pickle of a task, None if there is none."""
    path = folder / f"{job_id}_{task}_result.pkl"
    if not path.is_file():
        return None
    try:
        from submitit.core.utils import pickle_load

        return pickle_load(path)[0]
    except Exception:  # noqa: BLE001
        return None


def error_trace(folder: Path, job_id: str, ntasks: int) -> tuple[int, str] | None:
    """(task, traceback) of the first task whose result pickle holds an error."""
    from submitit.core.utils import pickle_load

    for task in range(max(ntasks, 1)):
        path = folder / f"{job_id}_{task}_result.pkl"
        try:
            outcome, trace = pickle_load(path)
        except Exception:  # noqa: BLE001
            continue
        if outcome == "error":
            return task, str(trace)
    return None


def exception_text(trace: str, max_lines: int = 8) -> str:
    """The exception (type: message) at the end of a formatted traceback."""
    lines = trace.rstrip().splitlines()
    frames = [i for i, ln in enumerate(lines) if ln.startswith("  File ")]
    rest = lines[frames[-1] + 1:] if frames else lines
    rest = [ln for ln in rest if not ln.startswith("    ")] or lines[-1:]
    return "\n".join(rest[:max_lines])


def tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def explain_failure(job_id: str, st: JobState, folder: Path, ntasks: int) -> str:
    """Why a job did not finish: SLURM's state, the exception, and the log's last lines."""
    lines = [f"job {job_id} ended {st.state}" + (f" (exit code {st.exit_code})" if st.exit_code else "") +
             (f" on {st.nodes}" if st.nodes and st.nodes not in ("None assigned", "(null)") else "") +
             (f", reason: {st.reason}" if st.reason else "")]
    found = error_trace(folder, job_id, ntasks)
    task = 0
    if found:
        task, trace = found
        lines.append(f"error in task {task}: {exception_text(trace)}")
    elif st.state == "TIMEOUT":
        lines.append("the time limit was reached before a checkpoint+requeue (raise slurm.time_min, or "
                     "slurm.signal_delay_s so the signal comes earlier)")
    elif st.state == "OUT_OF_MEMORY":
        lines.append("out of memory: raise slurm.mem_gb or lower data.batch_size")
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


def wait_and_report(run_dir: Path, subs: dict[str, Any], quiet_result: bool = False) -> int:
    """Wait for the job(s), printing state changes; then the result, or why not."""
    record = read_json(run_dir / SUBMISSION) or {}
    executor = record.get("executor", "slurm")
    seen: dict[str, str] = {}
    try:
        while True:
            if executor == "local":
                states = {i: (JobState("RUNNING") if not s.done() else local_state(i, Path(record["folder"])))
                          for i, s in subs.items()}
            else:
                states = slurm_states(list(subs))
            for jid, st in states.items():
                text = st.state + (f" ({st.reason})" if st.reason and st.state == "PENDING" else "") + \
                    (f" on {st.nodes}" if st.state == "RUNNING" and st.nodes else "")
                if seen.get(jid) != text:
                    print(f"{time.strftime('%H:%M:%S')} job {jid}: {text}", flush=True)
                    seen[jid] = text
                    if st.state == "PENDING" and st.reason in STUCK_REASONS:
                        print(f"warning: job {jid} waits for {st.reason}: {STUCK_REASONS[st.reason]}; "
                              f"it may never start (lstm-train cancel {run_dir})", file=sys.stderr, flush=True)
            if all(not st.active and st.state != "UNKNOWN" for st in states.values()):
                break
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        print(f"\nstopped waiting; the job keeps going: lstm-train status {run_dir}", file=sys.stderr)
        return 130
    if record.get("kind") == "sweep":
        failed = [(jid, st) for jid, st in states.items() if st.state != "COMPLETED"]
        for jid, st in failed:
            print(explain_failure(jid, st, Path(record["folder"]), record_tasks(record)), file=sys.stderr)
        return 1 if failed else 0
    jid, st = next(iter(states.items()))
    result = read_json(run_dir / "result.json")
    if st.state == "COMPLETED" and result is not None:
        if not quiet_result:
            print(json.dumps(result, indent=2))
        return 0
    print("error: " + explain_failure(jid, st, Path(record["folder"]), record_tasks(record)), file=sys.stderr)
    return 1


def record_tasks(record: dict[str, Any]) -> int:
    return int(record.get("world_size", 1) or 1)


# ---------------------------------------------------------------------------
# status / cancel


def load_record(path: Path) -> dict[str, Any]:
    record = read_json(path / SUBMISSION)
    if record is None:
        hint = " (a run of `lstm-train run` has config.yaml but no submission)" if (path / "config.yaml").exists() else ""
        raise FileNotFoundError(f"{path / SUBMISSION} not found: not a directory made by `lstm-train submit`{hint}")
    return record


def status_main(args: Any) -> int:
    path = Path(args.run_dir).resolve()
    record = load_record(path)
    if record.get("kind") == "sweep":
        return status_sweep(path, record)
    return status_run(path, record)


def metric_summary(result: dict[str, Any] | None) -> str:
    if not result:
        return ""
    keys = [k for k in result if k.startswith("test_")] + ["steps", "world_size", "resumed_from_step"]
    return "  ".join(f"{k}={result[k]:.4f}" if isinstance(result[k], float) else f"{k}={result[k]}"
                     for k in keys if k in result and result[k] is not None)


def status_run(run_dir: Path, record: dict[str, Any]) -> int:
    states = job_states(record)
    result = read_json(run_dir / "result.json")
    wandb = record.get("wandb", {})
    print(f"run {run_dir}  ({record.get('executor')}, W&B group {wandb.get('group')})")
    rows = [("job", "state", "elapsed", "nodes", "reason")]
    for jid in record.get("job_ids", []):
        st = states.get(str(jid), JobState("UNKNOWN"))
        state = st.state
        if state in ("UNKNOWN", "FINISHED") and result is not None:
            state = "COMPLETED"
        rows.append((str(jid), state, st.elapsed, st.nodes, st.reason))
    if not any(r[4] for r in rows[1:]):
        rows = [r[:4] for r in rows]
    print_table(rows)
    if result is not None:
        print(f"result: {metric_summary(result)}  ({run_dir / 'result.json'})")
    else:
        latest = str(record["job_ids"][-1])
        st = states.get(latest, JobState("UNKNOWN"))
        if st.state in FINAL_STATES or st.state == "INTERRUPTED":
            print(explain_failure(latest, st, Path(record["folder"]), record_tasks(record)))
        from .checkpoint import checkpoint_files

        ckpts = checkpoint_files(run_dir / "checkpoints")
        if ckpts:
            print(f"newest checkpoint: step {ckpts[0][0]} ({ckpts[0][1]})")
    logs = record.get("logs", {})
    if logs:
        print(f"logs: {logs.get('stdout')}\n      {logs.get('stderr')}")
    return 0


def status_sweep(sweep_dir: Path, record: dict[str, Any]) -> int:
    states = job_states(record)
    rows: list[tuple[Any, ...]] = []
    metric = None
    results = {}
    for point in record.get("points", []):
        res = read_json(Path(point["run_dir"]) / "result.json")
        results[point["name"]] = res
        if res and metric is None:
            metric = "test_accuracy" if "test_accuracy" in res else next(
                (k for k in res if k.startswith("test_")), None)
    higher = metric is not None and "acc" in metric
    for point in record.get("points", []):
        res = results[point["name"]]
        st = states.get(str(point.get("job_id")), JobState("UNKNOWN"))
        state = "COMPLETED" if res is not None and not st.active else st.state
        value = res.get(metric) if res and metric else None
        rows.append((point["name"], state, value, point.get("job_id", ""), point.get("run_dir", "")))
    rows.sort(key=lambda r: (r[2] is None, -(r[2] or 0) if higher else (r[2] or 0)))
    done = sum(1 for r in rows if r[1] == "COMPLETED")
    print(f"sweep {sweep_dir}: {len(rows)} point(s), {done} completed ({record.get('executor')})")
    table = [("point", "state", metric or "metric", "job")] + [
        (r[0], r[1], f"{r[2]:.4f}" if isinstance(r[2], float) else ("-" if r[2] is None else str(r[2])), r[3])
        for r in rows
    ]
    print_table(table)
    for r in rows:
        if r[1] in FINAL_STATES and r[1] != "COMPLETED":
            print(f"\n{r[0]}: " + explain_failure(str(r[3]), states[str(r[3])], Path(record["folder"]), 1))
    return 0


def print_table(rows: list[tuple[Any, ...]]) -> None:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip())


def cancel_main(args: Any) -> int:
    path = Path(args.run_dir).resolve()
    record = load_record(path)
    states = job_states(record)
    active = [jid for jid, st in states.items() if st.active]
    if not active:
        print(f"nothing to cancel: no job of {path} is queued or running")
        return 0
    if record.get("executor") == "local":
        for jid in active:
            os.kill(int(jid), signal.SIGTERM)  # the controller forwards it: tasks checkpoint and stop
    else:
        run_slurm(["scancel", *active], "cancel")
    print(f"cancelled {', '.join(active)} (running tasks get SIGTERM and save a checkpoint if they can; "
          "submit the same job again to resume)")
    return 0
