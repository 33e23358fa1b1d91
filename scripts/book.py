"""The benchmark book (issue 33): every timed or sized claim of the project, measured one entry
after another, each alone on the machine, into one dated record.

    python scripts/book.py --list                   # the entries: what each measures, how long it takes
    python scripts/book.py                          # every default entry (hours: see --list), then BENCHMARKS.md
    python scripts/book.py bench_mnist generate     # some entries (any entry, default or not, by name)
    python scripts/book.py --quick                  # every default entry in a smoke size (~12 minutes)
    python scripts/book.py --render                 # BENCHMARKS.md again from benchmarks/*.json
    python scripts/book.py --missing                # the default entries with no record of this code here yet
    lstm-train bench --book [NAMES...] [--quick]    # the same, from a checkout

Run it from a checkout, alone on the machine (nothing else running: the point is numbers of a
quiet machine), with LSTM_TRAIN_DATA pointing at the data root.  Each entry runs its commands as
fresh subprocesses, strictly one after another, reads their JSON output and keeps each number
with the exact command that produced it (run from the repository root, with the record's `env`).

The record is one JSON file, `benchmarks/<UTC date-time>-<machine>-<commit>[-quick].json`: the
date, the commit (and whether the tree had uncommitted changes), the machine (CPU model and the
flags that decide precision, cores, memory, torch, GPU, what `train.mixed_precision: auto` picks
here), the load before each entry and every entry's numbers.  It is written once every entry has
run (a temporary file outside the records folder, fsynced, renamed into place): a book
interrupted by Ctrl-C or SIGTERM ends its running command (the command's whole process group)
and leaves no record; a SIGKILL leaves no record either, though the command it was running
goes on until it ends (its logs are in the work folder).  A failed entry is recorded as failed
(`ok: false`, its error) while the others go on; an entry that cannot run here (`shards` without
a SLURM cluster) is recorded as skipped with the reason.  `BENCHMARKS.md` (beside the records folder) shows, for each machine, each
entry's latest full-size record as a table; `--quick` records (smoke sizes) are never shown.

The code measured is named by `code_tree`, a digest of the commit's tree without what no entry reads
as code (the records, tests, CI, prose and job specs; `code_commit`, the newest commit that changed
it), and each entry's `inputs`: the job specs it runs (digests of their parsed content, so a comment
quoting a number changes nothing) and any other file it reads.  A commit that only adds records,
changes a test or tunes one job leaves every other entry's record standing.  The whole default set takes hours on a 2-core machine, more than one quiet window may hold, so
BENCHMARKS.md says per machine whether every default entry's latest record measured the checkout's
code, or which did not, and `--missing` runs just those: several runs, each alone, finish one book.

A busy machine is said, not hidden: before each entry the book waits (up to --settle seconds)
for the 1-minute load average to fall to --max-load; an entry started above it, or during which
other processes used more than --max-load cores on average (the CPU time of the whole machine in
/proc/stat less the book's own and its children's), is marked `busy` with the reason, and so is
the record.  Its numbers are still recorded, and BENCHMARKS.md marks them busy.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import math
import os
import re
import resource
import shlex
import shutil
import socket
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's lstm_train (machine(), the language-model entries' job configs)
RECORDS = ROOT / "benchmarks"
FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2")  # what decides precision and speed here
TEST_ENV = "LSTM_TRAIN_BOOK_TEST"  # set to 1: the test entry `test_sleep` exists (tests/test_book.py)


# ---------------------------------------------------------------------------
# Entries


@dataclass
class Ctx:
    """What an entry's commands are built from."""

    work: Path  # corpora, prepared-data caches, run directories, JSON outputs (kept between books)
    quick: bool
    python: str = sys.executable

    def lstm_train(self, *args: str) -> list[str]:
        return [self.python, "-m", "lstm_train", *args]

    def script(self, name: str, *args: str) -> list[str]:
        return [self.python, f"scripts/{name}", *args]

    def fresh(self, name: str) -> Path:
        """An empty directory for one entry's runs (an existing run directory would be resumed)."""
        path = self.work / "runs" / name
        shutil.rmtree(path, ignore_errors=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path


@dataclass
class Command:
    argv: list[str]
    parse: Callable[[Any], dict[str, Any]] | None = None  # its JSON output -> numbers; None: a set-up step
    out: Path | None = None  # where its JSON lands (None: its stdout is one JSON object)


@dataclass
class Entry:
    name: str
    what: str
    minutes: float  # expected, full size, on the 2-core development machine (an estimate)
    commands: Callable[[Ctx], list[Command]]
    default: bool = True  # run when no names are given
    needs: Callable[[], str | None] = lambda: None  # why it cannot run here, or None
    outside_cpu: bool = False  # its work runs outside the book's process tree (SLURM jobs): no others-CPU check
    quick_minutes: float = 1.0
    inputs: tuple[str, ...] = ()  # files outside the code it reads (job specs, a corpus made of this checkout's text)


def bench_numbers(report: dict[str, Any]) -> dict[str, Any]:
    """`lstm-train bench --json`: each loop's throughput, epoch time and metric; the ratios."""
    unit, metric = report["unit"], report["metric"]
    peer = "word_language_model loop" if report["task"] == "language_model" else "tutorial"  # bench's PEERS
    loops = {peer: report.get("tutorial"), "lstm_train": report["lstm_train"], "floor": report["floor"]}
    for name, loop in (report.get("lightning") or {}).items():
        loops[f"Lightning {name}"] = loop
    out: dict[str, Any] = {"precision": report["precision"], "threads": report["threads"], "repeats": report["repeats"],
                           "steps": report["lstm_train"]["steps"]}
    if report["task"] == "language_model":  # what the softmax and the two models weigh
        out["vocabulary"] = report.get("vocab_size")
        out["lstm_train model parameters"] = report["floor"].get("parameters")
        if report.get("tutorial"):
            out[f"{peer} parameters"] = report["tutorial"].get("parameters")
            out[f"{peer} precision"] = "fp32 (as published)"
    for name, loop in loops.items():
        if loop:
            out[f"{name} {unit}/s"] = round(loop["per_s"], 1)
            out[f"{name} epoch s"] = round(loop["epoch_s"], 3)
            out[f"{name} {metric}"] = None if loop["metric"] is None else round(loop["metric"], 4)
    out["lstm_train / floor epoch time"] = report["floor_ratio"]
    out[f"lstm_train vs {peer} (x throughput)"] = report["speedup"]
    out["lstm_train vs fastest Lightning (x throughput)"] = report["vs_lightning"]
    out[peer] = report["tutorial_status"]
    out["Lightning"] = report["lightning_status"]
    return out


def bench(name: str, what: str, minutes: float, job: list[str], full: list[str], quick: list[str],
          quick_minutes: float, inputs: tuple[str, ...] = ()) -> Entry:
    """`lstm-train bench` on a job (none: the tutorial's, jobs/mnist_lstm.yaml) in one entry."""
    jobs = tuple(j for j in job if j.startswith("jobs/")) or (MNIST,)
    return Entry(name, what, minutes, lambda c: [Command(c.lstm_train("bench", *job, *(quick if c.quick else full),
                                                                      "--json"), bench_numbers)],
                 quick_minutes=quick_minutes, inputs=(*jobs, *inputs))


def scaling_numbers(report: dict[str, Any]) -> dict[str, Any]:
    """`lstm-train bench --scaling --json`: each point's floor and lstm_train throughput, their ratio."""
    unit = report["unit"]
    out: dict[str, Any] = {"precision": report["precision"], "threads": report["threads"]}
    for p in report["points"]:
        key = f"{p['axis']} {p['value']}"
        out[f"{key}: steps"] = p["steps"]
        if p["floor"]:
            out[f"{key}: floor {unit}/s"] = round(p["floor"]["per_s"], 1)
        out[f"{key}: lstm_train {unit}/s"] = round(p["lstm_train"]["per_s"], 1)
        if p.get("floor_ratio"):
            out[f"{key}: lstm_train / floor time"] = p["floor_ratio"]
        if "gflops" in p["lstm_train"]:
            out[f"{key}: lstm_train GFLOP/s"] = round(p["lstm_train"]["gflops"], 1)
    return out


def scaling(ctx: Ctx) -> list[Command]:
    quick = ["--max-steps", "2", "--seconds", "0.05", "--hidden-sizes", "8,16", "--batch-sizes", "16,32"]
    return [Command(ctx.lstm_train("bench", "--scaling", "--out", str(ctx.work / "scaling"), "--force",
                                   *(quick if ctx.quick else []), "--json"), scaling_numbers)]


QUICK_TOKENS = 0.02e6  # --quick: 5 steps of 32 x 128
QUICK_LM = ["data.val_fraction=0.01"]  # --quick: a validation split scored in seconds, not half a minute


def lm_run(ctx: Ctx, name: str, job: str, tokens: float | None, quick_seconds: float | None = None) -> list[Command]:
    """`lstm-train run JOB` trained for `tokens` tokens (steps = tokens / (global streams x bptt), from
    the job) without its time budget, or as shipped (tokens None: its budget ends it)."""
    from lstm_train.config import load_job

    spec = load_job(ROOT / job, [])
    per_step = (spec.data.global_batch_size or spec.data.batch_size) * spec.data.bptt
    out = ctx.fresh(name)
    if tokens is not None:
        steps = math.ceil((QUICK_TOKENS if ctx.quick else tokens) / per_step)
        limits = [f"train.max_steps={steps}", "train.max_seconds=null"]
    else:
        limits = [f"train.max_seconds={quick_seconds}"] if ctx.quick else []
    argv = ctx.lstm_train("run", job, *limits, *(QUICK_LM if ctx.quick else []), "tracking.wandb.mode=disabled",
                          f"train.output_dir={out}")

    def numbers(result: dict[str, Any]) -> dict[str, Any]:
        unit = "char" if spec.data.tokenizer == "chars" else "token"
        return {f"val loss (nats/{unit})": round(result["val_loss"], 4),
                f"val bits/{unit}": round(result["val_bits_per_token"], 4),
                "tokens trained": result["steps"] * per_step, "steps": result["steps"],
                "train seconds": round(result["train_seconds"], 1),
                "tokens/s": result.get("tokens_per_second"), "precision": result["mixed_precision"],
                "stopped at the time limit": result["stopped_at_time_limit"]}

    return [Command(argv, numbers, out / "result.json")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PROCS_STEPS = 600  # 2.5M characters: long enough that the loss is past its fast early fall


def lm_procs(ctx: Ctx) -> list[Command]:
    """shakespeare_char to the same step at 1 process and at 2 (`accelerate launch --multi_gpu
    --num_processes 2`, CPU): the job's data.global_batch_size keeps 32 streams in all, so the
    two runs train on the same streams; their validation losses should agree within 0.02 nats."""
    from lstm_train.distributed import resolve_precision

    steps = 5 if ctx.quick else PROCS_STEPS
    precision = resolve_precision("auto")  # both runs alike (under accelerate launch, `auto` takes the launcher's)
    seen: dict[int, float] = {}
    commands = []
    for procs in (1, 2):
        out = ctx.fresh(f"lm_char_procs_{procs}")
        overrides = [f"train.max_steps={steps}", "train.max_seconds=null", f"train.eval_every_steps={steps}",
                     f"train.threads={max(1, (os.cpu_count() or 2) // procs)}", f"train.mixed_precision={precision}", "tracking.wandb.mode=disabled",
                     f"train.output_dir={out}",
                     *(QUICK_LM if ctx.quick else [])]
        if procs == 1:
            argv = ctx.lstm_train("run", LM, *overrides)
        else:
            argv = [ctx.python, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                    "--num_machines", "1", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
                    "-m", "lstm_train", "run", LM, *overrides]

        def numbers(result: dict[str, Any], procs: int = procs) -> dict[str, Any]:
            seen[procs] = result["val_loss"]
            word = "process" if procs == 1 else "processes"
            got = {f"{procs} {word}: val loss at step {result['steps']} (nats/char)": round(result["val_loss"], 4),
                   f"{procs} {word}: world size": result.get("world_size"),
                   f"{procs} {word}: train seconds": round(result["train_seconds"], 1),
                   f"{procs} {word}: tokens/s": result.get("tokens_per_second"),
                   f"{procs} {word}: precision": result["mixed_precision"]}
            if len(seen) == 2:
                got["|val loss 2 processes - 1 process| (nats/char)"] = round(abs(seen[2] - seen[1]), 4)
            return got

        commands.append(Command(argv, numbers, out / "result.json"))
    return commands


PRECISION_STEPS = 150


def lm_precision(ctx: Ctx) -> list[Command]:
    """shakespeare_char for the same steps in `auto` (what it picks on this CPU) and in exact fp32."""
    steps = 5 if ctx.quick else PRECISION_STEPS
    commands = []
    for mp in ("auto", "no"):
        out = ctx.fresh(f"lm_precision_{mp}")
        argv = ctx.lstm_train("run", LM, f"train.max_steps={steps}", "train.max_seconds=null",
                              f"train.eval_every_steps={steps}", f"train.mixed_precision={mp}", "data.val_fraction=0.01",
                              "tracking.wandb.mode=disabled", f"train.output_dir={out}")

        def numbers(result: dict[str, Any], mp: str = mp) -> dict[str, Any]:
            label = "auto" if mp == "auto" else "fp32 (mixed_precision=no)"
            return {f"{label}: precision used": result["mixed_precision"],
                    f"{label}: tokens/s": result.get("tokens_per_second"),
                    f"{label}: train seconds": round(result["train_seconds"], 1)}

        commands.append(Command(argv, numbers, out / "result.json"))
    return commands


WORDS_STEPS, WORDS_MB = 100, 4  # a user's own 4 MB corpus (issue 38): 100 steps of 32 x 128 tokens each


def lm_words_softmax(ctx: Ctx) -> list[Command]:
    """shakespeare_char's model and loop on a generated ~4 MB English-like corpus, `WORDS_STEPS`
    steps each: words with a full softmax, words with the adaptive softmax, and BPE (4,000
    pieces, full softmax), in one book entry so the three share the machine's state.  Tokens/s
    as the loop reports it, without the one evaluation (at the last step: validation loss at
    equal steps for the two words models, the same vocabulary and text) and per CPU second (a
    busy machine's neighbours slow the wall clock more than this process's CPU time)."""
    from lstm_train.config import load_job

    mb, steps = (1, 5) if ctx.quick else (WORDS_MB, WORDS_STEPS)
    corpus = ctx.work / "corpora" / f"text-{mb}MB.txt"
    spec = load_job(ROOT / LM, [])
    per_step = (spec.data.global_batch_size or spec.data.batch_size) * spec.data.bptt
    commands = [corpora(ctx, mb)]
    for slug, label, overrides in (
            ("words_full", "words, full softmax", ["data.tokenizer=words", "model.output=full"]),
            ("words_adaptive", "words, adaptive softmax", ["data.tokenizer=words", "model.output=adaptive"]),
            ("bpe", "bpe 4000, full softmax", ["data.tokenizer=bpe", "data.vocab_size=4000"])):
        out = ctx.fresh(f"lm_words_softmax_{slug}")
        argv = ctx.lstm_train("run", LM, f"data.root={corpus.parent}", f"data.files={corpus.name}", *overrides,
                              f"train.max_steps={steps}", "train.max_seconds=null", f"train.eval_every_steps={steps}",
                              *(QUICK_LM if ctx.quick else []), "tracking.wandb.mode=disabled",
                              f"train.output_dir={out}")

        def numbers(result: dict[str, Any], label: str = label) -> dict[str, Any]:
            unit = "word" if label.startswith("words") else "BPE token"
            tokens = result["steps"] * per_step
            training = result["train_seconds"] - result.get("eval_seconds", 0.0)
            return {f"{label}: tokens/s": result.get("tokens_per_second"),
                    f"{label}: tokens/s without the evaluation": round(tokens / max(training, 1e-9), 1),
                    f"{label}: tokens per CPU second (evaluation included)":
                        round(tokens / max(result["train_cpu_seconds"], 1e-9), 1),
                    f"{label}: val loss at step {result['steps']} (nats/{unit})": round(result["val_loss"], 4),
                    f"{label}: val tokens": result["val_tokens"],
                    f"{label}: train seconds": round(result["train_seconds"], 1),
                    f"{label}: precision": result["mixed_precision"]}

        commands.append(Command(argv, numbers, out / "result.json"))
    return commands


def reach(job: str, minutes: float, default: bool) -> Entry:
    """A shipped job as shipped: its primary metric and seconds."""

    def commands(ctx: Ctx) -> list[Command]:
        out = ctx.fresh(f"reach_{job}")
        quick = ["train.max_steps=20"] if ctx.quick else []
        argv = ctx.lstm_train("run", f"jobs/{job}.yaml", *quick, "tracking.wandb.mode=disabled",
                              f"train.output_dir={out}")

        def numbers(result: dict[str, Any]) -> dict[str, Any]:
            metric = result["primary_metric"]
            return {metric: round(result[metric], 4), "train seconds": round(result["train_seconds"], 1),
                    "test seconds": round(result.get("test_seconds", 0.0), 1), "steps": result["steps"],
                    "precision": result["mixed_precision"]}

        return [Command(argv, numbers, out / "result.json")]

    return Entry(f"reach_{job}", f"jobs/{job}.yaml as shipped: its primary metric and train seconds", minutes,
                 commands, default, quick_minutes=0.5, inputs=(f"jobs/{job}.yaml",))


def corpora(ctx: Ctx, *sizes: int, kinds: tuple[str, ...] = ("text", "csv")) -> Command:
    """Generated corpora (text, CSV, with "pair" a parallel pair, of each size in MB), made once and kept
    in the work folder."""
    return Command(ctx.script("bench_corpora.py", "generate", "--out", str(ctx.work / "corpora"),
                              "--sizes", *map(str, sizes), "--kinds-generated", *kinds))


def sizes(ctx: Ctx, full: tuple[int, ...], quick: tuple[int, ...] = (1, 2)) -> tuple[int, ...]:
    return quick if ctx.quick else full


def prepare_numbers(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for r in rows:
        key = f"{r['tokenizer']} {r['corpus']} ({r['mb']} MB)"
        out[f"{key} prepare s"] = r["prepare_s"]
        out[f"{key} MB/s"] = r["mb_per_s"]
        out[f"{key} peak RSS MiB"] = r["peak_rss_mib"]
    return out


def prepare(ctx: Ctx) -> list[Command]:
    mb = sizes(ctx, (10, 40, 400))
    out = ctx.work / "prepare.json"
    return [corpora(ctx, *mb, kinds=("text", "csv", "pair")), Command(ctx.script("bench_corpora.py", "prepare", "--corpora", str(ctx.work / "corpora"),
                                                  "--sizes", *map(str, mb), "--json", str(out)), prepare_numbers, out)]


def bpe_numbers(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for r in rows:
        out[f"{r['corpus']} tokenizers reference s"] = r["seconds"]
        out[f"{r['corpus']} lstm_train bpe prepare s"] = r["ours_prepare_s"]
        out[f"{r['corpus']} lstm_train / reference time"] = r["ours_over_reference"]
    return out


def bpe_reference(ctx: Ctx) -> list[Command]:
    mb = sizes(ctx, (10, 40, 400))
    out = ctx.work / "bpe-reference.json"
    return [corpora(ctx, *mb), Command(ctx.script("bench_corpora.py", "bpe-reference", "--with-ours", "--corpora",
                                                  str(ctx.work / "corpora"), "--sizes", *map(str, mb), "--json",
                                                  str(out)), bpe_numbers, out)]


def memory_numbers(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    peak: dict[str, dict[int, float]] = {}
    for r in rows:
        name = "text (chars)" if r["task"] == "lm" else "CSV"
        ranks = {int(k): v for k, v in r["rss_anon_mib"].items()}
        for rank, mib in sorted(ranks.items()):
            out[f"{name} {r['corpus_mb']} MB, {r['processes']} processes: rank {rank} peak RssAnon MiB"] = mib
        peak.setdefault(name, {})[r["corpus_mb"]] = max(ranks.values(), default=0.0)
    for name, by_size in peak.items():
        if len(by_size) >= 2:
            small, large = min(by_size), max(by_size)
            out[f"{name} peak RssAnon {large} MB / {small} MB"] = round(by_size[large] / max(by_size[small], 1e-9), 3)
    return out


def rank_memory(ctx: Ctx) -> list[Command]:
    mb = sizes(ctx, (40, 400))
    out = ctx.work / "rank-memory.json"
    steps = "10" if ctx.quick else "150"
    return [corpora(ctx, *mb), Command(ctx.script("bench_corpora.py", "train", "--corpora", str(ctx.work / "corpora"),
                                                  "--sizes", *map(str, mb), "--procs", "2", "--steps", steps,
                                                  "--kinds", "lm", "csv", "--cache", str(ctx.work / "corpora-cache"),
                                                  "--json", str(out)), memory_numbers, out)]


def big_numbers(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """`bench_corpora.py train` at 1 and 2 processes: each rank's peak RssAnon, and whether all are under 1 GiB."""
    out = memory_numbers(rows)
    out["every rank's peak RssAnon under 1 GiB"] = all(v < 1024 for r in rows for v in r["rss_anon_mib"].values())
    return out


def corpus_4gb(ctx: Ctx) -> list[Command]:
    """Issue 34's must-show: a 4 GB chars corpus and a 4 GB CSV prepared (time, peak RSS), then 300 steps
    at 1 and 2 processes on 40 MB and on 4 GB: each rank's RssAnon.  The corpora stay in the work
    folder (as every corpus entry's); the entry's prepared-data cache (~10 GB at 4 GB) is removed."""
    small, big = sizes(ctx, (40, 4000), (1, 4))
    corpora_dir, cache = str(ctx.work / "corpora"), str(ctx.work / "corpus-4gb-cache")
    prepared, trained = ctx.work / "corpus-4gb-prepare.json", ctx.work / "corpus-4gb-train.json"
    return [corpora(ctx, small, big),
            Command(ctx.script("bench_corpora.py", "prepare", "--corpora", corpora_dir, "--sizes", str(big),
                               "--tokenizers", "chars", "csv", "--json", str(prepared)), prepare_numbers, prepared),
            Command(ctx.script("bench_corpora.py", "train", "--corpora", corpora_dir, "--sizes", str(small), str(big),
                               "--procs", "1", "2", "--steps", "10" if ctx.quick else "300", "--kinds", "lm", "csv",
                               "--cache", cache, "--drop-cache", "--json", str(trained)), big_numbers, trained)]


def slurm_missing() -> str | None:
    if shutil.which("sinfo") is None:
        return "SLURM is not installed here (no sinfo): run slurm/local-cluster.sh up"
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%a %D"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"sinfo failed: {e}"
    if proc.returncode != 0 or not proc.stdout.strip():
        return f"no SLURM cluster answers here (sinfo: {(proc.stderr or proc.stdout).strip()[:200] or 'no partitions'})"
    return None


def shard_numbers(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    by_corpus: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_corpus.setdefault(r["corpus"], []).append(r)
    for corpus, found in by_corpus.items():
        for r in found:
            out[f"{corpus} {r['how']}: wall s"] = r["wall_s"]
            out[f"{corpus} {r['how']}: columns sha256"] = r["columns_sha256"]
        out[f"{corpus} digests equal"] = len({r["columns_sha256"] for r in found}) == 1
    return out


def shards(ctx: Ctx) -> list[Command]:
    mb = sizes(ctx, (400,), (2,))
    out = ctx.work / "shards.json"
    return [corpora(ctx, *mb), Command(ctx.script("bench_corpora.py", "shards", "--corpora", str(ctx.work / "corpora"),
                                                  "--sizes", *map(str, mb), "--json", str(out)), shard_numbers, out)]


def generate(ctx: Ctx) -> list[Command]:
    small, large = ("100", "1000") if ctx.quick else ("1000", "10000")

    def numbers(r: dict[str, Any]) -> dict[str, Any]:
        return {f"{r['kind']} {r['small_tokens']} tokens s": r["small_s"], f"{r['kind']} {r['large_tokens']} tokens s":
                r["large_s"], f"{r['kind']} time ratio (linear: {r['linear']:g})": r["ratio"],
                f"{r['kind']} within target (< 1.5x linear)": r["within_target"]}

    return [Command(ctx.script("bench_generate.py", "--kind", kind, "--small", small, "--large", large, "--json"),
                    numbers) for kind in ("bpe", "chars", "bytes", "words")]


def hostile_numbers(report: dict[str, Any]) -> dict[str, Any]:
    """`scripts/bench_hostile.py --json`: each hostile input's time to refuse (or finish), peak RSS,
    and the time budget's train_seconds against train.max_seconds."""
    out: dict[str, Any] = {}
    for part in ("evaluate_one_line", "words_one_line", "time_budget"):
        for key, value in (report.get(part) or {}).items():
            if isinstance(value, (int, float, str, bool)) and key != "said":
                out[f"{part}: {key}"] = value
    return out


def hostile(ctx: Ctx) -> list[Command]:
    return [Command(ctx.script("bench_hostile.py", "--json", *(["--quick"] if ctx.quick else [])), hostile_numbers)]


def budget_hog(ctx: Ctx) -> list[Command]:
    """The time budget with a competitor: one busy-looping process per core beside the run."""
    cores = str(os.cpu_count() or 1)
    return [Command(ctx.script("bench_hostile.py", "--json", "--only-budget", "--hog", cores,
                               *(["--quick"] if ctx.quick else [])), hostile_numbers)]


def self_check(ctx: Ctx) -> list[Command]:
    code = ("import json, time; t = time.perf_counter(); import torch, lstm_train; "
            "print(json.dumps({'import torch + lstm_train s': round(time.perf_counter() - t, 3), "
            "'torch threads': torch.get_num_threads()}))")
    return [Command([ctx.python, "-c", code], lambda r: r)]


def test_sleep(ctx: Ctx) -> list[Command]:
    """Writes its pid to <work>/test_sleep.pid, then sleeps (the tests interrupt the book meanwhile)."""
    code = (f"import os, time; open({str(ctx.work / 'test_sleep.pid')!r}, 'w').write(str(os.getpid())); "
            "time.sleep(120); print('{}')")
    return [Command([ctx.python, "-c", code], lambda r: r)]


LM, BEST, MNIST = "jobs/shakespeare_char.yaml", "jobs/shakespeare_char_best.yaml", "jobs/mnist_lstm.yaml"
LM_FILES, WIKITEXT = "jobs/lm_files_example.yaml", "jobs/wikitext2_awd_lstm.yaml"
LM_BENCH_STEPS = 200  # issue 38: 200 steps x 3 repeats, start-up excluded
WIKITEXT_MB, WIKITEXT_STEPS = 2, 30  # AWD-LSTM's 3 x 1150 model on 80 x 70 tokens a step, fp32: seconds a step on 2 cores;
# 2 MB trains ~70 steps an epoch and keeps the held-out scoring (0.2 MB each, forward only) to minutes


def bench_wikitext(ctx: Ctx) -> list[Command]:
    """jobs/wikitext2_awd_lstm.yaml benched on a generated corpus in WikiText-2's layout (made once in the
    work folder: no network, no real WikiText-2 here); --quick: a 0.2 MB one (20 KB to score) and 2 steps."""
    mb, steps = (0.2, 2) if ctx.quick else (WIKITEXT_MB, WIKITEXT_STEPS)
    root = ctx.work / "corpora" / f"wikitext-2-layout-{mb:g}MB"
    layout = Command(ctx.script("wikitext_layout.py", "--out", str(root), "--mb", f"{mb:g}"))
    repeats = [] if ctx.quick else ["--repeats", "3"]
    return [layout, Command(ctx.lstm_train("bench", WIKITEXT, f"data.root={root}", "--max-steps", str(steps),
                                           *repeats, "--json"), bench_numbers)]


GROUPS = {"bench_lm": ("bench_lm_char", "bench_lm_files", "bench_lm_wikitext2")}  # one name for several entries
ENTRIES: list[Entry] = [  # minutes: full size / --quick, measured or estimated on the 2-core development machine
    bench("bench_mnist", "lstm-train bench on the tutorial's job: tutorial, Lightning fp32/bf16, lstm_train, floor "
          "(medians of 3)", 3, [], ["--repeats", "3"], ["--max-steps", "20"], 0.5),
    bench("bench_mnist_fp32", "lstm-train bench on the tutorial's job in exact fp32 (train.mixed_precision=no): "
          "lstm_train and its floor (medians of 3)", 2, ["train.mixed_precision=no"],
          ["--repeats", "3", "--skip-tutorial", "--skip-lightning"],
          ["--max-steps", "20", "--skip-tutorial", "--skip-lightning"], 0.5),
    Entry("bench_scaling", "lstm-train bench --scaling: floor and lstm_train against sequence length, hidden size, "
          "batch size and processes (the plot lands in the work folder)", 6, scaling, quick_minutes=1, inputs=(MNIST,)),
    bench("bench_lm_char", f"lstm-train bench on shakespeare_char, {LM_BENCH_STEPS} steps: pytorch/examples' "
          "word_language_model as published (fp32), lstm_train, floor (medians of 3; scored on validation)", 25, [LM],
          ["--max-steps", str(LM_BENCH_STEPS), "--repeats", "3"], ["--max-steps", "3", *QUICK_LM], 1),
    bench("bench_lm_files", f"lstm-train bench on lm_files_example (BPE 1,000 over this checkout's README.md and "
          f"jobs/*.yaml), up to {LM_BENCH_STEPS} steps (its one epoch is shorter): the same three loops (medians of 3; "
          "scored on validation)", 3, [LM_FILES], ["--max-steps", str(LM_BENCH_STEPS), "--repeats", "3"],
          ["--max-steps", "3"], 1, inputs=("README.md", "jobs/*.yaml")),  # its corpus: this checkout's text
    Entry("bench_lm_wikitext2", f"lstm-train bench on wikitext2_awd_lstm over a generated {WIKITEXT_MB:g} MB corpus "
          f"in WikiText-2's layout (scripts/wikitext_layout.py), {WIKITEXT_STEPS} steps: the same three loops "
          "(medians of 3; scored on test)", 40, bench_wikitext, quick_minutes=1, inputs=(WIKITEXT,)),
    Entry("lm_char", "shakespeare_char trained 14.5M characters, no time budget: validation loss and time", 33,
          lambda c: lm_run(c, "lm_char", LM, 14.5e6), quick_minutes=1, inputs=(LM,)),
    Entry("lm_char_best", "shakespeare_char_best trained 43.5M characters, no time budget", 95,
          lambda c: lm_run(c, "lm_char_best", BEST, 43.5e6), quick_minutes=1, inputs=(BEST,)),
    Entry("lm_char_budget", "shakespeare_char as shipped (its 10-minute budget): validation loss, characters reached",
          11, lambda c: lm_run(c, "lm_char_budget", LM, None, 15), quick_minutes=1, inputs=(LM,)),
    Entry("lm_char_best_budget", "shakespeare_char_best as shipped (its 30-minute budget): validation loss, "
          "characters reached", 31, lambda c: lm_run(c, "lm_char_best_budget", BEST, None, 15), quick_minutes=1,
          inputs=(BEST,)),
    Entry("lm_char_procs", f"shakespeare_char to step {PROCS_STEPS} at 1 process and at 2 (same 32 global streams): "
          "validation losses and their difference", 12, lm_procs, quick_minutes=1, inputs=(LM,)),
    Entry("lm_precision", f"shakespeare_char, {PRECISION_STEPS} steps in `auto` (what it picks here) and in fp32: "
          "tokens/s", 4, lm_precision, quick_minutes=1, inputs=(LM,)),
    Entry("lm_words_softmax", f"words model with a full vs the adaptive softmax, and BPE, on a generated "
          f"{WORDS_MB} MB corpus, {WORDS_STEPS} steps each (shakespeare_char's model): tokens/s, validation loss",
          12, lm_words_softmax, quick_minutes=2, inputs=(LM,)),
    Entry("prepare", "lstm-train prepare of generated 10/40/400 MB corpora per tokenizer (chars, bytes, words, bpe), "
          "CSV and a line-aligned parallel pair (translate, SentencePiece): seconds, MB/s, peak RSS", 18, prepare,
          quick_minutes=1.5),
    Entry("bpe_reference", "tokenizers' own BPE train + encode_batch vs lstm-train prepare (bpe), 10/40/400 MB", 15,
          bpe_reference, quick_minutes=1),
    Entry("rank_memory", "per-rank peak RssAnon, 2 processes, 150 steps, on 40 and 400 MB corpora (text chars, CSV)",
          12, rank_memory, quick_minutes=1.5),
    Entry("corpus_4gb", "a 4 GB chars corpus and a 4 GB CSV prepared (seconds, MB/s, peak RSS), then 300 steps at 1 "
          "and 2 processes on 40 MB and 4 GB (text chars, CSV): each rank's peak RssAnon, under 1 GiB", 16, corpus_4gb,
          quick_minutes=2),
    Entry("shards", "400 MB prepared as 1 shard here vs 4 through the local SLURM cluster: equal digests, wall times",
          6, shards, needs=slurm_missing, outside_cpu=True, quick_minutes=0.5),
    Entry("generate", "generate's time, 1k vs 10k tokens, per tokenizer (linear: ratio near 10)", 2, generate,
          quick_minutes=0.5),
    Entry("hostile", "hostile inputs bounded (1 GB one-line evaluate, 50 MB one-line words corpus: time to refuse or "
          "finish, peak RSS) and train.max_seconds=60 on shakespeare_char (train_seconds)", 4, hostile,
          quick_minutes=1, inputs=(LM,)),
    Entry("budget_hog", "train.max_seconds=60 on shakespeare_char with one busy-looping process per core beside it "
          "(train_seconds within 10% of 60)", 2, budget_hog, quick_minutes=0.5, inputs=(LM,)),
    reach("mnist_lstm_best", 4, True),
    reach("fashion_mnist_lstm_best", 5, True),
    reach("sst2_lstm", 3, False),
    reach("sst5_lstm", 6, False),
    reach("ud_ewt_upos", 9, False),
    reach("multi30k_de_en", 30, False),
    reach("japanese_vowels_lstm", 1, False),
    reach("mnist_caption", 7, False),  # the job headers point at these entries (issue 38: numbers from the book)
    reach("airline_forecast", 1, False),
    reach("co2_forecast", 1, False),
    reach("sine_forecast", 2, False),
    Entry("self_check", "python + torch + lstm_train import time (a check that the book runs)", 0.1, self_check,
          default=False, quick_minutes=0.1),
]
if os.environ.get(TEST_ENV) == "1":
    ENTRIES.append(Entry("test_sleep", "sleeps two minutes (tests: an interrupted book)", 2, test_sleep, default=False))
BY_NAME = {e.name: e for e in ENTRIES}


# ---------------------------------------------------------------------------
# The machine


def cpu_info() -> tuple[str, set[str]]:
    model, flags = None, set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "Model", "Hardware") and model is None:
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
    if model is None:
        import platform

        model = platform.processor() or platform.machine() or "unknown CPU"
    return model, flags


def machine() -> dict[str, Any]:
    """CPU model and flags of interest, cores, memory, torch, GPU and the precision `auto` picks here."""
    import torch

    from lstm_train.distributed import resolve_precision

    model, flags = cpu_info()
    memory = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = next(ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal:"))
        memory = round(int(kib.split()[1]) / 2**20, 1)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    info = {"cpu": model, "flags": [f for f in FLAGS if f in flags], "cores": os.cpu_count(), "memory_gib": memory,
            "torch": torch.__version__, "gpu": gpu, "auto_precision": resolve_precision("auto")}
    info["slug"] = slug(info)
    return info


def slug(m: dict[str, Any]) -> str:
    """A file-name-safe machine name: CPU model, its best precision flag, cores (and the GPU)."""
    name = re.sub(r"\((r|tm)\)|\bprocessor\b|\bcpu\b|@.*$|\b\d+-core\b", " ", m["cpu"].lower())
    name = re.sub(r"[^a-z0-9]+", "-", name).strip("-") or "cpu"
    flags = set(m["flags"])
    best = ("amx" if flags & {"amx_bf16", "amx_tile"} else "avx512bf16" if "avx512_bf16" in flags
            else "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "")
    parts = [name, best, f"{m['cores']}c"]
    if m.get("gpu"):
        parts.append(re.sub(r"[^a-z0-9]+", "-", m["gpu"].lower()).strip("-"))
    return "-".join(p for p in parts if p)


def git(*args: str) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


RECORD_PATHS = ("benchmarks", "BENCHMARKS.md")  # what a book run itself commits
# Read by no entry except as an entry's declared `inputs`: tests, CI, prose, and the job specs (an entry names
# the jobs it runs, so tuning one job leaves the other entries' records standing).
UNMEASURED = (*RECORD_PATHS, "tests", ".ci", "docs", "README.md", "jobs")


def commit() -> dict[str, Any]:
    """HEAD, whether the code has uncommitted changes, and the code measured: `code_tree` is a digest of
    HEAD's tree without what no entry reads as code (`UNMEASURED`: the records, tests, CI, prose, job
    specs), so a commit that only adds records, a test or a job's tuning measures the same code as its
    parent and a book can be finished over several quiet windows; `code_commit` is the newest commit that
    changed that code (for people; matching uses the tree and each entry's `inputs`)."""
    pathspec = ["--", ".", *(f":!{p}" for p in UNMEASURED)]
    status = git("status", "--porcelain", "--untracked-files=no", *pathspec)
    head = git("rev-parse", "HEAD")
    listing = git("ls-tree", "HEAD")
    tree = None
    if listing is not None:
        kept = [ln for ln in listing.splitlines() if ln.split("\t", 1)[-1] not in UNMEASURED]
        tree = hashlib.sha256("\n".join(kept).encode()).hexdigest()[:16]
    code = git("log", "-1", "--format=%H", *pathspec) or head
    return {"commit": head or "unknown", "short": git("rev-parse", "--short=8", "HEAD") or "nogit",
            "dirty": bool(status), "code_commit": code, "code_tree": tree}


def input_digests(entry: "Entry") -> dict[str, str]:
    """What an entry reads besides the code, as digests of this checkout's files: a job spec by its parsed
    content (its comments, where the book's numbers are quoted, change nothing measured), any other file
    (or a glob's files) by its bytes.  A missing file digests as "missing"."""
    import yaml

    out: dict[str, str] = {}
    for pattern in entry.inputs:
        paths = sorted(ROOT.glob(pattern)) if any(c in pattern for c in "*?[") else [ROOT / pattern]
        for path in paths:
            name = path.relative_to(ROOT).as_posix()
            if not path.is_file():
                out[name] = "missing"
            elif pattern == name and name.startswith("jobs/") and name.endswith(".yaml"):
                spec = json.dumps(yaml.safe_load(path.read_text()), sort_keys=True, default=str)
                out[name] = "spec:" + hashlib.sha256(spec.encode()).hexdigest()[:16]
            else:
                out[name] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return out


class CpuClock:
    """Cores used on average by processes other than the book and its children, over an interval:
    the machine's CPU time (/proc/stat: user, nice, system, steal) less ours (getrusage of the book
    and its reaped children) and the kernel's own threads' (page write-back of a prepared corpus)."""

    PF_KTHREAD = 0x00200000

    def __init__(self) -> None:
        self.start = self.read()

    @classmethod
    def kernel_threads_s(cls) -> float:
        ticks = 0
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()  # fields from the 3rd (state) on
                if int(fields[6]) & cls.PF_KTHREAD or int(fields[1]) == 2 or proc.name == "2":
                    ticks += int(fields[11]) + int(fields[12])  # utime, stime
            except (OSError, ValueError, IndexError):
                continue
        return ticks / os.sysconf("SC_CLK_TCK")

    @classmethod
    def read(cls) -> tuple[float, float, float]:
        try:
            fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
            user, nice, system, _idle, _iowait, _irq, _softirq, steal = (int(x) for x in fields[:8])
            machine_s = (user + nice + system + steal) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError):
            machine_s = float("nan")
        ours = cls.kernel_threads_s()
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
            usage = resource.getrusage(who)
            ours += usage.ru_utime + usage.ru_stime
        return time.monotonic(), machine_s, ours

    def others(self) -> float | None:
        (t0, m0, o0), (t1, m1, o1) = self.start, self.read()
        if t1 - t0 < 1 or math.isnan(m1 - m0):
            return None
        return round(max(0.0, (m1 - m0) - (o1 - o0)) / (t1 - t0), 2)


def settle(max_load: float, wait_s: float) -> tuple[float, float]:
    """Wait up to `wait_s` for the 1-minute load average to fall to `max_load` (the previous entry's
    own load decays in a minute or two): the load then, and the seconds waited."""
    start = time.monotonic()
    load = os.getloadavg()[0]
    while load > max_load and time.monotonic() - start < wait_s:
        time.sleep(min(5.0, max(0.1, wait_s - (time.monotonic() - start))))
        load = os.getloadavg()[0]
    return round(load, 2), round(time.monotonic() - start, 1)


# ---------------------------------------------------------------------------
# Running


class Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def raise_interrupted(signum: int, _frame: Any) -> None:
    """The first SIGINT/SIGTERM ends the book (its running command first); later ones are ignored
    while it stops that command (main restores the handlers)."""
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)
    raise Interrupted(signum)


def shell_line(argv: list[str]) -> str:
    """The command as typed at the repository root (paths under it made relative)."""
    def rel(arg: str) -> str:
        path = Path(arg)
        if path.is_absolute():
            with contextlib.suppress(ValueError):
                return str(path.relative_to(ROOT))
        return arg

    return shlex.join(rel(a) for a in argv)


def stop(proc: subprocess.Popen) -> None:
    """End a command and every process it started (its own session): SIGTERM, then SIGKILL."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_command(cmd: Command, env: dict[str, str], log: Path, timeout: float) -> tuple[int, str, str]:
    """Run one command alone, in its own session (so the book can end all of it): exit code,
    stdout, the tail of stderr."""
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd.argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err, text=True,
                                start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop(proc)
            out = ""
            err.write(f"\n[book] timed out after {timeout:.0f} s\n")
        finally:
            stop(proc)  # an interrupt (Interrupted raised in communicate) ends the command too
    return proc.returncode, out, log.read_text()[-3000:]


def run_entry(entry: Entry, ctx: Ctx, env: dict[str, str], logs: Path, args: argparse.Namespace) -> dict[str, Any]:
    load, waited = settle(args.max_load, args.settle)
    rec: dict[str, Any] = {"name": entry.name, "what": entry.what, "commands": [], "numbers": [], "ok": True,
                           "error": None, "load_before": load, "settled_s": waited, "inputs": input_digests(entry)}
    busy = [f"load average {load} > {args.max_load} before it (after waiting {waited:.0f} s)"] if load > args.max_load \
        else []
    reason = entry.needs()
    started = time.monotonic()
    if reason:
        rec.update(ok=False, skipped=True, error=reason)
    else:
        clock = CpuClock()
        timeout = 600 if ctx.quick else max(600.0, entry.minutes * 60 * 3)
        try:
            commands = entry.commands(ctx)
        except Exception as e:  # noqa: BLE001 - an entry that cannot even be set up fails alone
            commands = []
            rec.update(ok=False, error=f"could not set the entry up: {type(e).__name__}: {e}")
        for i, cmd in enumerate(commands):
            line = shell_line(cmd.argv)
            rec["commands"].append(line)
            say(f"  $ {line}")
            rc, out, err = run_command(cmd, env, logs / f"{entry.name}.{i}.log", timeout)
            if rc != 0:
                rec.update(ok=False, error=f"exit {rc}: {line}\n{err.strip()[-1500:]}")
                break
            if cmd.parse is None:
                continue
            try:
                data = json.loads(cmd.out.read_text() if cmd.out else out)
                numbers = cmd.parse(data)
            except (OSError, ValueError, KeyError, TypeError) as e:
                rec.update(ok=False, error=f"could not read the output of {line}: {type(e).__name__}: {e}")
                break
            rec["numbers"] += [{"name": k, "value": v, "command": len(rec["commands"]) - 1} for k, v in numbers.items()]
        others = clock.others()
        rec["others_cpu"] = others
        if others is not None and others > args.max_load and not entry.outside_cpu:
            busy.append(f"other processes used {others} cores on average while it ran (> {args.max_load})")
    rec["seconds"] = round(time.monotonic() - started, 1)
    rec["busy"] = bool(busy)
    if busy:
        rec["busy_why"] = "; ".join(busy)
    return rec


def say(*a: Any) -> None:
    print(*a, file=sys.stderr, flush=True)


def same_fs_tmp(folder: Path) -> Path:
    """A folder on the records' file system, outside the records folder, for the temporary file."""
    tmp = Path(tempfile.gettempdir())
    with contextlib.suppress(OSError):
        if tmp.stat().st_dev == folder.stat().st_dev:
            return tmp
    return folder.parent


def write_record(record: dict[str, Any], folder: Path) -> Path:
    """Atomically: a temporary file outside `folder`, fsynced, renamed into it (signals held meanwhile)."""
    folder.mkdir(parents=True, exist_ok=True)
    when = dt.datetime.fromisoformat(record["date"]).strftime("%Y%m%dT%H%M%SZ")
    final = folder / f"{when}-{record['machine']['slug']}-{record['short_commit']}{'-quick' if record['quick'] else ''}.json"
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        fd, tmp = tempfile.mkstemp(prefix=".book-", suffix=".json.tmp", dir=same_fs_tmp(folder))
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(record, f, indent=1)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        dirfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
    return final


def child_env(ctx: Ctx) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "ACCELERATE_MIXED_PRECISION")}
    paths = [str(ROOT), *(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(ROOT))]
    env.update(PYTHONPATH=os.pathsep.join(paths),
               WANDB_MODE="disabled", PYTHONUNBUFFERED="1", LSTM_TRAIN_CACHE=str(ctx.work / "cache"))
    return env


def run_book(entries: list[Entry], args: argparse.Namespace) -> int:
    ctx = Ctx(work=args.work, quick=args.quick)
    ctx.work.mkdir(parents=True, exist_ok=True)
    date = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    logs = ctx.work / "logs" / date.strftime("%Y%m%dT%H%M%SZ")
    logs.mkdir(parents=True, exist_ok=True)
    env = child_env(ctx)
    load_start = round(os.getloadavg()[0], 2)
    total = sum(e.quick_minutes if args.quick else e.minutes for e in entries)
    say(f"[book] {len(entries)} entries{' (quick)' if args.quick else ''}, about {total:.1f} min; "
        f"load average {load_start} (busy above {args.max_load}); logs in {logs}")
    record: dict[str, Any] = {"date": date.isoformat(), **commit_fields(), "quick": args.quick, "machine": machine(),
                              "max_load": args.max_load, "load_at_start": load_start, "argv": sys.argv[1:],
                              "env": {k: env[k] for k in ("PYTHONPATH", "LSTM_TRAIN_CACHE", "WANDB_MODE")} | (
                                  {"LSTM_TRAIN_DATA": env["LSTM_TRAIN_DATA"]} if "LSTM_TRAIN_DATA" in env else {}),
                              "cwd": str(ROOT), "entries": []}
    for i, entry in enumerate(entries, 1):
        say(f"[book] {i}/{len(entries)} {entry.name}: {entry.what}")
        rec = run_entry(entry, ctx, env, logs, args)
        record["entries"].append(rec)
        state = "ok" if rec["ok"] else ("skipped: " if rec.get("skipped") else "FAILED: ") + (rec["error"] or "")
        say(f"[book]   {state.splitlines()[0]} ({rec['seconds']:.0f} s{', busy: ' + rec['busy_why'] if rec['busy'] else ''})")
    # The load at the start is the first entry's, after it settled: a busy start marks that entry.
    busy = [f"{r['name']}: {r['busy_why']}" for r in record["entries"] if r["busy"]]
    record["busy"] = bool(busy)
    record["busy_why"] = busy or None
    record["load"] = {r["name"]: r["load_before"] for r in record["entries"]}
    path = write_record(record, args.dir)
    say(f"[book] record: {path}" + ("  (BUSY: the machine was not quiet; see busy_why)" if busy else ""))
    rendered = render(args.dir)
    say(f"[book] {rendered} rendered")
    return 0 if all(r["ok"] or r.get("skipped") for r in record["entries"]) else 1


def commit_fields() -> dict[str, Any]:
    c = commit()
    return {"commit": c["commit"], "short_commit": c["short"], "dirty": c["dirty"], "code_commit": c["code_commit"],
            "code_tree": c["code_tree"]}


def measured_here(record: dict[str, Any], entry: dict[str, Any], code: dict[str, Any]) -> bool:
    """Whether `entry` (of `record`) measured this checkout's code (committed: a dirty record measured something
    else) and the same inputs (the job specs it ran, as they are now)."""
    known = BY_NAME.get(entry["name"])
    inputs = input_digests(known) if known else {}
    return (bool(code["code_tree"]) and record.get("code_tree") == code["code_tree"] and not record.get("dirty")
            and entry.get("inputs", {}) == inputs)


def latest(folder: Path) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, tuple[dict, dict]]]]:
    """Per machine slug: its latest full-size record, and per entry its latest full-size record and entry (the
    latest success; a failure where it never succeeded).  `--quick` records never count."""
    machines: dict[str, dict[str, Any]] = {}
    by_machine: dict[str, dict[str, tuple[dict, dict]]] = {}
    for record in sorted(records(folder), key=lambda r: r["date"]):
        if record.get("quick"):
            continue
        slug_ = record["machine"]["slug"]
        machines[slug_] = record
        seen = by_machine.setdefault(slug_, {})
        for entry in record["entries"]:
            if entry["ok"] or entry["name"] not in seen or not seen[entry["name"]][1]["ok"]:
                seen[entry["name"]] = (record, entry)
    return machines, by_machine


def missing(entries: list["Entry"], folder: Path, slug_: str, code: dict[str, Any]) -> list["Entry"]:
    """Those of `entries` with no successful full-size record of this checkout's code on this machine:
    what `--missing` runs, so a book too long for one quiet window is finished in several."""
    seen = latest(folder)[1].get(slug_, {})
    return [e for e in entries if not (e.name in seen and seen[e.name][1]["ok"] and measured_here(*seen[e.name], code))]


# ---------------------------------------------------------------------------
# BENCHMARKS.md


def records(folder: Path) -> Iterator[dict[str, Any]]:
    for path in sorted(folder.glob("*.json")):
        with contextlib.suppress(OSError, ValueError):
            record = json.loads(path.read_text())
            if isinstance(record, dict) and "machine" in record and "entries" in record:
                record["_file"] = path.name
                yield record


def fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:
            return "nan"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.4g}"
    if value is None:
        return "-"
    return str(value).replace("|", "\\|").replace("\n", " ")


