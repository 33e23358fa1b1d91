"""The command line a task shapes: `predict`'s inputs and options, scoped to the run's task, and
`lstm-train check-task JOB`, the contract check of a task (`lstm_train.testing`) on its job.

Built from the tasks' registrations, not written out: a task of another package brings its
own predict options and its own words for its inputs.  Nothing here imports torch (the CLI
builds its parser from it for every command); `check-task` imports the check when it runs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from . import runfiles
from .tasks.registry import BUILTIN, PredictOption, Registration


def known_predict_options(extra: tuple[PredictOption, ...] = ()) -> list[PredictOption]:
    """A run's own task's predict options, then every built-in task's (once each, by flag: one the
    run's task does not take is refused by name, not as unknown)."""
    seen: dict[str, PredictOption] = {}
    for option in list(extra) + [o for r in BUILTIN for o in r.predict_options]:
        seen.setdefault(option.flag, option)
    return list(seen.values())


def run_registration(argv: list[str]) -> Registration | None:
    """The task of the run that `predict RUN_DIR ...` names, read from its config.yaml before the
    command line is parsed (for its options and its --help).  A task the run names is imported
    only when installed, as `load_run` does (`registry.from_run_directory`); `--task REF`, the
    user's own, is trusted.  None when there is no such run or its task cannot be used (`load_run`
    says why, once parsed)."""
    if not argv or argv[0] != "predict":
        return None
    from .tasks.registry import from_run_directory, registration

    given = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--task"]
    given += [a.split("=", 1)[1] for a in argv if a.startswith("--task=")]
    for arg in argv[1:]:
        config = Path(arg) / "config.yaml"
        if not arg.startswith("-") and config.is_file():
            try:
                task = given[-1] if given else runfiles.read_config(config).get("task", "classify")
                with from_run_directory(trusted=tuple(given)):
                    return registration(str(task))
            except (ValueError, OSError, AttributeError):
                return None
    return None


def add_predict_arguments(predict: argparse.ArgumentParser, run_task: Registration | None) -> None:
    """`predict`'s positional inputs and task options.  With the run's task known: its own inputs
    and options, the only ones --help lists (another built-in task's option is still parsed,
    unlisted, so that `predict_options` refuses it by name).  Without: every built-in task's,
    each saying which tasks take it."""
    if run_task is not None:
        predict.add_argument("inputs", nargs="*", help=f"{run_task.predict_inputs} (a {run_task.name} run)")
        own = {o.flag for o in run_task.predict_options}
        for option in known_predict_options(run_task.predict_options):
            option.add_to(predict, shown=option.flag in own)
        return
    takes: dict[str, list[str]] = {}
    for reg in BUILTIN:
        takes.setdefault(reg.predict_inputs, []).append(reg.name)
    predict.add_argument("inputs", nargs="*", help="what the run's task reads: " + "; ".join(
        f"{inputs} ({', '.join(names)})" for inputs, names in takes.items()) + " (RUN_DIR --help: its own)")
    for option in known_predict_options():
        tasks = [r.name for r in BUILTIN if any(o.flag == option.flag for o in r.predict_options)]
        option.add_to(predict, note=", ".join(tasks))


def add_check_task_command(sub: argparse._SubParsersAction) -> None:
    check = sub.add_parser("check-task", help="check that a task keeps the task contract, on a tiny job of it",
                           description="Run every hook of the job's task on its job (make it tiny with overrides) "
                           "in a scratch folder: data, state, run files, training step, metrics, finish, predict "
                           "and a fresh process predicting from info and weights alone (lstm_train.testing).")
    check.add_argument("job", help="a job of the task, e.g. adding.yaml")
    check.add_argument("rest", nargs=argparse.REMAINDER, metavar="[KEY=VALUE ...] [-- INPUT ... [--OPTION V]]",
                       help="overrides, then after -- what to give the task's predict, as to `lstm-train predict "
                       "RUN_DIR` (its positional inputs and options)")
    check.set_defaults(func=cmd_check_task)


def split_rest(rest: list[str]) -> tuple[list[str], list[str]]:
    """(overrides, predict arguments): split at `--`, else where the key=value words end."""
    if "--" in rest:
        i = rest.index("--")
        return rest[:i], rest[i + 1:]
    n = next((i for i, a in enumerate(rest) if a.startswith("-") or "=" not in a), len(rest))
    return rest[:n], rest[n:]


def predict_case(reg: Registration, words: list[str]) -> tuple[list[str], dict[str, Any], Any]:
    """The predict inputs, options and a blank input to refuse, parsed as `predict` parses them."""
    parser = argparse.ArgumentParser(prog=f"lstm-train check-task JOB -- ({reg.name}'s predict)")
    parser.add_argument("inputs", nargs="*")
    for option in reg.predict_options:
        option.add_to(parser)
    args = parser.parse_args(words)
    options = {o.dest: getattr(args, o.dest) for o in reg.predict_options} | {"force": False}
    repeated = [o.dest for o in reg.predict_options if o.repeat and options[o.dest]]
    blank = ([" "], {}) if args.inputs else ([], {repeated[0]: [" "]}) if repeated else None
    return args.inputs, options, blank


def cmd_check_task(args: argparse.Namespace) -> int:
    from .config import load_job
    from .tasks import registration
    from .testing import Case, ContractError, check_task

    overrides, words = split_rest(args.rest)
    with tempfile.TemporaryDirectory(prefix="lstm-train-check-") as scratch:
        work = Path(scratch)
        job = load_job(args.job, [*overrides, f"train.output_dir={work / 'run'}", f"data.cache_dir={work / 'cache'}"])
        reg = registration(job.task)
        inputs, options, blank = predict_case(reg, words)
        try:
            lines = check_task(Case(job, inputs, options, blank=blank), work / "check")
        except ContractError as e:
            print(f"check-task: {args.job}: the task breaks the contract: {e}", file=sys.stderr)
            return 1
    print("\n".join(lines))
    print(f"{reg.name}: keeps the task contract")
    return 0
