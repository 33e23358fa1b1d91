"""`lstm-train submit` of a `sweep.method: bayes` job: batches of TPE's suggestions as job arrays.

One `submit` is the driver (`lstm_train.bayes` says how the study is kept and why):

    1. tell the study what has finished since it last looked (each point's result.json);
    2. submit again the points whose job ended without a result (they resume from their
       checkpoints; only on the first pass: under --wait a point that fails is reported, and
       `submit` again retries it);
    3. ask for a batch: as many new points as `slurm.array_parallelism` leaves room for beside
       those still queued or running, never more than `sweep.count` in all, as one job array
       (`--executor local`: local processes; `debug`: here, one after another);
    4. without --wait: leave (`submit` again continues); with --wait: wait for the batch, then
       go back to 1 until every point is told; `status` of the sweep at the end.

A second `submit` of the same sweep while one drives it is refused (the first holds
`<sweep dir>/.driver.lock`): two drivers would ask for the same room twice.  Stopping the driver
(Ctrl-C, a closed login session) leaves its jobs running and its study intact.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .. import bayes, runfiles
from ..config import JobBase, point_jobs
from .commands import SubmitError
from .jobstate import JobState, job_states
from .node import Trainer
from .preflight import Partition, world_size
from .status import POLL_S, status_sweep
from .submission import (batch_size, choose_run_id, describe_layout, halved, log_paths, make_executor, now, pinned, run_debug,
                         run_dir_of, submitted, sweep_id_of, tagged)

DRIVER_LOCK = ".driver.lock"


@contextmanager
def driving(sweep_dir: Path) -> Iterator[None]:
    """Hold the sweep's driver lock, or refuse: one driver per bayes sweep."""
    path = sweep_dir / DRIVER_LOCK
    fd = os.open(path, os.O_CREAT | os.O_RDWR | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SubmitError(f"another `lstm-train submit` is driving the bayes sweep {sweep_dir} now (it holds "
                              f"{path}); wait for it, or stop it (its jobs go on) and submit again. "
                              f"See `lstm-train status {sweep_dir}`") from None
        yield
    finally:
        os.close(fd)


def submit_bayes(job: JobBase, args: Any, part: Partition | None) -> int:
    sweep_id = choose_run_id(job, sweep_id_of(job), args.new_run)
    sweep_dir = run_dir_of(job, sweep_id)
    runfiles.make_run_dir(sweep_dir)
    with driving(sweep_dir):
        return Driver(job, args, part, sweep_id, sweep_dir).run()


class Driver:
    """The loop of one `submit`: tell, resubmit, ask, submit, wait."""

    def __init__(self, job: JobBase, args: Any, part: Partition | None, sweep_id: str, sweep_dir: Path) -> None:
        self.job, self.args, self.part, self.sweep_id, self.sweep_dir = job, args, part, sweep_id, sweep_dir
        self.sweep = job.sweep
        self.metric, self.maximize = self.sweep.optimised()
        self.folder = sweep_dir / args.executor
        self.study = bayes.open_study(sweep_dir, self.sweep)
        previous = runfiles.read_json(sweep_dir / runfiles.SUBMISSION, runfiles.SUBMISSION_FIELDS) or {}
        if previous and previous.get("executor") not in (None, args.executor):
            raise SubmitError(f"{sweep_dir} was submitted with --executor {previous.get('executor')}; continue it "
                              f"with the same executor (or --new-run for a fresh sweep with {args.executor})")
        self.record: dict[str, Any] = previous
        self.points: dict[str, dict[str, Any]] = {p["name"]: p for p in previous.get("points", [])
                                                  if isinstance(p, dict) and isinstance(p.get("name"), str)}
        self.subs: dict[str, Any] = {}  # job id -> submitit job, for the jobs this driver submitted
        self.executor: Any = None

    # -- the loop ----------------------------------------------------------------

    def run(self) -> int:
        first = True
        while True:
            self.tell_finished()
            open_points = bayes.open_points(self.study, self.sweep, self.sweep_dir)
            states = job_states(self.record, self.sweep_dir) if self.record else {}
            active = [p for p in open_points if self.state_of(p, states).active]
            ended = [p for p in open_points if p not in active]
            if ended and not first:
                return self.failed(ended, states)
            room = min(batch_size(self.job) - len(active) - len(ended), self.sweep.count - len(self.study.trials))
            batch = self.batch_number()
            new = bayes.ask(self.study, self.sweep, max(0, room), batch) if room > 0 else []
            for p in ended:
                print(f"submitting {p.label} again: its job ended without a result (it resumes from its checkpoint)"
                      if self.job_of(p) else f"submitting {p.label}: asked for before, never submitted")
            todo = ended + new
            if todo:
                self.submit(todo, batch)
            first = False
            if not todo and not active:
                return self.finish()
            if not self.args.wait and not todo:
                print(f"nothing to submit now: {len(active)} point(s) still queued or running (of "
                      f"{len(self.study.trials)} asked; {self.sweep.count} in all); progress: lstm-train status "
                      f"{self.sweep_dir}")
                return 0
            if not self.args.wait:
                print(f"without --wait one batch is submitted: `lstm-train submit` the same job again once it has "
                      f"finished, to tell its results and submit the next (or submit with --wait to drive the whole "
                      f"sweep); progress: lstm-train status {self.sweep_dir}")
                return 0
            if self.args.executor != "debug":
                code = self.wait([self.job_of(p) for p in active + todo])
                if code:
                    return code

    def batch_number(self) -> int:
        """How many batches were submitted before (each point records its batch)."""
        return max((int(p.get("batch", 0)) + 1 for p in self.points.values() if isinstance(p.get("batch"), int)), default=0)

    def job_of(self, point: bayes.Suggestion) -> str:
        return str(self.points.get(point.label, {}).get("job_id", ""))

    def state_of(self, point: bayes.Suggestion, states: dict[str, JobState]) -> JobState:
        return states.get(self.job_of(point), JobState("UNKNOWN"))

    # -- telling -----------------------------------------------------------------

    def tell_finished(self) -> None:
        for point in bayes.open_points(self.study, self.sweep, self.sweep_dir):
            told = bayes.tell(self.study, self.sweep, self.sweep_dir, point)
            if told is None:
                continue
            value = f"{self.metric}={told.value:.4g}" if told.value is not None else "no value"
            print(f"told {told.label}: {told.state.lower()}, {value}" + (f" ({told.note})" if told.note else ""))
            if point.label in self.points:
                self.points[point.label].update(outcome=told.state, value=told.value, note=told.note or None)
        self.save_record()

    # -- submitting --------------------------------------------------------------

    def submit(self, todo: list[bayes.Suggestion], batch: int) -> None:
        jobs = point_jobs(self.job, self.args.job, [(p.number, p.params) for p in todo], say=not self.points)
        if self.executor is None:
            self.executor = make_executor(self.args.executor, self.folder, self.job)
        slots = (str(self.sweep_dir / "local-slots"), self.job.slurm.array_parallelism) \
            if self.args.executor == "local" else None
        trainers = []
        for point, (label, _, point_job) in zip(todo, jobs):
            run_dir = self.sweep_dir / label
            runfiles.make_run_dir(run_dir)
            spec = tagged(pinned(point_job, run_dir, f"{self.sweep_id}-{point.number:02d}"), self.sweep_id, label)
            trainers.append(Trainer(halved(spec, self.sweep), slots))

        def submit_all() -> list[Any]:
            with self.executor.batch():
                return [self.executor.submit(t) for t in trainers]

        subs = submitted(submit_all)
        ids = [str(s.job_id) for s in subs]
        self.subs.update(zip(ids, subs))
        for point, job_id in zip(todo, ids):
            rec = {"name": point.label, "params": point.params, "run_dir": str(self.sweep_dir / point.label),
                   "job_id": job_id, "logs": log_paths(self.folder, job_id), "wandb_group": self.sweep_id,
                   "wandb_job_type": point.label, "trial": point.number,
                   "batch": self.points.get(point.label, {}).get("batch", batch)}
            self.points[point.label] = rec
            runfiles.write_json(self.sweep_dir / point.label / runfiles.SUBMISSION, {
                "kind": "run", "executor": self.args.executor, "job_ids": [job_id], "submitted_at": now(),
                "run_dir": rec["run_dir"], "folder": str(self.folder), "world_size": world_size(self.job),
                "logs": rec["logs"], "wandb": {"group": self.sweep_id, "project": self.job.tracking.wandb.project},
                "sweep_dir": str(self.sweep_dir),
            })
        self.record["job_ids"] = list(dict.fromkeys(self.record.get("job_ids", []) + ids))
        self.save_record()
        array = f"job array {ids[0].split('_')[0]}" if len(ids) > 1 else f"job {ids[0]}"
        told = sum(1 for t in self.study.trials if t.state.name in ("COMPLETE", "PRUNED"))
        how = "drawn at random (TPE's startup)" if told < self.sweep.startup else f"suggested by TPE from {told} result(s)"
        print(f"batch {batch}: submitted {len(ids)} point(s) of {self.job.name}'s bayes sweep ({len(self.study.trials)} "
              f"of {self.sweep.count} asked), {how}, as {array} ({describe_layout(self.job, self.args.executor, self.part)}): "
              f"{', '.join(f'{p.label} [{i}]' for p, i in zip(todo, ids))}", flush=True)
        if self.args.executor == "debug":
            for sub in subs:
                run_debug(sub)

    def save_record(self) -> None:
        ordered = sorted(self.points.values(), key=lambda p: (p.get("trial") if isinstance(p.get("trial"), int) else 0))
        self.record.update({
            "kind": "sweep",
            "executor": self.args.executor,
            "job_ids": self.record.get("job_ids", []),
            "submitted_at": self.record.get("submitted_at") or now(),
            "job_file": str(Path(self.args.job).resolve()),
            "overrides": runfiles.redact(list(self.args.overrides)),
            "run_dir": str(self.sweep_dir),
            "folder": str(self.folder),
            "world_size": world_size(self.job),
            "grid": {},
            "sweep": self.sweep.model_dump(mode="json"),
            "sweep_id": self.sweep_id,
            "study": str(bayes.study_path(self.sweep_dir)),
            "points": ordered,
        })
        runfiles.write_json(self.sweep_dir / runfiles.SUBMISSION, self.record)

    # -- waiting -----------------------------------------------------------------

    def wait(self, ids: list[str]) -> int:
        """Until every job of the batch has left the queue, printing state changes."""
        ids = [i for i in dict.fromkeys(ids) if i]
        seen: dict[str, str] = {}
        try:
            while True:
                for sub in self.subs.values():  # a local job's controller is reaped once it ends
                    if self.args.executor == "local":
                        sub.done()
                states = job_states({**self.record, "job_ids": ids}, self.sweep_dir)
                for jid, st in states.items():
                    text = st.state + (f" ({st.reason})" if st.reason and st.state == "PENDING" else "")
                    if seen.get(jid) != text:
                        print(f"{time.strftime('%H:%M:%S')} job {jid}: {text}", flush=True)
                        seen[jid] = text
                if all(not st.active and st.state != "UNKNOWN" for st in states.values()):
                    return 0
                time.sleep(POLL_S)
        except KeyboardInterrupt:
            print(f"\nstopped driving the sweep; its jobs go on. `lstm-train submit` the same job again to tell "
                  f"their results and go on: lstm-train status {self.sweep_dir}", file=sys.stderr)
            return 130

    def failed(self, ended: list[bayes.Suggestion], states: dict[str, JobState]) -> int:
        status_sweep(self.sweep_dir, self.record)
        names = ", ".join(p.label for p in ended)
        print(f"error: {names}: the job ended without a result (see above); `lstm-train submit` the same job again "
              "to run it again (it resumes from its checkpoint) and go on with the sweep", file=sys.stderr)
        return 1

    def finish(self) -> int:
        """Every point told: the sweep's status, its suggestion history and best point included."""
        print(f"all {self.sweep.count} point(s) of the bayes sweep told")
        return status_sweep(self.sweep_dir, self.record)
