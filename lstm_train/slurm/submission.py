"""`lstm-train submit`: a job, or a sweep as one job array, handed to submitit.

The login node validates the job (strictly, as `run` does), checks it against the
cluster (`preflight`), fixes the run directory and run id (the W&B group) so that
both are known now and stay the same across requeues, and submits one `Trainer`
(`node`) per run.  `submission.json` in the run (or sweep) directory records the
job ids, executor, log paths and W&B group for `status`, `cancel` and resubmission.

The run id is the one `lstm-train run` gives the same job file and overrides (`runnames`:
`hidden=128,lr=0.003-3f2a9c`), wherever it runs: a job submitted here, trained by
`run` in an salloc or by `sbatch slurm/accelerate.sbatch` lands in the same directory and
resumes there.  A sweep's directory is `sweep-<what it varies>-<hash>`.

One live job per run directory: a run whose directory belongs to a queued or
running job is refused (exit 2, naming the job); `--new-run` gives the job a
fresh run id (its own plus a time stamp) and so a fresh directory.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

import submitit
from submitit.slurm.slurm import _convert_mem

from .. import runfiles, runnames, sweeps
from ..config import JobBase, sweep_jobs
from ..tracking import default_group
from .commands import SubmitError, no_slurm_message
from .jobstate import JobState, job_states
from .node import EXIT_INTERRUPTED, Trainer
from .preflight import Partition, check_cluster, tasks_per_node, world_size
from .status import status_sweep, wait_and_report

# srun ends the whole step as soon as one task exits badly (a rank killed, a crash), so
# the other ranks never sit in a collective waiting for a peer that is gone.
SRUN_ARGS = ["--kill-on-bad-exit=1"]


def batch_size(job: JobBase) -> int:
    """A bayes sweep's points per batch: `slurm.array_parallelism` (those run at once anyway), at most sweep.count."""
    return max(1, min(job.slurm.array_parallelism, job.sweep.count or 1))




# ---------------------------------------------------------------------------
# Run ids, directories and the executor


def layout_identity(job: JobBase, extra: dict[str, Any] | None = None) -> str:
    """`runfiles.identity` of the job plus its process layout (how lstm_train before readable
    run ids named submitted runs and sweeps: their directories are still found)."""
    spec = job.to_dict()
    spec["processes"] = [job.slurm.nodes, tasks_per_node(job), job.slurm.gpus_per_node]
    return runfiles.identity(spec, extra)


def run_id_of(job: JobBase) -> str:
    """The run id `lstm-train run` gives this job (a run begun by an older submit keeps its own)."""
    readable = job.run_id
    legacy = layout_identity(job)
    if not job.train.run_id and not run_dir_of(job, readable).exists() and run_dir_of(job, legacy).is_dir():
        return legacy
    return readable


def sweep_id_of(job: JobBase) -> str:
    """`sweep-<name, or the keys it varies>[,<what the overrides change>]-<hash>` (an older
    submit's `sweep-<hash>` directory is still found)."""
    legacy = "sweep-" + layout_identity(job, sweep_identity(job))
    if job.train.run_id or run_dir_of(job, legacy).is_dir():
        return job.train.run_id or legacy
    keys = [runnames.ALIASES.get(k, k.rsplit(".", 1)[-1]) for k in job.sweep.flat_parameters()]
    what = runnames.show_value(job.sweep.name) if job.sweep.name else ",".join(dict.fromkeys(keys))
    if job.label not in (None, runnames.BASE):
        what += f",{job.label}"
    return f"sweep-{what[:runnames.MAX_LABEL]}-{layout_identity(job, sweep_identity(job))[:runnames.HASH_DIGITS]}"


def choose_run_id(job: JobBase, base: str, new_run: bool) -> str:
    """`train.run_id` if set, else `base`; `--new-run` adds a time stamp (a fresh directory)."""
    run_id = job.train.run_id or base
    if not new_run:
        return run_id
    if job.train.output_dir:
        raise SubmitError(f"--new-run picks a new run directory, but train.output_dir={job.train.output_dir} "
                          "fixes it: drop train.output_dir, or point it at a new directory without --new-run")
    stamp = time.strftime('%Y%m%d-%H%M%S')
    readable = runnames.READABLE.match(run_id)
    if readable:  # the time before the hash: the id stays readable (`runnames.label_of`)
        return f"{readable.group('label')}-{stamp}-{readable.group('digest')}"
    return f"{run_id}-{stamp}"


