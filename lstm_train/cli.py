"""`lstm-train`: run, predict, evaluate, convert, export, report, bench, submit, status, cancel, runs, compare.

Errors a user can fix (a bad key, a missing file, a checkpoint of another model)
print one clear message and exit 2; no traceback to dig through.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from . import runfiles
from .cli_args import VersionAction, add_commands
from .config import check_option, load_job, validate_job
from .messages import is_main_process
from .taskcommands import add_check_task_command, known_predict_options, run_registration
from .tasks.registry import Registration

# Errors a user fixes by changing input: ConfigError, IdxError are ValueErrors and
# DataMissingError a FileNotFoundError; these two are looked up only where their modules
# were imported (`distributed` imports torch, which `status` and `cancel` on a login node
# should not pay for).
_USER_RUNTIME_ERRORS = (("lstm_train.checkpoint", "CheckpointMismatch"), ("lstm_train.distributed", "DistributedSetupError"))


def is_user_error(error: BaseException) -> bool:
    kinds = tuple(getattr(sys.modules[m], name) for m, name in _USER_RUNTIME_ERRORS if m in sys.modules)
    return isinstance(error, (ValueError, FileNotFoundError, *kinds))


def cmd_run(args: argparse.Namespace) -> int:
    if args.print_config:
        return cmd_config(args)
    from .signals import StopRequest
    from .train import NonFiniteLoss, train

    job = load_job(args.job, args.overrides)
    if job.sweep is not None or args.point is not None:
        job = sweep_point(job, args.job, args.point or 0)
    stop = StopRequest(signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
    try:
        result = train(job, stop.event)
    except NonFiniteLoss as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    finally:
        stop.restore()
    if result.get("interrupted"):
        print(f"stopped at step {result['steps']}; run the same command again to resume", file=sys.stderr)
        return leave(143)
    if is_main_process():  # one copy of the result, not one per process
        print(json.dumps(result, indent=2))
        if result.get("diverged"):
            print("warning: training diverged (the loss ended far above where it started): the model is "
                  "not usable; lower optim.lr or set optim.grad_clip", file=sys.stderr)
    return leave(0)


def cmd_prepare(args: argparse.Namespace) -> int:
    """Prepare a job's data into the store (once; later runs and every rank map it) and say where."""
    import contextlib

    with contextlib.redirect_stdout(sys.stderr):  # the tasks' data notes; stdout: the summary alone
        summary = prepare_job(args)
    if summary:
        print(json.dumps(summary, indent=1))
    return 0


def prepare_job(args: argparse.Namespace) -> dict | None:
    from .data.store import prepared
    from .tasks import get_task

    check_prepare_options(args)
    job = load_job(args.job, args.overrides)
    task = get_task(job.task)(job, None)
    entry = prepared.locate(task)
    if entry is None:
        print(f"{job.task}: this task loads its data directly; nothing to prepare", file=sys.stderr)
        return None
    from .data.store.runner import Options

    def slurm_executor(folder: Path):  # noqa: ANN202 - submitit's executor, one array task per shard
        from .slurm.submission import make_executor, submitted

        executor = make_executor("slurm", folder, job)
        executor.update_parameters(nodes=1, ntasks_per_node=1, job_name=f"{job.name}-prepare")
        return _Submitting(executor, submitted)

    options = Options(workers=getattr(args, "workers", None) or 0, shards=getattr(args, "shards", None),
                      executor=getattr(args, "executor", "local") or "local", slurm=slurm_executor)
    manifest, fresh = prepared.ensure(task, entry, options)
    samples = {name: None if cols is None else (cols[0]["shape"] if cols[0]["kind"] == "dense"
                                                else cols[0]["lengths"]["shape"])[0]
               for name, cols in manifest["splits"].items()}
    return {"path": str(entry.folder), "bytes": manifest["bytes"], "prepared_now": fresh, "samples": samples}


def check_prepare_options(args: argparse.Namespace) -> None:
    """`prepare`'s flags, each refused by name when it would be ignored or cannot work."""
    import shutil

    workers, shards, executor = getattr(args, "workers", None), getattr(args, "shards", None), getattr(args, "executor", "local")
    if workers is not None and workers < 1:
        raise ValueError(f"--workers {workers}: give 1 or more processes (leave it out for every core)")
    if shards is not None and executor != "slurm":
        raise ValueError(f"--shards {shards}: only with --executor slurm (SLURM array tasks); here --workers sets "
                         "the processes")
    if shards is not None and shards < 1:
        raise ValueError(f"--shards {shards}: give 1 or more array tasks")
    if executor == "slurm" and shutil.which("sbatch") is None:
        raise ValueError("--executor slurm: no sbatch on PATH (not a SLURM login node?); prepare here with "
                         "--executor local, or run this where SLURM is")


class _Submitting:
    """A submitit executor whose submissions turn sbatch's complaints into one-line errors."""

    def __init__(self, executor, submitted) -> None:  # noqa: ANN001
        self.executor, self.submitted = executor, submitted

    def map_array(self, fn, *iterables):  # noqa: ANN001, ANN202
        return self.submitted(lambda: self.executor.map_array(fn, *iterables))