def coverage(entries: dict[str, tuple[dict, dict]], code: dict[str, Any]) -> str:
    """One line: whether every default entry's shown record measured this checkout's code, or which did not."""
    here = code["code_commit"][:8] if code.get("code_commit") else "unknown"
    defaults = [e.name for e in ENTRIES if e.default]
    stale = [n for n in defaults if not (n in entries and entries[n][1]["ok"] and measured_here(*entries[n], code))]
    if not stale:
        return (f"**Every default entry below measured this code** (`{here}`, code tree `{code['code_tree']}`): "
                "the whole book, on one version of the code.")
    return (f"{len(defaults) - len(stale)} of {len(defaults)} default entries measured this code (`{here}`, code "
            f"tree `{code['code_tree']}`); not yet: {', '.join(f'`{n}`' for n in stale)} "
            "(`python scripts/book.py --missing` runs just those).")


def render(folder: Path) -> Path:
    """BENCHMARKS.md beside `folder`: per machine, each entry's latest full-size record (its latest
    successful one; a failure where it never succeeded), as a table with each number's command."""
    machines, by_machine = latest(folder)
    code = commit()
    order = {e.name: i for i, e in enumerate(ENTRIES)}
    lines = ["# Benchmarks", "",
             "Rendered by `python scripts/book.py --render` (and after every book run) from the records in "
             f"`{folder.name}/`: one JSON file per run of the benchmark book (`scripts/book.py`; `--list` names the "
             "entries). For each machine, each entry's latest full-size run (`--quick` records are never shown); "
             "every number with the command that measured it, run from the repository root with the record's `env`. "
             "Entries marked **busy** ran while other work used the machine (load average or other processes' CPU "
             "above the record's `max_load`): their numbers are not those of a quiet machine.", ""]
    if not by_machine:
        lines += ["No records yet: run `python scripts/book.py` (see `--list`).", ""]
    for slug_, entries in by_machine.items():
        m = machines[slug_]["machine"]
        lines += [f"## {m['cpu']}, {m['cores']} cores (`{slug_}`)", "",
                  f"CPU flags: {', '.join(m['flags']) or 'none of ' + ', '.join(FLAGS)}; memory {m['memory_gib']} GiB; "
                  f"GPU: {m['gpu'] or 'none'}; torch {m['torch']}; `train.mixed_precision: auto` trains in "
                  f"{'fp32' if m['auto_precision'] == 'no' else m['auto_precision']} here (latest record).", "",
                  coverage(entries, code), "",
                  "| entry | number | value | date (UTC) | code | command |", "|---|---|---|---|---|---|"]
        commands: list[str] = []
        notes: list[str] = []
        for name in sorted(entries, key=lambda n: (order.get(n, len(order)), n)):
            record, entry = entries[name]
            date = record["date"][:16].replace("T", " ")
            sha = (record.get("code_commit") or "")[:8] or record["short_commit"]  # older records: HEAD
            sha += " (dirty)" if record.get("dirty") else ""
            label = f"`{name}`" + (" **busy**" if entry.get("busy") else "")
            if entry.get("busy"):
                notes.append(f"- `{name}` ({date}): {entry['busy_why']}")
            refs = []
            for c in entry["commands"]:
                if c not in commands:
                    commands.append(c)
                refs.append(commands.index(c) + 1)
            rows = [(fmt(n["name"]), fmt(n["value"]), refs[n["command"]] if n["command"] < len(refs) else None)
                    for n in entry["numbers"]]
            if not entry["ok"]:
                why = ("skipped: " if entry.get("skipped") else "failed: ") + fmt((entry["error"] or "").splitlines()[0][:160])
                rows.insert(0, ("-", why, refs[-1] if refs else None))
            shown = None
            for i, (number, value, ref) in enumerate(rows):  # entry, date, commit on its first row; a command
                first = (label, date, sha) if i == 0 else ("", "", "")  # where it changes
                cite = "" if ref == shown and i else f"[{ref}]" if ref else "-"
                shown = ref
                lines.append(f"| {first[0]} | {number} | {value} | {first[1]} | {first[2]} | {cite} |")
        lines.append("")
        if notes:
            lines += ["Busy:", "", *notes, ""]
        lines += ["Commands:", ""] + [f"{i}. `{c}`" for i, c in enumerate(commands, 1)] + [""]
    out = folder.parent / "BENCHMARKS.md"
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text("\n".join(lines))
    os.replace(tmp, out)
    return out


