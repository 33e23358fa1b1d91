"""The arguments of `lstm-train`'s sub-commands, one function per family, in the order
`lstm-train --help` lists them.

Apart from `cli` (which holds what each command does, and sets it as the parser's `func`) so
that each reads on its own: here what a user may type, there what happens then.  Importing this
costs nothing: no task, torch or SLURM code.
"""

from __future__ import annotations

import argparse

from .taskcommands import add_predict_arguments
from .tasks.registry import Registration


class VersionAction(argparse.Action):
    """`--version`, worked out only when asked (it runs git)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version (and git commit, library versions)")

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        from .about import version_line

        print(version_line())
        parser.exit()


def add_commands(sub: argparse._SubParsersAction, run_task: Registration | None) -> dict[str, argparse.ArgumentParser]:
    """Every sub-command's parser by name, in the order of `--help` (`run_task`: the task of the
    run that `predict` names, whose inputs and options its help shows)."""
    return {**add_training_commands(sub), **add_model_commands(sub, run_task), **add_bench_command(sub),
            **add_cluster_commands(sub), **add_inspection_commands(sub), **add_run_listing_commands(sub)}


def add_training_commands(sub: argparse._SubParsersAction) -> dict[str, argparse.ArgumentParser]:
    """`run` and `prepare`: training here, and its data made ready once."""
    run = sub.add_parser("run", help="train a job here (also under accelerate launch / torchrun)")
    run.add_argument("job", help="job spec, e.g. jobs/mnist_lstm.yaml")
    run.add_argument("overrides", nargs="*", help="dotted.key=value, e.g. train.epochs=3")
    run.add_argument("--print-config", action="store_true", help="print the resolved job and stop (= `config`)")
    run.add_argument("--point", type=int, help="a job with a sweep: which point to train (default 0)")

    prep = sub.add_parser("prepare", help="tokenize a job's data once into the prepared-data store (data.cache_dir)")
    prep.add_argument("job")
    prep.add_argument("overrides", nargs="*")
    prep.add_argument("--workers", type=int, default=None, help="worker processes here, 1 or more (default: every core)")
    prep.add_argument("--shards", type=int, help="with --executor slurm: array tasks (shards of the corpus)")
    prep.add_argument("--executor", choices=("local", "slurm"), default="local",
                      help="slurm: prepare as one SLURM job array through submitit (the job's slurm: section)")
    return {"run": run, "prepare": prep}


def add_model_commands(sub: argparse._SubParsersAction, run_task: Registration | None,
                       ) -> dict[str, argparse.ArgumentParser]:
    """What a trained run is used for: predict, evaluate, generate, convert, export, report."""
    predict = sub.add_parser("predict", help="use a trained run on new inputs")
    predict.add_argument("run_dir")
    add_predict_arguments(predict, run_task)  # the run's task's inputs and options (taskcommands.py)
    predict.add_argument("--force", action="store_true", help="replace an existing --output file")
    add_task_option(predict)

    evaluate = sub.add_parser("evaluate", help="score a trained run on new labelled files (the test split's metrics)")
    evaluate.add_argument("run_dir")
    evaluate.add_argument("files", nargs="+", help="labelled data in the task's formats (e.g. CSV text,label)")
    evaluate.add_argument("--json", action="store_true", help="one JSON object: the metrics, the files, the run")
    add_task_option(evaluate)

    generate = sub.add_parser("generate", help="sample text from a language model run, streamed to stdout")
    generate.add_argument("run_dir")
    generate.add_argument("--prompt", default="\n", help="text to start from (default: a new line)")
    generate.add_argument("--tokens", type=int, default=500, help="tokens to sample (1 to 100000)")
    generate.add_argument("--temperature", type=float, default=0.8, help="> 0; lower is greedier")
    generate.add_argument("--top-k", type=int, default=None, help="sample from the k likeliest tokens only")
    generate.add_argument("--top-p", type=float, default=None,
                          help="nucleus sampling: from the likeliest tokens that hold this much probability (0-1]")
    generate.add_argument("--seed", type=int, default=1)
    generate.add_argument("--samples", type=int, default=1, help="samples, with seeds seed, seed+1, ...")
    add_task_option(generate)

    convert = sub.add_parser("convert", help="rewrite a run's checkpoints of an older lstm_train in today's safe format")
    convert.add_argument("run_dir")

    export = sub.add_parser("export", help="a trained run's model as ONNX or TorchScript, checked against PyTorch")
    export.add_argument("run_dir")
    export.add_argument("--format", choices=["onnx", "torchscript"], required=True)
    export.add_argument("--out", help="file to write (default: RUN_DIR/model.onnx or RUN_DIR/model.pt)")
    export.add_argument("--tolerance", type=float, default=1e-4, help="largest accepted output difference")
    export.add_argument("--force", action="store_true", help="replace an existing --out file (never a checkpoint)")
    add_task_option(export)

    report = sub.add_parser("report", help="summary table and PNG plots of a run's metrics")
    report.add_argument("run_dir")
    report.add_argument("--force", action="store_true", help="replace report-*.png files report did not write")
    return {"predict": predict, "evaluate": evaluate, "generate": generate, "convert": convert, "export": export, "report": report}


def add_bench_command(sub: argparse._SubParsersAction) -> dict[str, argparse.ArgumentParser]:
    """`bench`: lstm_train's loop raced against the floor, the tutorial and Lightning."""
    bench = sub.add_parser("bench", help="lstm_train's loop vs the floor, the tutorial and Lightning; --scaling")
    bench.add_argument("job", nargs="?", default=None, help="job spec, any task (default: jobs/mnist_lstm.yaml)")
    bench.add_argument("overrides", nargs="*")
    bench.add_argument("--device", choices=["cpu", "cuda"], default=None)
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument("--processes", action="store_true", help="also measure 1 vs 2 processes (DDP scaling)")
    bench.add_argument("--skip-tutorial", action="store_true", help="leave out the tutorial's loop")
    bench.add_argument("--skip-lightning", action="store_true", help="leave out PyTorch Lightning")
    bench.add_argument("--lightning-optimizer", choices=["plain", "fused"], default="plain",
                       help="Lightning's optimizer: torch's default implementation as users write it, or lstm_train's fused one")
    bench.add_argument("--max-steps", type=int, default=None,
                       help="stop each training loop after N steps (quick checks; --scaling: steps per point, 300)")
    bench.add_argument("--repeats", type=int, default=1, help="alternate the loops N times; medians reported")
    bench.add_argument("--scaling", action="store_true",
                       help="throughput vs sequence length, hidden size, batch size, processes: table + PNG")
    bench.add_argument("--seconds", type=float, default=2.0, help="--scaling: floor window per point (wall s)")
    bench.add_argument("--hidden-sizes", default=None, help="--scaling: e.g. 64,128,256,512,1024 (the default)")
    bench.add_argument("--batch-sizes", default=None, help="--scaling: e.g. 16,32,64,128,256,512 (the default)")
    bench.add_argument("--out", default=None, help="--scaling: folder for scaling.png/.md/.json (bench-scaling)")
    bench.add_argument("--force", action="store_true", help="--scaling: replace existing scaling.json/.md/.png "
                       "files in --out (never a run's own file)")
    bench.add_argument("--book", nargs=argparse.REMAINDER, default=None, metavar="NAME",
                       help="run the benchmark book of this checkout (scripts/book.py) with these entry names and "
                       "options (--list, --quick, ...); it records into benchmarks/")
    return {"bench": bench}