def sweep_point(job, source: str, index: int):
    """`run` of a job with a `sweep:` trains one point of it, and says which (`submit` runs them all)."""
    from .config import ConfigError, sweep_jobs
    from .sweeps import describe

    if job.sweep is None:
        raise ConfigError(f"--point {index}: {source} has no sweep: section")
    points = sweep_jobs(job, source)
    if not 0 <= index < len(points):
        raise ConfigError(f"--point {index}: {source}'s sweep has points 0 to {len(points) - 1}")
    label, _, point = points[index]
    point.train.output_dir, point.train.run_id = job.train.output_dir, job.train.run_id  # as given to `run`
    if is_main_process():
        print(f"{source} has a {describe(job.sweep, len(points))}: `run` trains point {index} only, {label} "
              f"(--point N for another; `lstm-train submit {source}` runs them all as one job array)",
              file=sys.stderr, flush=True)
    return point


def leave(code: int) -> int:
    """End a rank of a launched process group at once once its work is saved.

    Even after the loop has waited for every rank and destroyed the process group, gloo's
    threads sometimes abort the interpreter's teardown ("terminate called without an active
    exception", SIGABRT; pytorch/pytorch#190489): one rank in 2 of 3 full test runs here in one
    day, and the launcher then reports a finished run as failed.  Everything the run writes
    is closed by then (checkpoints and result.json fsynced, W&B finished), so skip the
    teardown: flush the streams and exit."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def load_run(run_dir: Path, task: str | None = None):
    """A finished (or checkpointed) run's job, task, model in eval mode (the weights its result
    was computed with) and task info.  `run_dir` may also be a model artifact downloaded by
    `wandb artifact get` (the same files, flat).  Only safetensors, JSON and YAML are read, and
    the task its config.yaml names is imported only if it is installed (`registry.from_run_directory`):
    nothing in a directory from someone else runs.  `task`: the user's `--task`, used instead."""
    from .checkpoint import load_for_predict, load_model_state
    from .tasks import get_task
    from .tasks.registry import from_run_directory

    config = run_dir / "config.yaml"
    if not config.is_file():
        raise FileNotFoundError(f"{run_dir}: no config.yaml here; is this a run directory (runs/<job>/<id>) or a "
                                "model artifact (wandb artifact get)?")
    spec = runfiles.read_config(config)
    if task is not None:
        spec["task"] = task
    with from_run_directory(trusted=(task,) if task else ()):
        job = validate_job(spec, str(config))
        found = load_for_predict(run_dir)
        if found is None:
            raise FileNotFoundError(f"{run_dir / 'checkpoints'}: no checkpoint to predict with")
        path, meta, weights = found
        task_object = get_task(job.task)(job, run_dir)
    model = task_object.build_model(meta["task_info"])
    load_model_state(model, weights, path)
    model.eval()
    return job, task_object, model, meta["task_info"]


def cmd_predict(args: argparse.Namespace) -> int:
    job, task, model, info = load_run(Path(args.run_dir), args.task)
    for line in task.predict(model, info, args.inputs, predict_options(job, args)):
        print(line)
    return 0