# ---------------------------------------------------------------------------
# Command line


def listing() -> str:
    width = max(len(e.name) for e in ENTRIES)
    lines = ["entries (expected minutes on the 2-core development machine, full size / --quick):"]
    for e in ENTRIES:
        long = "  LONG" if e.minutes >= 20 else ""
        extra = "" if e.default else "  [not in the default set: name it]"
        needs = "  [needs SLURM]" if e.needs is slurm_missing else ""
        lines.append(f"  {e.name:{width}s}  ~{e.minutes:g} / {e.quick_minutes:g} min{long}{extra}{needs}\n"
                     f"  {'':{width}s}  {e.what}")
    lines += [f"group {g}: {' '.join(members)}" for g, members in GROUPS.items()]
    full = sum(e.minutes for e in ENTRIES if e.default)
    quick = sum(e.quick_minutes for e in ENTRIES if e.default)
    lines.append(f"default set: about {full:.0f} min ({full / 60:.1f} h) plus up to --settle s per entry; "
                 f"--quick: about {quick:.0f} min")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="book.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", metavar="NAME", help="entries to run (default: every default entry; `all`: every entry)")
    p.add_argument("--list", action="store_true", help="list the entries and exit")
    p.add_argument("--quick", action="store_true", help="smoke sizes (tiny corpora, few steps); the record says quick")
    p.add_argument("--render", action="store_true", help="only render BENCHMARKS.md from the records")
    p.add_argument("--missing", action="store_true",
                   help="only those of the named (default: the default) entries with no successful full-size record "
                        "of this code on this machine: a book too long for one quiet window, finished in several")
    p.add_argument("--dir", type=Path, default=RECORDS, help="records folder (default: benchmarks/ of the checkout; "
                   "BENCHMARKS.md goes beside it)")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "lstm-train-book",
                   help="corpora, caches, run directories and logs (kept: corpora are generated once)")
    p.add_argument("--max-load", type=float, default=0.5,
                   help="busy above this 1-minute load average, or this many cores used by others (default 0.5)")
    p.add_argument("--settle", type=float, default=None,
                   help="seconds to wait before each entry for the load to fall to --max-load (default 120; --quick 0)")
    return p


