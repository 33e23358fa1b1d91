"""`lstm-train status / cancel`, and `submit --wait`: what became of submitted runs and sweeps.

Everything here reads `submission.json` (written by `submission`), asks SLURM
(`jobstate`) and reads the run directory; nothing imports torch, so a login node
answers at once.

A run's table shows every job submitted for it; a requeued job (time limit,
preemption, node failure) adds one line per earlier incarnation (sacct
--duplicates); while it trains, where it is and how long it has left (`livestatus`:
step, epoch, loss, samples or tokens per second, time left).  A run started without
`submit` (`run`, sbatch) has no jobs to list: its state and progress alone.  A sweep's
table ranks the points by the task's primary metric on validation data (`val_<metric>`
of each result.json), never by the test split: that would choose on the test set.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from .. import checkpoint, livestatus, runfiles
from .commands import run_slurm
from .diagnose import describe_attempts, explain_failure
from .jobstate import (FINAL_STATES, STUCK_REASONS, JobState, job_history, job_states, local_state, slurm_states,
                       submitit_folder)

POLL_S = 3.0


def load_record(path: Path) -> dict[str, Any]:
    record = runfiles.read_json(path / runfiles.SUBMISSION, runfiles.SUBMISSION_FIELDS)
    if record is None:
        raise FileNotFoundError(f"{path / runfiles.SUBMISSION} not found: not a directory made by `lstm-train submit` "
                                "(nor a run directory with a config.yaml)")
    return record


def record_tasks(record: dict[str, Any]) -> int:
    return int(record.get("world_size", 1) or 1)


def primary_metric(result: dict[str, Any]) -> tuple[str | None, bool]:
    """(metric name, higher is better) of a result.json: the task's own `primary_metric`
    and `higher_is_better`; for older files, their first `test_` key (the loss: lower is better)."""
    name = result.get("primary_metric")
    if name in result:
        return name, bool(result.get("higher_is_better", True))
    first = next((k for k in result if k.startswith("test_")), None)
    return first, bool(result.get("higher_is_better", False))


def print_table(rows: list[tuple[Any, ...]]) -> None:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip())


def status_main(args: Any) -> int:
    """The table (or with --json one JSON object); exit 1 when a job ended without a result
    (FAILED, TIMEOUT, CANCELLED, ...), so scripts and CI can tell."""
    path = Path(args.run_dir).resolve()
    if not (path / runfiles.SUBMISSION).exists() and (path / runfiles.CONFIG).is_file():
        record: dict[str, Any] = {}
        show: Any = status_unsubmitted  # started by `run`, accelerate launch or sbatch: its files alone
    else:
        record = load_record(path)
        show = status_sweep if record.get("kind") == "sweep" else status_run
    if not getattr(args, "json", False):
        return show(path, record)
    data: dict[str, Any] = {}
    with contextlib.redirect_stdout(io.StringIO()):
        code = show(path, record, data)
    print(json.dumps(data, indent=2))
    return code


def unfinished(state: str, result: dict[str, Any] | None) -> bool:
    """A job that ended (not queued, running or COMPLETED) and left no result."""
    return result is None and state in FINAL_STATES and state != "COMPLETED"


def result_summary(result: dict[str, Any]) -> str:
    metric, _ = primary_metric(result)
    keys = ([metric] if metric else []) + ["steps", "world_size", "resumed_from_step"]
    return "  ".join(f"{k}={result[k]:.4f}" if isinstance(result[k], float) else f"{k}={result[k]}"
                     for k in keys if result.get(k) is not None)


def status_run(run_dir: Path, record: dict[str, Any], data: dict[str, Any] | None = None) -> int:
    ids = [str(j) for j in record.get("job_ids", [])]
    states = job_states(record, run_dir)
    history = job_history(ids) if record.get("executor") == "slurm" else {}
    result = runfiles.read_json(run_dir / runfiles.RESULT)
    print(f"run {run_dir}  ({record.get('executor')}, W&B group {record.get('wandb', {}).get('group')})")
    rows = [("job", "state", "elapsed", "nodes", "reason")]
    for jid in ids:
        st = states.get(jid, JobState("UNKNOWN"))
        state = "COMPLETED" if st.state in ("UNKNOWN", "FINISHED") and result is not None else st.state
        rows.append((jid, state, st.elapsed, st.nodes, st.reason))
    if not any(r[4] for r in rows[1:]):
        rows = [r[:4] for r in rows]
    print_table(rows)
    for jid in ids:
        earlier = history.get(jid, [])[:-1]  # the last row is the current incarnation, shown above
        if earlier:
            print(f"job {jid} was requeued {len(earlier)} time(s):")
            for line in describe_attempts(history[jid]):
                print(f"  {line}")
    live = None
    if result is not None:
        print(f"result: {result_summary(result)}  ({run_dir / runfiles.RESULT})")
    else:
        latest = ids[-1]
        st = states.get(latest, JobState("UNKNOWN"))
        if st.state in FINAL_STATES or st.state == "INTERRUPTED":
            print(explain_failure(latest, st, submitit_folder(run_dir, record), record_tasks(record)))
        live = livestatus.progress(run_dir)
        print("\n".join(livestatus.describe(live)))
        ckpts = checkpoint.checkpoint_files(run_dir / checkpoint.CHECKPOINTS)
        if ckpts:
            print(f"newest checkpoint: step {ckpts[0][0]} ({ckpts[0][1]})")
    logs = record.get("logs", {})
    if logs:
        print(f"logs: {logs.get('stdout')}\n      {logs.get('stderr')}")
    latest = states.get(ids[-1], JobState("UNKNOWN")) if ids else JobState("UNKNOWN")
    failed = unfinished(latest.state, result)
    if data is not None:
        data.update(kind="run", run_dir=str(run_dir), executor=record.get("executor"),
                    wandb_group=record.get("wandb", {}).get("group"), failed=failed, result=result, logs=logs,
                    jobs=[{"job_id": r[0], "state": r[1], "elapsed": r[2], "nodes": r[3]} for r in rows[1:]],
                    progress=live.to_dict() if live else None)
    return 1 if failed else 0


def status_unsubmitted(run_dir: Path, record: dict[str, Any], data: dict[str, Any] | None = None) -> int:
    """A run started by `run`, accelerate launch or sbatch: no jobs to ask SLURM about, so its
    state (lock.json's holder, result.json) and progress from the metrics files."""
    live = livestatus.progress(run_dir)
    result = runfiles.read_json(run_dir / runfiles.RESULT, runfiles.RESULT_FIELDS)
    print(f"run {run_dir}  ({live.state}" + (f": {live.holder}" if live.holder else "") + ")")
    if result is not None:
        print(f"result: {result_summary(result)}  ({run_dir / runfiles.RESULT})")
    else:
        print("\n".join(livestatus.describe(live)))
        if live.newest_checkpoint is not None:
            print(f"newest checkpoint: step {live.newest_checkpoint}"
                  + ("" if live.state == "running" else "; run the same command again to resume"))
    if data is not None:
        data.update(kind="run", run_dir=str(run_dir), executor=None, state=live.state, failed=False,
                    result=result, progress=live.to_dict())
    return 0


def validation_metric(result: dict[str, Any]) -> tuple[str | None, bool]:
    """(`val_<primary metric>`, higher is better) of a result.json: what a sweep ranks its points
    by.  None when the run had no validation data (an older sweep): such points are not ranked,
    for ranking them by the test split would choose hyperparameters on the test set."""
    metric, higher = primary_metric(result)
    name = f"val_{metric.removeprefix('test_')}" if metric else None
    return (name if name in result else None), higher


def status_sweep(sweep_dir: Path, record: dict[str, Any], data: dict[str, Any] | None = None) -> int:
    """One row per grid point, best first by the task's primary metric on validation data (the
    test value beside it, never ranked by); 1 if a point failed."""
    states = job_states(record, sweep_dir)
    results = {p["name"]: runfiles.read_json(Path(p["run_dir"]) / runfiles.RESULT) for p in record.get("points", [])}
    metric, higher = next(((m, h) for m, h in map(validation_metric, filter(None, results.values())) if m), (None, True))
    test_metric = next((primary_metric(r)[0] for r in results.values() if r), None)
    unranked = any(r and validation_metric(r)[0] is None for r in results.values())
    rows: list[tuple[Any, ...]] = []
    for point in record.get("points", []):
        res = results[point["name"]]
        st = states.get(str(point.get("job_id")), JobState("UNKNOWN"))
        state = "COMPLETED" if res is not None and not st.active else st.state
        value = res.get(metric) if res and metric else None
        rows.append((point["name"], state, value, point.get("job_id", ""), res.get(test_metric) if res and test_metric else None))
    ranked = sorted((r for r in rows if isinstance(r[2], (int, float))), key=lambda r: r[2], reverse=higher)
    rows = ranked + [r for r in rows if r not in ranked]
    done = sum(1 for r in rows if r[1] == "COMPLETED")
    best = "higher" if higher else "lower"
    print(f"sweep {sweep_dir}: {len(rows)} point(s), {done} completed ({record.get('executor')}), "
          f"ranked by {metric or 'nothing yet'}" + (f" ({best} is better; validation data)" if metric else ""))
    if unranked:
        print("note: points without validation metrics are not ranked (ranking by the test split would choose "
              "hyperparameters on the test set); submit the sweep again: it now holds out validation data")
    show = lambda v: f"{v:.4f}" if isinstance(v, float) else ("-" if v is None else str(v))  # noqa: E731
    table = [("point", "state", metric or "metric", "job") + ((test_metric,) if test_metric else ())] + [
        (r[0], r[1], show(r[2]), r[3]) + ((show(r[4]),) if test_metric else ()) for r in rows
    ]
    print_table(table)
    for r in rows:
        if r[1] in FINAL_STATES and r[1] != "COMPLETED":
            print(f"\n{r[0]}: " + explain_failure(str(r[3]), states[str(r[3])], submitit_folder(sweep_dir, record),
                                                  record_tasks(record)))
    failed = [r[0] for r in rows if unfinished(r[1], results[r[0]])]
    if data is not None:
        params = {p["name"]: p.get("params") for p in record.get("points", [])}
        data.update(kind="sweep", run_dir=str(sweep_dir), executor=record.get("executor"), metric=metric,
                    test_metric=test_metric, higher_is_better=higher, completed=done, failed=failed,
                    points=[{"name": r[0], "state": r[1], "value": r[2], "job_id": r[3], "params": params.get(r[0]),
                             "result": results[r[0]]} for r in rows])
    if isinstance(record.get("sweep"), dict) and record["sweep"].get("method") == "bayes":
        status_bayes(sweep_dir, record["sweep"], data)
    return 1 if failed else 0


def status_bayes(sweep_dir: Path, spec: dict[str, Any], data: dict[str, Any] | None = None) -> None:
    """A bayes sweep's suggestion history from its study (`<sweep dir>/study.jsonl`): every
    point in the order TPE was asked for it, random or modelled, what it was told; then the best."""
    from .. import bayes
    from ..sweeps import SweepConfig

    try:
        sweep = SweepConfig.model_validate(spec)
    except ValueError as e:
        raise runfiles.RunDirError(f"{sweep_dir / runfiles.SUBMISSION}: its sweep section is not valid "
                                   f"({runfiles.shorten(str(e), 200)})") from None
    metric, maximize = sweep.optimised()
    try:
        study = bayes.open_study(sweep_dir, sweep, create=False)
    except FileNotFoundError:
        print(f"\nbayes: no study yet in {bayes.study_path(sweep_dir)}")
        return
    rows = bayes.history(study, sweep, sweep_dir)
    best = bayes.best(study, sweep, sweep_dir)
    told = sum(1 for r in rows if r["state"] != "RUNNING")
    print(f"\nbayes (Optuna TPE, study {bayes.study_path(sweep_dir)}): {len(rows)} of {sweep.count} point(s) asked, "
          f"{told} told; the first {sweep.startup} at random; optimises {metric} "
          f"({'higher' if maximize else 'lower'} is better)")
    show = lambda v: f"{v:.4g}" if isinstance(v, float) else ("-" if v is None else str(v))  # noqa: E731
    print_table([("#", "batch", "by", "point", "told", metric)] + [
        (r["number"], r["batch"], r["by"], r["point"], r["state"].lower() if r["state"] != "RUNNING" else "-",
         show(r["value"])) for r in rows])
    if best is not None:
        print(f"best: #{best['number']} {best['point']}  {metric}={best['value']:.4g}  ("
              + ", ".join(f"{k}={show(v)}" for k, v in best["params"].items()) + ")")
    if data is not None:
        data["bayes"] = {"study": str(bayes.study_path(sweep_dir)), "metric": metric, "maximize": maximize,
                         "startup_points": sweep.startup, "history": rows, "best": best}


def wait_and_report(run_dir: Path, subs: dict[str, Any], quiet_result: bool = False) -> int:
    """Wait for the job(s), printing state changes; then the result, or why not."""
    record = runfiles.read_json(run_dir / runfiles.SUBMISSION) or {}
    executor = record.get("executor", "slurm")
    seen: dict[str, str] = {}
    try:
        while True:
            if executor == "local":
                states = {i: (JobState("RUNNING") if not s.done() else local_state(i, submitit_folder(run_dir, record)))
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
    folder = submitit_folder(run_dir, record)
    if record.get("kind") == "sweep":
        failed = [(jid, st) for jid, st in states.items() if st.state != "COMPLETED"]
        for jid, st in failed:
            print(explain_failure(jid, st, folder, record_tasks(record)), file=sys.stderr)
        return 1 if failed else 0
    jid, st = next(iter(states.items()))
    result = runfiles.read_json(run_dir / runfiles.RESULT)
    if st.state == "COMPLETED" and result is not None:
        if not quiet_result:
            print(json.dumps(result, indent=2))
        return 0
    print("error: " + explain_failure(jid, st, folder, record_tasks(record)), file=sys.stderr)
    return 1


def cancel_main(args: Any) -> int:
    path = Path(args.run_dir).resolve()
    record = load_record(path)
    active = [jid for jid, st in job_states(record, path).items() if st.active]
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