def add_cluster_commands(sub: argparse._SubParsersAction) -> dict[str, argparse.ArgumentParser]:
    """`submit`, `status` and `cancel`: a job on SLURM."""
    submit = sub.add_parser("submit", help="send a job (or a sweep) to SLURM through submitit")
    submit.add_argument("job")
    submit.add_argument("overrides", nargs="*")
    submit.add_argument("--executor", choices=["slurm", "local", "debug"], default="slurm")
    submit.add_argument("--wait", action="store_true", help="wait for the job(s) and print the result")
    submit.add_argument("--prepare", action="store_true",
                        help="prepare the data here before queuing, so no allocation waits on tokenization")
    submit.add_argument("--new-run", action="store_true",
                        help="a fresh run (new run id and directory) even if this job was submitted before")
    submit.add_argument("--dry-run", action="store_true",
                        help="check the job and sbatch's --test-only answer, print the batch script; queue nothing")

    status = sub.add_parser("status", help="state of a run or sweep: jobs, step, loss, speed, time left")
    status.add_argument("run_dir")
    status.add_argument("--json", action="store_true", help="one JSON object (exit 1 still means a job failed)")

    cancel = sub.add_parser("cancel", help="cancel a submitted run or sweep")
    cancel.add_argument("run_dir")
    return {"submit": submit, "status": status, "cancel": cancel}


