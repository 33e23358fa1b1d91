"""The contract between a task and the one training loop in `lstm_train.train`.

A task says what is learned: its data (as tensor columns), its model, its loss,
its metrics and which of them picks the best model.  The loop does the rest
the same way for every task: batches, distribution, checkpoints, evaluation,
model selection, tracking.  See "Adding a task" in README.md.

The duties besides learning have one mechanism each, here, so that a task only
says what is particular to it:

* state between hooks: none on the task (it holds `job` and `run_dir` from
  `__init__`, nothing else).  Everything the model, evaluation, `finish` and
  `predict` need goes into `Splits.info` (saved in every checkpoint); what the
  model needs to decode (class groups, tag names, vocabularies) it is given by
  `build_model` from that dict; `init_weights` sets what only training needs
  (pretrained vectors).
* run files (vocabularies, subword models a user or tool reads): the task returns
  their bytes from `run_files(info)`; the loop's main process writes them
  atomically (`write_run_files`), a resumed run refuses a file that is not the
  one its data gives, and `predict` reads one through `read_run_file`, which
  refuses a file whose digest is not the checkpoint's.
* messages: `note()`, once (the main process), on stderr: stdout stays
  machine-readable (`bench --json`, `predict`).
* predict inputs: `predict_texts` (positional texts, `--text`, `--file`) for text
  tasks, positional file names for image tasks; an empty or blank input is a
  `PredictInputError` naming it, the same for every task.
* result keys: `val_*` / `test_*` for everything measured on a split (`finish`'s
  keys too), paths as strings.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from torch import nn

from ..data.ragged import Padded, Ragged, gather, sample_lengths
from ..data.splits import Split, Splits  # noqa: F401 (part of the task contract)
from ..data.store.entry_format import EntryWriter
from ..data.streams.base import Piece, Stream
from ..distributed import autocast, resolve_precision
from ..messages import note  # noqa: F401 (tasks import it from here)
from ..schema import DataBase, ModelBase

if TYPE_CHECKING:  # the registry imports this module to check a task class: no import back
    from .registry import Registration

Batch = tuple[torch.Tensor | Padded, ...]


@dataclass
class ExportSignature:
    """What `lstm-train export` feeds the model: named example inputs (from one batch of the
    task's own data), the axes of each that may vary (batch, sequence length), the output names
    and, where the deployed answer is not the module's own output, the function that computes it.
    `metadata` goes into the export's JSON sidecar."""

    inputs: dict[str, torch.Tensor]
    dynamic_axes: dict[str, dict[int, str]]
    outputs: list[str]
    forward: Any = None  # (model, *inputs) -> output; None: model(*inputs)
    metadata: dict[str, Any] = field(default_factory=dict)  # what reading the outputs needs (class names...)


def split_size(split: Split) -> int:
    return len(split[0])


# ---------------------------------------------------------------------------
# Predict inputs


class PredictInputError(ValueError):
    """A predict input that cannot be used (empty, blank, missing): the CLI prints it and exits 2."""


def predict_texts(inputs: list[str], options: dict[str, Any]) -> list[str]:
    """The texts a text task predicts on: positional arguments, then each `--text`, then the lines
    of `--file` (UTF-8, one text a line).  An empty or blank one is refused, naming it; none at all
    is refused too."""
    from ..data.readers.textfiles import read_prediction_lines
    from ..data.textio import read_utf8

    texts: list[str] = []
    for where, given in (("argument", inputs), ("--text", options.get("text") or [])):
        for i, text in enumerate(given, 1):
            if not text.strip():
                raise PredictInputError(f"{where} number {i} is empty: give a text to read")
            texts.append(text)
    if options.get("file"):
        if not Path(options["file"]).is_file():
            read_utf8(options["file"], PredictInputError)  # its missing-file / folder message
        lines = read_prediction_lines(Path(options["file"]), "utf-8")  # streamed; an over-long line cut, said
        for n, line in enumerate(lines, 1):
            if not line.strip():
                raise PredictInputError(f"{options['file']}:{n}: empty line (one text per line)")
            texts.append(line.rstrip("\r"))
    if not texts:
        raise PredictInputError('nothing to read: give texts as arguments, --text "..." (repeatable) or --file FILE')
    return texts


def predict_files(inputs: list[str], what: str = "image files") -> list[str]:
    """The file names an image task predicts on (positional), each non-blank."""
    if not inputs:
        raise PredictInputError(f"give {what}: lstm-train predict RUN_DIR FILE ...")
    for i, name in enumerate(inputs, 1):
        if not name.strip():
            raise PredictInputError(f"argument number {i} is empty: give a file name")
    return inputs


# ---------------------------------------------------------------------------
# Run files


class RunFileMismatch(ValueError):
    """A run file that is not the one the run's checkpoint (or its data now) gives."""


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _atomic_write(path: Path, data: bytes) -> None:
    from ..runfiles import write_atomic

    write_atomic(path, data)  # the one writer of run files: private random temporary, no symlink followed


def _mismatch(path: Path, found: bytes, wanted: bytes, what: str) -> RunFileMismatch:
    return RunFileMismatch(
        f"{path}: this file (digest {digest(found)}) is not the one {what} (digest {digest(wanted)}); restore "
        "the run's own file, or train in a new directory (train.output_dir or train.run_id)"
    )



class Task:
    """One kind of learning problem.  Subclasses set the class attributes and methods below.

    The loop calls, in order: `load_data` (every rank, CPU tensors; or once, through the
    prepared-data store, where `source_files` names the inputs), `write_run_files`
    (main process, once the run directory exists: the files of `run_files`), `build_model`
    (from `splits.info`) and `init_weights`, then per batch `loss`; at each evaluation
    `eval_sums` per batch of the rank's shard (summed over batches and ranks, `evaluate_sums`)
    and `metrics` on the totals; at the end, with the best weights, the test evaluation and
    `finish` (main process).  `predict` gets a model built by `build_model` from the
    checkpoint's copy of `splits.info`, with the checkpoint's weights.

    A task keeps nothing on itself between hooks: every hook reads the job, the run
    directory and its arguments only (the tests check `vars(task)` after every hook).
    Models arrive as the plain module (never a DDP wrapper), except in `loss`.  State a
    task carries from one training step to the next (a language model's hidden state)
    belongs to the loop's per-rank state, saved in the checkpoint's generic "carry" slot,
    not to the task: its place in this contract is `step_loss`, which takes the carry of the
    previous step (empty at the start of an epoch) and returns the next one.
    """

    # What the task is called and its job sections (`data:`, `model:`) are declared once, in its
    # `Registration` (torch-free: `lstm-train config` reads a job without importing the task); the
    # class names it, `registration = REGISTRATION`, and gets `name`, `Data` and `Model` from it.  A
    # task named by its class alone (`task: package.module:MyTask`, no registration) sets the three.
    registration: ClassVar[Registration | None] = None
    name: ClassVar[str]
    Data: ClassVar[type[DataBase]]
    Model: ClassVar[type[ModelBase]]
    # The metric that picks the best checkpoint, ranks sweep points and heads the summary
    # (a key of `metrics` without its prefix), and which way is better.
    primary_metric: ClassVar[str] = "accuracy"
    higher_is_better: ClassVar[bool] = True
    # What throughput counts: samples (images, windows) or tokens (text).
    throughput_unit: ClassVar[Literal["samples", "tokens"]] = "samples"
    # `train.mixed_precision: auto` trains in bf16 where the hardware runs it natively,
    # unless the task's metrics were measured to suffer from it ("fp32").
    precision: ClassVar[Literal["auto", "fp32"]] = "auto"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        reg = cls.__dict__.get("registration")
        if reg is None:
            return
        if not callable(getattr(reg, "job_sections", None)):  # a Registration
            raise TypeError(f"{cls.__name__}.registration is a {type(reg).__name__}, not a Registration")
        declared = [k for k in ("name", "Data", "Model") if k in cls.__dict__ and (k == "name" or reg.sections)]
        if declared:
            raise TypeError(f"{cls.__name__} sets {', '.join(declared)} and names a registration: its "
                            f"registration ({reg.name!r}) declares them; remove them from the class")
        cls.name = reg.name
        if reg.sections is not None:
            cls.Data, cls.Model = reg.job_sections()

    def __init__(self, job: Any, run_dir: Path | None = None) -> None:
        self.job = job
        self.run_dir = run_dir

    # -- data and model ---------------------------------------------------------------

    def load_data(self) -> Splits:
        raise NotImplementedError

    def stream_data(self) -> Stream:
        """How the prepared-data store makes this task's entry: a `Stream` (`data/streams/base.py`) of
        pieces scanned, planned and encoded in two passes, on every core or as a SLURM array.
        Default: `load_data` as one piece (a task whose files are small or cannot be cut); a
        task with corpora of any size returns its own (language_model, text_classify, tag,
        translate)."""
        return LoadedStream(self)

    def entry_revision(self) -> dict[str, Any]:
        """What of this job's preparation changed since entries were first made (non-empty: it joins
        the prepared-data key, so an entry of the old way is prepared again; empty: the key is as it
        always was).  Default: nothing."""
        return {}

    def view(self, splits: Splits) -> Splits:
        """The splits as the loop uses them, made from the entry's mapped columns (views only:
        no copy).  Default: as stored."""
        return splits

    def source_files(self) -> list[Path] | None:
        """The files `load_data` reads.  A list: the loop prepares the data once into the
        prepared-data store (`data/store/prepared.py`, keyed by these files' contents and the data
        section) and every rank memory-maps it; `load_data` then runs only when preparing, so
        it must not leave state on `self`.  None (the default): `load_data` runs on every rank."""
        return None

    def run_files(self, info: dict[str, Any]) -> dict[str, bytes]:
        """Files a user, a tool or `predict` reads beside the checkpoint ({file name: bytes}, a
        vocabulary, say), made from `info` alone.  Default: none.  Written by `write_run_files`."""
        return {}

    def write_run_files(self, run_dir: Path, info: dict[str, Any]) -> None:
        """The loop's main process, once the run directory exists: each of `run_files`, written
        atomically.  A file already there (a resumed run) must be byte for byte the one this
        run's data gives: a changed train file or an edited vocabulary would silently change
        what every id means."""
        for name, data in self.run_files(info).items():
            path = Path(run_dir) / name
            if path.exists():
                found = path.read_bytes()
                if found != data:
                    raise _mismatch(path, found, data, "the checkpoint was trained with (rebuilt from this job's data)")
            else:
                _atomic_write(path, data)

    def read_run_file(self, info: dict[str, Any], name: str) -> bytes:
        """A run file for `predict`: the run directory's copy, refused unless its digest is the
        one `info` (the checkpoint's) gives; without a run directory, the bytes from `info`."""
        wanted = self.run_files(info)[name]
        if self.run_dir is None:
            return wanted
        from ..files.validation import read_run_bytes

        path = Path(self.run_dir) / name
        try:
            found = read_run_bytes(path)  # no symlink followed, bounded
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: missing; the run's own file is needed to read inputs the way it "
                                    "was trained (it is written when training starts)") from None
        if digest(found) != digest(wanted):
            raise _mismatch(path, found, wanted, "the checkpoint was trained with")
        return found

    def read_labelled(self, files: list[Path], info: dict[str, Any]) -> Split:
        """New labelled data for `lstm-train evaluate RUN_DIR FILE...`, read in the task's own
        formats and encoded with the run's `info` (its vocabulary, classes, normalisation), as
        the split the loop's batches are cut from: it is then scored through the test split's
        code path (`evaluate_sums`, `metrics`).  `files` are the paths given, files or folders (a
        format that is a folder: classify's image folders).  A file that cannot be read, or a label
        the run never saw, is a ValueError naming it; every file is read with a bound (bounded
        lines, sizes, pixel counts).  Default: the task cannot."""
        raise ValueError(f"task {self.name} cannot read labelled files for `evaluate`")

    def build_model(self, info: dict[str, Any]) -> nn.Module:
        """The model, built from `splits.info` alone: `predict` rebuilds it from the
        checkpoint's copy of that dict without loading any data.  What evaluation and
        decoding need from `info` besides weights (class groups, tag names, a vocabulary)
        the model is given here."""
        raise NotImplementedError

    def init_weights(self, model: nn.Module, info: dict[str, Any]) -> None:
        """Training only, after `build_model` and before the optimizer: weights that come
        from elsewhere than the checkpoint (pretrained vectors).  Default: none."""

    def primary(self, info: dict[str, Any]) -> str:
        """The primary metric of a run on this data: `primary_metric`, unless `info` names
        another (a tagger on BIO data is judged by entity F1)."""
        return str(info.get("primary_metric", self.primary_metric))

    def reported_metrics(self, info: dict[str, Any]) -> dict[str, str] | None:
        """The metrics `metrics` reports on this run's data (no prefix) and which way each is better
        ("min"/"max"): what `train.select.metric` may name.  Default: the data section's declaration
        (`DataBase.reported_metrics`, checked when the job is validated); a task whose metrics depend
        on what the data turned out to be narrows it here (a tagger's entity scores: BIO data only)."""
        return self.job.data.reported_metrics()

    def torch_dataset(self, train: bool) -> torch.utils.data.Dataset | None:
        """A classic Dataset for the DataLoader path, where the job asks for one (classify's
        `data.loader: torchvision`); None: batches are cut from the split tensors."""
        return None

    def loader_workers(self) -> int:
        """DataLoader workers for `torch_dataset` (classify's `data.num_workers`)."""
        return 0

    def lengths(self, split: Split) -> torch.Tensor | None:
        """Per-sample lengths for bucketing and token budgets (CPU int64 [N]); None for
        fixed-size samples.  Default: the longest ragged column of each sample."""
        return sample_lengths(split)

    def tokens(self, split: Split) -> torch.Tensor | None:
        """Per-sample token counts for throughput (CPU int64 [N]) when `throughput_unit` is
        tokens.  Default: the lengths of the first ragged column."""
        ragged = [c for c in split if isinstance(c, Ragged)]
        return ragged[0].lengths_cpu if ragged else None

    def batch(self, split: Split, indices: torch.Tensor) -> Batch:
        """The batch of `indices` (on the split's device).  Default: `gather`."""
        return gather(split, indices)

    # -- training and evaluation ---------------------------------------------------------

    def loss(self, model: nn.Module, batch: Batch, info: dict[str, Any]) -> torch.Tensor:
        """Mean training loss of one batch (grad enabled).  `info` is the run's `Splits.info`
        (a regression task's target scale, class weights): every hook that sees data sees it."""
        raise NotImplementedError

    def step_loss(self, model: nn.Module, batch: Batch, carry: dict[str, torch.Tensor], info: dict[str, Any]
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The training loss of one micro-batch and what it carries to the next step: the one
        generic hook for state that lives across steps (a language model's hidden state under
        truncated BPTT).  `carry` is what this micro-batch slot (this rank, this micro-batch
        index) returned at the previous step, empty at the start of every epoch; return it
        detached.  The loop keeps it per rank and saves it in checkpoints, so a resumed run
        continues with it.  Default: `loss`, nothing carried."""
        return self.loss(model, batch, info), {}

    def eval_sums(self, model: nn.Module, batch: Batch, info: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Additive statistics of one evaluation batch (no grad): e.g. loss_sum, correct, count."""
        raise NotImplementedError

    def eval_pieces(self, split: Split, batches: list[torch.Tensor]) -> Iterator[tuple[Split, list[torch.Tensor], float]]:
        """Parts of the evaluation of `split` over `batches` (split, batches, its share of the work), in
        an order that samples all of it: the time budget times a few to foresee how long a whole
        validation takes (`timelimit.probe`).  Default: one batch each, spread over the split.  A task
        whose one batch is a whole split (a language model's streams) cuts finer."""
        for i in spread(len(batches)):
            yield split, [batches[i]], 1 / len(batches)

    def metrics(self, sums: dict[str, float], info: dict[str, Any], prefix: str = "test_") -> dict[str, float]:
        """Turn summed statistics into metrics named `<prefix>loss`, `<prefix>accuracy`... (in
        the data's own units: `info` has what undoes a normalisation)."""
        raise NotImplementedError

    def evaluation_tables(self, model: nn.Module, info: dict[str, Any], step: int, run_dir: Path
                          ) -> dict[str, dict[str, Any]]:
        """Main process, after each validation: examples worth watching as training goes ({name:
        {"columns": [...], "rows": [[...]]}}, logged as W&B tables and metrics/<name>.tsv), e.g. a
        language model's samples.  Leave `model` in the mode it came in.  Default: none."""
        return {}

    # -- after training ------------------------------------------------------------------

    def finish(self, model: nn.Module, splits: Splits, run_dir: Path) -> dict[str, Any]:
        """Main process, after the final test evaluation, with the best weights: plots,
        baselines, prediction files.  Returns extra result.json keys.  Two keys are taken
        out for W&B instead: `images` ({name: PNG path}) and `tables` ({name: {"columns":
        [...], "rows": [[...], ...]}}, logged as W&B tables of examples)."""
        return {}

    def autocast(self, device: torch.device) -> torch.autocast:
        """The precision the loop trained and evaluated in (`train.mixed_precision` as it resolves
        it), for decoding in `finish` and `predict`: their outputs are then the ones the logged
        metrics measured."""
        return autocast(device, resolve_precision(self.job.train.mixed_precision, self.precision, device.type == "cpu"))

    def export_signature(self, batch: Batch, info: dict[str, Any]) -> ExportSignature:
        """The model's inputs for `lstm-train export`, made from a batch of this task's data.
        Only a task whose answer is one forward pass over tensors has one; decoders that loop
        over their own outputs (beam search, greedy decoding until an end token) do not."""
        raise ValueError(f"task {self.name} cannot be exported: its predictions are not one forward pass "
                         f"with a fixed input signature (exportable: classify, text_classify, tag, forecast)")

    def predict(self, model: nn.Module, info: dict[str, Any], inputs: list[str], options: dict[str, Any]) -> list[str]:
        """Lines to print for `lstm-train predict RUN_DIR INPUT...` (stdout: nothing else goes
        there).  Inputs through `predict_texts` or `predict_files`."""
        raise NotImplementedError(f"task {self.name} has no predict")


class LoadedStream:
    """The default `Stream`: the task's `load_data` as one piece, written whole, in the preparing process
    (`in_process`: load_data may use torch, which a forked worker must not, and its info need not be JSON)."""

    in_process = True

    def __init__(self, task: Task) -> None:
        self.task = type(task)(task.job, None)  # nothing of a run goes into a shared entry

    def pieces(self) -> list[Piece]:
        return [Piece(0, f"{self.task.name}.load_data", 0, 0)]

    def scan(self, piece: Piece) -> dict[str, Any]:
        return {}

    def plan(self, scan: dict[str, Any]) -> dict[str, Any]:
        return {}

    def encode(self, piece: Piece, plan: dict[str, Any], out: EntryWriter) -> dict[str, Any]:
        splits = self.task.load_data()
        for name in ("train", "val", "test"):
            for i, column in enumerate(getattr(splits, name) or ()):
                out.put(name, i, column)
        return {"info": splits.info}

    def info(self, plan: dict[str, Any], counts: list[dict[str, Any]]) -> dict[str, Any]:
        return counts[0]["info"]


def spread(n: int) -> list[int]:
    """0..n-1 in an order whose every beginning samples the whole range evenly (golden-ratio steps):
    a probe that stops early has still seen the start, the middle and the end."""
    order = list(dict.fromkeys(int((k * 0.6180339887498949) % 1.0 * n) for k in range(n)))
    return order + sorted(set(range(n)) - set(order))


def evaluate_sums(task: Task, model: nn.Module, split: Split, batches: Iterable[torch.Tensor],
                  precision_context: Any, info: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The one evaluation pass (the loop's, `evaluate`'s and the bench's): `task.eval_sums` of each batch of
    `split`, summed in float64, under no_grad and the given autocast, the model in eval mode
    (and back in train mode after)."""
    sums: dict[str, torch.Tensor] = {}
    model.eval()
    with torch.no_grad(), precision_context:
        for indices in batches:
            for key, value in task.eval_sums(model, task.batch(split, indices), info).items():
                sums[key] = sums.get(key, 0) + value.double()
    model.train()
    return sums