def select(names: list[str]) -> list[Entry]:
    if not names:
        return [e for e in ENTRIES if e.default]
    if names == ["all"]:
        return list(ENTRIES)
    names = [m for n in names for m in GROUPS.get(n, (n,))]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        groups = "; ".join(f"{g}: {' '.join(members)}" for g, members in GROUPS.items())
        raise ValueError(f"book: unknown entry {unknown[0]!r}; entries: {', '.join(BY_NAME)} (or all; groups: {groups})")
    return [BY_NAME[n] for n in dict.fromkeys(names)]


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.list:
        print(listing())
        return 0
    try:
        entries = select(args.names)
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    if args.render:
        print(render(args.dir))
        return 0
    if args.missing:
        code = commit()
        entries = missing(entries, args.dir, machine()["slug"], code)
        if not entries:
            say(f"[book] every entry asked for has a record of this code ({code['code_commit'][:8]}) on this machine")
            return 0
        say(f"[book] missing for this code ({code['code_commit'][:8]}): {' '.join(e.name for e in entries)}")
    if args.settle is None:
        args.settle = 0.0 if args.quick else 120.0
    previous = {s: signal.signal(s, raise_interrupted) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return run_book(entries, args)
    except Interrupted as e:
        say(f"[book] interrupted by {e}: no record written")
        return 128 + e.signum
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


if __name__ == "__main__":
    sys.exit(main())