def add_inspection_commands(sub: argparse._SubParsersAction) -> dict[str, argparse.ArgumentParser]:
    """`config` and `jobs`: what a job is, before anything runs."""
    config = sub.add_parser("config", help="validate a job and print it resolved (defaults, overrides) as YAML")
    config.add_argument("job", help="job spec (a path, or a shipped job's name: see `lstm-train jobs`)")
    config.add_argument("overrides", nargs="*", help="dotted.key=value")
    config.add_argument("--explain", nargs="?", const="", metavar="KEY",
                        help="a key's description, type, default and this job's value (a section: its keys; "
                        "no KEY: every key of the job)")
    config.add_argument("--keys", action="store_true", help="every key of the job: type, default, description "
                        "(= --explain with no KEY)")

    jobs = sub.add_parser("jobs", help="list the shipped job specs; `jobs copy NAME [DEST]` writes one to edit")
    jobs.set_defaults(jobs_command=None)
    copy = jobs.add_subparsers(dest="jobs_command").add_parser("copy", help="write a shipped job to DEST")
    copy.add_argument("name")
    copy.add_argument("dest", nargs="?", default=None, help="a file or folder (default: ./NAME.yaml)")
    copy.add_argument("--force", action="store_true", help="replace an existing file DEST")
    return {"config": config, "jobs": jobs}


def add_run_listing_commands(sub: argparse._SubParsersAction) -> dict[str, argparse.ArgumentParser]:
    """`runs` and `compare`: the runs a job has had, side by side."""
    runs = sub.add_parser("runs", help="a table of a job's runs: state, step, metric, time, what differs")
    runs.add_argument("target", nargs="?", default=None, help="a job (name or file: its runs/<name>/), or a folder "
                      "of runs (default: runs/)")
    runs.add_argument("--sort", default="started", help="started (default), state, step, time, run, metric (best "
                      "first), or a number of result.json such as val_loss")
    runs.add_argument("--json", action="store_true", help="one JSON list, a row per run")

    compare = sub.add_parser("compare", help="runs side by side: what differs, their metrics, one PNG of their curves")
    compare.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    compare.add_argument("--out", default="compare.png", help="the PNG to write (default: compare.png; an existing "
                         "file only if compare wrote it, or with --force; never a run's own file)")
    compare.add_argument("--force", action="store_true", help="replace an existing --out file")
    compare.add_argument("--x", choices=("step", "samples", "time"), default="step",
                         help="the curves' x axis: step (default), samples seen (every rank's) or wall time (s)")
    return {"runs": runs, "compare": compare}


def add_task_option(command: argparse.ArgumentParser) -> None:
    command.add_argument("--task", metavar="MODULE:OBJECT", help="the run's task, imported from your sys.path as "
                         "you name it (a task that the run's config.yaml names is imported only when installed; "
                         "or list references in LSTM_TRAIN_TASKS)")