def run_dir_of(job: JobBase, run_id: str) -> Path:
    spec = job.to_dict()
    spec["train"]["run_id"] = run_id
    return runfiles.run_dir(spec).resolve()


def pinned(job: JobBase, run_dir: Path, run_id: str) -> dict[str, Any]:
    """The job as a dict with its run directory and run id fixed (absolute, for the nodes)."""
    spec = job.to_dict()
    spec["train"]["output_dir"] = str(run_dir.resolve())
    spec["train"]["run_id"] = run_id
    spec["sweep"] = None
    return spec


def make_executor(kind: str, folder: Path, job: JobBase) -> submitit.Executor:
    """submitit's executor for `kind`, with the job's `slurm:` section as its parameters."""
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
        ex.update_parameters(**drop_none(dict(
            timeout_min=s.time_min, tasks_per_node=ntasks, signal_delay_s=s.signal_delay_s,
            gpus_per_node=s.gpus_per_node or None, setup=list(s.setup) or None)))
        return ex
    try:
        ex = submitit.SlurmExecutor(folder, max_num_timeout=s.max_num_timeout)
    except RuntimeError as e:  # no srun
        raise SubmitError(f"{no_slurm_message('srun')} ({e})") from None
    try:
        ex.update_parameters(**drop_none(dict(
            job_name=job.name, time=s.time_min, nodes=s.nodes, ntasks_per_node=ntasks,
            signal_delay_s=s.signal_delay_s, array_parallelism=s.array_parallelism,
            partition=s.partition, cpus_per_task=s.cpus_per_task, account=s.account, qos=s.qos,
            constraint=s.constraint, mem=_convert_mem(s.mem_gb) if s.mem_gb else None,
            gpus_per_node=s.gpus_per_node or None, setup=list(s.setup) or None,
            additional_parameters=dict(s.additional) or None, srun_args=SRUN_ARGS)))
    except ValueError as e:
        raise SubmitError(f"slurm section rejected by submitit: {e}") from None
    return ex


