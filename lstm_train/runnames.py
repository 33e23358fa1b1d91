"""Run names people can read: the job name plus what the command line changed in the job file.

    lstm-train run mnist_lstm optim.lr=0.003 model.hidden_size=128
        -> runs/mnist_lstm/hidden=128,lr=0.003-3f2a9c       (W&B: mnist_lstm-hidden=128,lr=0.003-rank0)
    lstm-train run mnist_lstm
        -> runs/mnist_lstm/base-8d41e0

Why a label and a hash: the label says what differs, so `ls runs/mnist_lstm` and a W&B project
read as a list of experiments; the hash (of everything that is trained, `runfiles.identity`)
keeps two jobs apart that differ where the label does not look (an edited job file, a value
cut short), so the same job file with the same overrides always lands in the same directory
and resumes there, on a laptop, in an `salloc`, under `sbatch` or through `submit`.

Only overrides that change what is trained count: `tracking.*`, `slurm.*`, `sweep`,
`train.output_dir` and `train.run_id` say where and how a run goes, not what it learns.
Keys that change how a run is carried out but not what it learns (logging and checkpoint
intervals, threads, evaluation batch size: QUIET) stay out of the label and in the hash.
Items are sorted by key, so the order of the overrides on the command line does not matter.
"""

from __future__ import annotations

import re
from pathlib import PurePath
from typing import Any

from . import runfiles

BASE = "base"  # the label of a run of the job file as it is
HASH_DIGITS = 6
MAX_LABEL = 64  # characters of the label (items are dropped past it: the hash keeps runs apart)
MAX_VALUE = 24  # characters of one value
READABLE = re.compile(rf"^(?P<label>[A-Za-z0-9_.,=+-]+)-(?P<digest>[0-9a-f]{{{HASH_DIGITS}}})$")

# Short names for the keys people sweep most; any other key goes by its last part.
ALIASES = {
    "optim.lr": "lr", "optim.name": "opt", "optim.weight_decay": "wd", "optim.scheduler": "sched",
    "optim.grad_clip": "clip", "optim.warmup_steps": "warmup", "optim.momentum": "momentum",
    "model.hidden_size": "hidden", "model.num_layers": "layers", "model.bidirectional": "bidir",
    "model.dropout": "dropout", "model.embedding_dim": "emb",
    "data.batch_size": "bs", "data.global_batch_size": "gbs", "data.max_tokens": "tokens",
    "train.epochs": "epochs", "train.max_steps": "steps", "train.max_seconds": "secs", "train.seed": "seed",
    "train.mixed_precision": "precision", "train.grad_accum_steps": "accum",
}


QUIET = {"train.log_every", "train.checkpoint_every", "train.keep_checkpoints", "train.threads", "train.compile",
         "train.cpu", "data.num_workers", "data.cache_dir", "data.prepare_timeout", "data.eval_batch_size",
         "data.download"}


def volatile(key: str) -> bool:
    """A dotted key that says where, how long or how a run is tracked, not what it trains."""
    top, _, rest = key.partition(".")
    return top in runfiles.VOLATILE_SECTIONS or (top == "train" and rest.split(".")[0] in runfiles.VOLATILE_TRAIN_KEYS)


def lookup(spec: Any, key: str) -> tuple[bool, Any]:
    """(found, value) of a dotted key in a nested dict."""
    node = spec
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def flatten(value: Any, prefix: str) -> dict[str, Any]:
    """A dotted key's value, a section given whole spread into its leaves."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}"))
        return out
    return {prefix: value}


def changes(keys: list[str], base: dict[str, Any] | None, job: dict[str, Any]) -> dict[str, Any]:
    """Dotted key -> the job's value, for each of `keys` (the overrides' keys) whose value
    differs from the job file's.  `base` is the job file resolved alone (defaults filled), or
    None when it is not valid alone (a file that needs an override): then every key counts."""
    out: dict[str, Any] = {}
    for key in keys:
        found, value = lookup(job, key)
        if not found or volatile(key):
            continue
        for leaf, new in flatten(value, key).items():
            had, old = lookup(base, leaf) if base is not None else (False, None)
            if not volatile(leaf) and leaf not in QUIET and not (had and old == new):
                out[leaf] = new
    return dict(sorted(out.items()))


def show_value(value: Any) -> str:
    """A value as a file name can hold it: floats to 4 significant digits, a path by its name,
    lists joined by '+', other characters '_', at most MAX_VALUE characters."""
    if isinstance(value, bool) or value is None:
        text = str(value).lower()
    elif isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, (list, tuple)):
        text = "+".join(show_value(v) for v in value)
    else:
        text = str(value)
        if "/" in text:
            text = PurePath(text.rstrip("/")).name or text
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", text)[:MAX_VALUE] or "_"


def label(changed: dict[str, Any]) -> str:
    """`hidden=128,lr=0.003` (BASE when nothing changed): short names where two keys do not
    share one, items dropped past MAX_LABEL characters with `+N` saying how many."""
    if not changed:
        return BASE
    names = {key: ALIASES.get(key, key.rsplit(".", 1)[-1]) for key in changed}
    taken = list(names.values())
    items = [f"{names[k] if taken.count(names[k]) == 1 else k}={show_value(v)}" for k, v in changed.items()]
    out = ""
    for i, item in enumerate(items):
        longer = f"{out},{item}" if out else item
        rest = len(items) - i - 1
        if out and len(longer) + (len(f",+{rest}") if rest else 0) > MAX_LABEL:
            return f"{out},+{len(items) - i}"
        out = longer
    return out[:MAX_LABEL]


def readable_id(label_text: str, spec: dict[str, Any], extra: dict[str, Any] | None = None) -> str:
    """`<label>-<hash>`: the label, then the first HASH_DIGITS of the job's identity."""
    return f"{label_text}-{runfiles.identity(spec, extra)[:HASH_DIGITS]}"


def label_of(run_id: str) -> str | None:
    """The label inside a readable run id (None for another id: a hash, a SLURM job id, a name given)."""
    m = READABLE.match(run_id)
    return m.group("label") if m else None


def display_name(job_name: str, run_id: str) -> str:
    """A run's name for people (W&B): `<job>-<label>`, or the job name alone for the job file as it is."""
    found = label_of(run_id)
    return job_name if found in (None, BASE) else f"{job_name}-{found}"