def predict_options(job, args: argparse.Namespace) -> dict:  # noqa: ANN001 - a validated job
    """The options of `predict` for this run's task, from its registration: each checked as the
    job key it stands for, if any; one given that the task does not take is refused, naming them."""
    from .tasks import registration

    own = registration(job.task).predict_options
    wanted = {o.dest for o in own}
    for option in known_predict_options(own):
        if option.dest not in wanted and getattr(args, option.dest, None) not in (None, []):
            offered = ", ".join(o.flag for o in own) or "none"
            raise ValueError(f"{option.flag} does not apply to a {job.task} run (its predict options: {offered})")
    options = {o.dest: getattr(args, o.dest, None) for o in own}
    options["force"] = bool(getattr(args, "force", False))
    for o in own:
        if o.check and options[o.dest] is not None:  # validated as the job file's key is
            check_option(job, o.check, options[o.dest], o.flag)
    return options


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_files

    run_dir = Path(args.run_dir)
    result = evaluate_files(load_run(run_dir, args.task), run_dir, args.files)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print("\n".join(f"{k}\t{v:.4f}" if isinstance(v, float) else f"{k}\t{v}" for k, v in result["metrics"].items()))
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from .tasks.language_model import cmd_generate as generate

    job, _, model, info = load_run(Path(args.run_dir), args.task)
    if job.task != "language_model":
        raise ValueError(f"{args.run_dir} is a {job.task} run; generate samples from a language_model run")
    generate(model, info, args)
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from .checkpoint_format1 import convert

    for line in convert(Path(args.run_dir)):
        print(f"converted {line}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import ExportParityError, export

    try:
        run_dir = Path(args.run_dir)
        done = export(load_run(run_dir, args.task), run_dir, args.format, Path(args.out) if args.out else None, args.tolerance,
                      force=args.force)
    except ExportParityError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {done.path} ({args.format}, fp32; inputs {done.traced_shapes} traced, dynamic axes) and {done.sidecar}")
    print(f"parity on the test split's first batch {done.checked_shapes}: max |exported - PyTorch| = {done.max_abs_diff:.3g}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import report

    for path in report(Path(args.run_dir), force=args.force):
        print(f"wrote {path}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    if args.book is not None:
        return run_book(args)
    from .bench import main as bench_main

    return bench_main(args)


def run_book(args: argparse.Namespace) -> int:
    """`lstm-train bench --book [NAMES...] [--list] [--quick] ...`: scripts/book.py of the checkout this
    package runs from, which records into that checkout's benchmarks/ (an installed package has none)."""
    book = Path(__file__).resolve().parents[1] / "scripts" / "book.py"
    if args.job or args.overrides:
        raise ValueError("--book takes the book's entry names and options (see --book --list), not a job")
    if not book.is_file():
        raise FileNotFoundError(f"the benchmark book needs a checkout of the repository: {book} is not there "
                                f"(lstm_train runs from {book.parents[1]}); clone it and run scripts/book.py there")
    return subprocess.call([sys.executable, str(book), *args.book], cwd=book.parents[1])


def cmd_submit(args: argparse.Namespace) -> int:
    from .slurm.submit import submit_main

    if args.prepare:
        import contextlib

        with contextlib.redirect_stdout(sys.stderr):
            summary = prepare_job(args)
        if summary:
            print(f"prepared data: {summary['path']} ({summary['bytes']:,} bytes)", file=sys.stderr)
    return submit_main(args)


def cmd_status(args: argparse.Namespace) -> int:
    from .slurm.status import status_main

    return status_main(args)


def cmd_cancel(args: argparse.Namespace) -> int:
    from .slurm.status import cancel_main

    return cancel_main(args)


def cmd_runs(args: argparse.Namespace) -> int:
    from .runs import main as runs_main

    return runs_main(args)


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import main as compare_main

    return compare_main(args)


# ---------------------------------------------------------------------------
# Looking before running: config, jobs, --version


def cmd_config(args: argparse.Namespace) -> int:
    """The job as `run` and `submit` would use it: validated, overrides applied, defaults filled;
    with --explain/--keys, its keys' descriptions, types and defaults (`keys`)."""
    import yaml

    job = load_job(args.job, args.overrides)
    explain = getattr(args, "explain", None)
    if explain is not None or getattr(args, "keys", False):
        from .keys import explain as explain_keys

        print(explain_keys(job, explain or None))
        return 0
    print(yaml.safe_dump(job.to_dict(), sort_keys=False), end="")
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    from . import shipped

    if args.jobs_command == "copy":
        print(f"wrote {shipped.copy(args.name, args.dest, args.force)}")
    else:
        print("\n".join(shipped.listing()))
    return 0


# What each sub-command does (what it takes: `cli_args`).
HANDLERS = {"run": cmd_run, "prepare": cmd_prepare, "predict": cmd_predict, "evaluate": cmd_evaluate,
            "generate": cmd_generate, "convert": cmd_convert, "export": cmd_export, "report": cmd_report,
            "bench": cmd_bench, "submit": cmd_submit, "status": cmd_status, "cancel": cmd_cancel,
            "config": cmd_config, "jobs": cmd_jobs, "runs": cmd_runs, "compare": cmd_compare}


def parser(run_task: Registration | None = None) -> argparse.ArgumentParser:
    """`lstm-train`'s parser: the sub-commands' arguments (`cli_args`), each with its handler as `func`
    (`run_task`: the registration of the run a `predict` command line names, whose inputs and options
    `predict --help` shows), and `check-task` (`taskcommands`)."""
    p = argparse.ArgumentParser(prog="lstm-train", description=__doc__.split("\n")[0])
    p.add_argument("--version", action=VersionAction)
    sub = p.add_subparsers(dest="command", required=True)
    for name, command in add_commands(sub, run_task).items():
        command.set_defaults(func=HANDLERS[name])
    add_check_task_command(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = parser(run_registration(argv))
    args, extra = p.parse_known_args(argv)
    if extra:  # overrides after a flag: `submit JOB --executor local train.epochs=2`
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides += extra
        else:
            p.error(f"unrecognized arguments: {' '.join(extra)}")
    from .messages import use_one_line_warnings

    use_one_line_warnings()  # `warning: ...`, one line, like errors
    try:
        bench_overrides = args.func is cmd_bench and "=" in (args.job or "") and not Path(args.job).exists()
        if getattr(args, "job", None) and not bench_overrides:  # a path, or a shipped job's name
            # (`bench key=value`: overrides of bench's default job, which bench itself takes apart)
            from .shipped import find_job

            args.job = find_job(args.job)
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe fails here, within reach of the BrokenPipeError below
        return code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `lstm-train report RUN | head`: the reader has what it wanted; files are written
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the flush at exit does not raise again
        return 141  # 128 + SIGPIPE, as a shell reports a writer its reader left
    except MemoryError:
        print(f"error: out of memory in `lstm-train {args.command}`: an input is larger than this machine's memory "
              "can hold (or far larger than it looks)", file=sys.stderr)
        return 2
    except Exception as e:
        if not is_user_error(e):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