def drop_none(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


def sbatch_refusal(text: str) -> str:
    """sbatch's complaint without its `sbatch: error:` prefixes, one line."""
    lines = [re.sub(r"^sbatch: error:\s*", "", ln).strip() for ln in text.strip().splitlines()]
    return "; ".join(ln for ln in lines if ln) or "(sbatch said nothing)"


def submitted(call: Callable[[], Any]) -> Any:
    """Run a submitit submission; sbatch's complaint becomes the message."""
    try:
        return call()
    except submitit.core.utils.FailedJobError as e:
        raise SubmitError(f"sbatch refused the job: {sbatch_refusal(str(e))}") from None
    except submitit.core.utils.FailedSubmissionError as e:
        raise SubmitError(f"submission failed: {str(e).strip()}") from None
    except FileNotFoundError as e:
        raise SubmitError(f"{no_slurm_message()} ({e})") from None


def log_paths(folder: Path, job_id: str, task: int = 0) -> dict[str, str]:
    return {"stdout": str(folder / f"{job_id}_{task}_log.out"), "stderr": str(folder / f"{job_id}_{task}_log.err")}


def describe_layout(job: JobBase, kind: str, part: Partition | None) -> str:
    n, t = job.slurm.nodes, tasks_per_node(job)
    where = f"partition {part.name}" if part else ("this machine" if kind == "local" else "this process")
    gpus = f", {job.slurm.gpus_per_node} GPU(s)/node" if job.slurm.gpus_per_node else ""
    return f"{kind}, {where}, {n} node(s) x {t} task(s) = {n * t} process(es){gpus}, time limit {job.slurm.time_min} min"


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


# ---------------------------------------------------------------------------
# A dry run: what would be submitted, and what sbatch says of it


def dry_run(job: JobBase, args: Any) -> int:
    """The checks of a submission, then the batch script submitit would hand to sbatch and
    `sbatch --test-only`'s answer for it (partition, account, QoS, limits: SLURM's own
    verdict, which also knows what `preflight` cannot).  Nothing is queued and nothing is
    written to the run directory.  A refusal (by preflight or sbatch) exits 2 with the reasons."""
    if args.executor != "slurm":
        raise SubmitError(f"--dry-run asks sbatch about the job; --executor {args.executor} has no sbatch to ask "
                          "(`lstm-train config JOB` shows the resolved job)")
    problems = []
    try:
        part: Partition | None = check_cluster(job)
    except SubmitError as e:
        if "not a SLURM submit host" in str(e):
            raise
        problems.append(f"preflight: {e}")
        part = None
    sweep = job.sweep is not None
    if sweep:
        run_id = choose_run_id(job, sweep_id_of(job), args.new_run)
        if job.sweep.method == "bayes":  # its first batch; the later ones are arrays of the same size
            count = batch_size(job)
        else:
            count = len(sweep_points(job, args.job, run_id))
    else:
        run_id, count = choose_run_id(job, run_id_of(job), args.new_run), 1
    run_dir = run_dir_of(job, run_id)
    with tempfile.TemporaryDirectory(prefix="lstm-train-dry-run-") as tmp:
        executor = make_executor("slurm", Path(tmp) / "slurm", job)
        executor.folder = run_dir / "slurm"  # where the real submission's logs would go (nothing made there)
        if count > 1:
            executor.parameters["map_count"] = count  # a job array, as `executor.batch()` submits a sweep
        script = executor._make_submission_file_text(executor._submitit_command_str, "dry-run")
        script_file = Path(tmp) / "submission.sh"
        script_file.write_text(script)
        answer = subprocess.run(["sbatch", "--test-only", str(script_file)], capture_output=True, text=True,
                                timeout=60)
    what = (f"batches of {count} bayes point(s) as job arrays, {job.sweep.count} in all" if sweep and job.sweep.method == "bayes"
            else f"{count} point(s) as one job array" if sweep else "one run")
    print(f"job:      {job.name}: valid, {what} ({describe_layout(job, 'slurm', part)})")
    print(f"run dir:  {run_dir} (W&B group {run_id if sweep else default_group(job.name, run_dir)})")
    print("batch script (sbatch would be given):")
    print("    " + script.rstrip().replace("\n", "\n    "))
    said = sbatch_refusal(answer.stderr + answer.stdout) if answer.returncode else \
        re.sub(r"^sbatch:\s*", "", (answer.stderr + answer.stdout).strip())
    if answer.returncode:
        problems.append(f"sbatch --test-only refused the job: {said}")
    else:
        print(f"sbatch --test-only: {said}")
    if problems:
        raise SubmitError("; ".join(problems))
    print("dry run: nothing submitted")
    return 0


# ---------------------------------------------------------------------------
# One run


def submit_run(job: JobBase, args: Any, part: Partition | None) -> int:
    run_id = choose_run_id(job, run_id_of(job), args.new_run)
    run_dir = run_dir_of(job, run_id)
    runfiles.make_run_dir(run_dir)
    # One submit at a time per run directory, from reading submission.json to writing it: of two
    # at once, the second sees the first's job and is refused naming it (its id is never lost).
    with runfiles.exclusive(run_dir / ".submit.lock"):
        return _submit_run(job, args, part, run_id, run_dir)


def _submit_run(job: JobBase, args: Any, part: Partition | None, run_id: str, run_dir: Path) -> int:
    previous = runfiles.read_json(run_dir / runfiles.SUBMISSION, runfiles.SUBMISSION_FIELDS)
    result = runfiles.read_json(run_dir / runfiles.RESULT, runfiles.RESULT_FIELDS)
    if result is not None:
        print(f"{run_dir} already finished (result.json); not submitting again. "
              "For a fresh run: --new-run (or change the job).", file=sys.stderr)
        print(json.dumps(result, indent=2))
        return 0
    if previous:
        active = [i for i, st in job_states(previous, run_dir).items() if st.active]
        if active:
            raise SubmitError(
                f"{run_dir} belongs to job {', '.join(active)}, still queued or running: one job per run "
                f"directory. See `lstm-train status {run_dir}`, `lstm-train cancel {run_dir}` first, or "
                "submit with --new-run for a fresh run.")
    folder = run_dir / args.executor
    executor = make_executor(args.executor, folder, job)
    runfiles.stamp_started(run_dir)  # the W&B group's date: the day it was submitted, whenever it starts
    group = job.tracking.wandb.group or default_group(job.name, run_dir)
    sub = submitted(lambda: executor.submit(Trainer(pinned(job, run_dir, run_id))))
    job_id = str(sub.job_id)
    record = {
        "kind": "run",
        "executor": args.executor,
        "job_ids": [job_id],
        "submitted_at": now(),
        "job_file": str(Path(args.job).resolve()),
        "overrides": runfiles.redact(list(args.overrides)),
        "run_id": run_id,
        "run_dir": str(run_dir),
        "folder": str(folder),
        "world_size": world_size(job),
        "logs": log_paths(folder, job_id),
        "wandb": {"group": group, "project": job.tracking.wandb.project, "mode": job.tracking.wandb.mode},
        "earlier": (previous or {}).get("earlier", []) + (
            [{k: v for k, v in previous.items() if k != "earlier"}] if previous else []),
    }
    runfiles.write_json(run_dir / runfiles.SUBMISSION, record)
    logs = record["logs"]
    print(f"submitted {job.name} as job {job_id} ({describe_layout(job, args.executor, part)})")
    print(f"run dir:   {run_dir}")
    print(f"logs:      {logs['stdout']}\n           {logs['stderr']}" +
          (f"\n           (rank R: {job_id}_R_log.out/.err)" if world_size(job) > 1 else ""))
    name = runnames.display_name(job.name, run_id)
    print(f"W&B group: {group} (project {job.tracking.wandb.project}; runs {name}-rank0..{world_size(job) - 1})")
    print(f"status:    lstm-train status {run_dir}")
    if args.executor == "debug":
        return run_debug(sub)
    if not args.wait:
        return 0
    return wait_and_report(run_dir, {job_id: sub})


def run_debug(sub: Any) -> int:
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
# Sweeps: one job array, one run directory per point (`sweeps`: grid or random points)


def sweep_points(job: JobBase, job_file: str, sweep_id: str) -> list[tuple[str, dict[str, Any], JobBase, str]]:
    """(label, params, validated job, run id) of every point."""
    return [(label, params, point_job, f"{sweep_id}-{i:02d}")
            for i, (label, params, point_job) in enumerate(sweep_jobs(job, job_file))]


def sweep_identity(job: JobBase) -> dict[str, Any]:
    """What makes two sweeps of one job different: the older grid form keeps its old identity
    (its sweep directory is found again); the W&B form is identified by its whole section."""
    spec = job.sweep.model_dump(mode="json", exclude_defaults=True)
    return {"grid": job.sweep.grid} if set(spec) <= {"grid", "method"} and job.sweep.grid else {"sweep": spec}


def tagged(spec: dict[str, Any], sweep_id: str, label: str) -> dict[str, Any]:
    """A point's pinned job with its W&B runs in the sweep's group, tagged with the sweep id,
    the point as job type: a dashboard groups the sweep and tells its points apart."""
    wandb = spec["tracking"]["wandb"]
    wandb.update(group=sweep_id, job_type=label, tags=list(dict.fromkeys([*wandb["tags"], sweep_id])))
    return spec


def halved(spec: dict[str, Any], sweep: Any) -> dict[str, Any]:
    """With `sweep.early_terminate`, the point stops itself at a rung where it is among the worst."""
    if sweep.early_terminate is not None:
        spec["train"]["halving"] = {"min_steps": sweep.early_terminate.min_iter, "eta": sweep.early_terminate.eta}
    return spec


def submit_sweep(job: JobBase, args: Any, part: Partition | None) -> int:
    """The sweep's points that are neither finished nor queued, submitted as one job array; each
    point's submission.json and the sweep's written, and where to look said."""
    sweep_id = choose_run_id(job, sweep_id_of(job), args.new_run)
    sweep_dir = run_dir_of(job, sweep_id)
    points = sweep_points(job, args.job, sweep_id)

    previous = runfiles.read_json(sweep_dir / runfiles.SUBMISSION) or {}
    prev_points = {p["name"]: p for p in previous.get("points", [])}
    states = job_states(previous, sweep_dir) if previous else {}
    todo = points_to_submit(points, sweep_dir, prev_points, states)
    if not todo:
        print(f"nothing to submit: every point of {sweep_dir} is finished or queued")
        return status_sweep(sweep_dir, previous)

    folder = sweep_dir / args.executor
    executor = make_executor(args.executor, folder, job)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    trainers = []
    # The local executor starts every job at once: its points take turns (`node.hold_slot`), at most
    # slurm.array_parallelism at a time, as SLURM's array limit has them on a cluster.
    slots = (str(sweep_dir / "local-slots"), job.slurm.array_parallelism) if args.executor == "local" else None
    for label, params, point_job, point_id in todo:
        (sweep_dir / label).mkdir(parents=True, exist_ok=True)
        spec = tagged(pinned(point_job, sweep_dir / label, point_id), sweep_id, label)
        trainers.append(Trainer(halved(spec, job.sweep), slots))

    def submit_all() -> list[Any]:
        with executor.batch():
            jobs = [executor.submit(t) for t in trainers]
        return jobs

    subs = submitted(submit_all)
    ids = [str(s.job_id) for s in subs]
    point_records = record_points(job, args, sweep_dir, sweep_id, folder, prev_points, todo, ids)
    record = sweep_record(job, args, sweep_dir, sweep_id, folder, previous, ids,
                          [point_records[p[0]] for p in points if p[0] in point_records])
    runfiles.write_json(sweep_dir / runfiles.SUBMISSION, record)
    announce_sweep(job, args.executor, part, sweep_dir, sweep_id, folder, ids, len(points))
    if args.executor == "debug":
        code = max(run_debug(s) for s in subs)
        return status_sweep(sweep_dir, record) or code
    if not args.wait:
        return 0
    code = wait_and_report(sweep_dir, dict(zip(ids, subs)), quiet_result=True)
    status_sweep(sweep_dir, record)
    return code


Point = tuple[str, dict[str, Any], JobBase, str]  # label, parameters, job, run id (`sweep_points`)


def points_to_submit(points: list[Point], sweep_dir: Path, prev_points: dict[str, dict[str, Any]],
                     states: dict[str, JobState]) -> list[Point]:
    """The points to submit now: not finished, and not queued or running under an earlier submission."""
    todo = []
    for label, params, point_job, point_id in points:
        old_id = prev_points.get(label, {}).get("job_id")
        if (sweep_dir / label / runfiles.RESULT).is_file():
            print(f"skipping {label}: finished")
        elif old_id and states.get(old_id, JobState("UNKNOWN")).active:
            print(f"skipping {label}: still {states[old_id].state.lower()} as job {old_id}")
        else:
            todo.append((label, params, point_job, point_id))
    return todo


def record_points(job: JobBase, args: Any, sweep_dir: Path, sweep_id: str, folder: Path,
                  prev_points: dict[str, dict[str, Any]], todo: list[Point], ids: list[str]) -> dict[str, dict[str, Any]]:
    """Each submitted point's submission.json in its run directory (`status` of one point reads it),
    and every point's record for the sweep's: the earlier ones with the new ones over them."""
    point_records = dict(prev_points)
    for (label, params, point_job, point_id), job_id in zip(todo, ids):
        rec = {"name": label, "params": params, "run_dir": str(sweep_dir / label), "job_id": job_id,
               "logs": log_paths(folder, job_id), "wandb_group": sweep_id, "wandb_job_type": label}
        point_records[label] = rec
        runfiles.write_json(sweep_dir / label / runfiles.SUBMISSION, {
            "kind": "run", "executor": args.executor, "job_ids": [job_id], "submitted_at": now(),
            "run_dir": rec["run_dir"], "folder": str(folder), "world_size": world_size(job),
            "logs": rec["logs"], "wandb": {"group": rec["wandb_group"], "project": job.tracking.wandb.project},
            "sweep_dir": str(sweep_dir),
        })
    return point_records


def sweep_record(job: JobBase, args: Any, sweep_dir: Path, sweep_id: str, folder: Path, previous: dict[str, Any],
                 ids: list[str], points: list[dict[str, Any]]) -> dict[str, Any]:
    """The sweep's submission.json: every job id it has had, how it was asked for, its points."""
    return {
        "kind": "sweep",
        "executor": args.executor,
        "job_ids": list(dict.fromkeys(previous.get("job_ids", []) + ids)),
        "submitted_at": now(),
        "job_file": str(Path(args.job).resolve()),
        "overrides": runfiles.redact(list(args.overrides)),
        "run_dir": str(sweep_dir),
        "folder": str(folder),
        "world_size": world_size(job),
        "grid": job.sweep.grid,
        "sweep": job.sweep.model_dump(mode="json"),
        "sweep_id": sweep_id,
        "points": points,
    }


def announce_sweep(job: JobBase, executor: str, part: Partition | None, sweep_dir: Path, sweep_id: str,
                   folder: Path, ids: list[str], count: int) -> None:
    """What was submitted, and where its directory, logs, W&B group and status are."""
    array = f"job array {ids[0].split('_')[0]}" if len(ids) > 1 else f"job {ids[0]}"
    print(f"submitted {len(ids)} point(s) of {job.name}'s {sweeps.describe(job.sweep, count)} as {array} "
          f"({describe_layout(job, executor, part)}, at most {job.slurm.array_parallelism} at once): "
          f"{', '.join(ids)}")
    print(f"sweep dir: {sweep_dir}")
    print(f"logs:      {folder}/<job id>_0_log.out/.err")
    print(f"W&B group: {sweep_id}, tag {sweep_id}, job type = the point (project {job.tracking.wandb.project})")
    print(f"status:    lstm-train status {sweep_dir}")
