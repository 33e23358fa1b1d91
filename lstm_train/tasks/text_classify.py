"""Classify texts: sentiment on the Stanford Sentiment Treebank, or labels in a user's own files.

Sources (`data.source`):
* `sst2` / `sst5`: the SST trees under `<data.root>/SST/trees/`.  Training uses
  every labelled phrase of the train trees (`data.phrases`, the standard protocol)
  or only the sentences; validation (dev) and test are always whole sentences.
* `files`: CSV, TSV or JSON Lines with a text and a label column
  (`data.text_column`, `data.label_column`): one file per split
  (`data.train_path`, `data.val_path`, `data.test_path`), or one file
  (`data.path`) cut at random into `data.val_fraction` / `data.test_fraction`
  with `data.split_seed`.  The classes are the train file's labels.

Words index a vocabulary trained on the train split (`lstm_train.data.vocab`,
lower-cased, `data.min_freq`, `data.max_vocab`); texts longer than
`data.max_length` words are cut, and the log says how many.  The vocabulary
travels in `Splits.info` (so in every checkpoint) and is written beside the
checkpoints as `vocab.json`; `predict` and a resumed run read that file and
refuse one that is not the checkpoint's (digest).

Columns: a `Ragged` of token ids and a dense label tensor.  Metrics: accuracy
(primary), macro-F1 and the confusion matrix, all from additive per-batch
counts; `finish` draws the test confusion matrix (confusion_matrix.png, also
sent to W&B) and lists per-class counts in result.json.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from .. import checkpoint, runfiles
from ..runfiles import CHECKPOINTS
from ..data import sst, textfiles
from ..data.embeddings import read_vectors
from ..data.ragged import Padded, Ragged
from ..data.textfiles import TextDataError
from ..data.vocab import Vocab
from ..models.text import TextClassifier
from ..schema import ModelBase, Section, SequenceData, default_data_root
from .base import ExportSignature, Split, Splits, Task

VOCAB_FILE = "vocab.json"
CONFUSION_PNG = "confusion_matrix.png"
# Above this many classes the evaluation keeps per-class counts instead of every cell, and no
# figure or full matrix is written: a 1,000-class job must not cost classes squared (or a
# figure matplotlib refuses) before its result.json.
CONFUSION_CLASSES = 50


class TextData(SequenceData):
    source: Literal["sst2", "sst5", "files"] = "sst2"
    root: str = Field(default_factory=default_data_root, description="sst: the trees are in <root>/SST/trees")
    phrases: bool = Field(True, description="sst: train on every labelled phrase (deduplicated); false: sentences only")
    train_labels: Literal["binary", "fine"] = Field(
        "binary", description="sst2: fine trains on the five-way labels (neutral phrases included) and answers "
        "positive / negative by P(3)+P(4) vs P(0)+P(1)"
    )
    path: str | None = Field(None, description="files: one file, split by val_fraction / test_fraction")
    train_path: str | None = Field(None, description="files: the train file (with test_path, optional val_path)")
    val_path: str | None = None
    test_path: str | None = None
    format: Literal["auto", "csv", "tsv", "jsonl", "parquet", "hf"] = Field(
        "auto", description="auto: from the file name's suffix (a datasets save_to_disk folder: hf)")
    text_column: str = Field("text", description="files: column (JSON key) holding the text")
    label_column: str = Field("label", description="files: column (JSON key) holding the label")
    encoding: str = "utf-8"
    val_fraction: float = Field(0.1, ge=0, lt=1, description="data.path: share of rows for validation")
    test_fraction: float = Field(0.1, gt=0, lt=1, description="data.path: share of rows for test")
    split_seed: int = 0
    tokenizer: Literal["words", "whitespace"] = Field(
        "words", description="files and predict: words (punctuation and clitics apart) or whitespace"
    )
    lowercase: bool = True
    min_freq: int = Field(1, ge=1, description="words seen fewer times in train read as <unk>")
    max_vocab: int | None = Field(None, ge=5, description="keep the most frequent words (specials included)")
    max_length: int | None = Field(256, ge=1, description="cut texts after this many words (counted in the log)")

    @model_validator(mode="after")
    def _paths(self) -> TextData:
        given = {k: getattr(self, k) for k in ("path", "train_path", "val_path", "test_path") if getattr(self, k)}
        if self.train_labels == "fine" and self.source != "sst2":
            raise ValueError("data.train_labels = 'fine' is for data.source = 'sst2' (sst5 is fine-grained already)")
        if self.source != "files":
            if given:
                raise ValueError(f"{', '.join('data.' + k for k in given)}: only for data.source = 'files'")
            return self
        if self.path and len(given) > 1:
            raise ValueError("data.path (one file, split by fraction) or data.train_path/val_path/test_path, not both")
        if not self.path and not (self.train_path and self.test_path):
            raise ValueError("data.source = 'files' needs data.path, or data.train_path and data.test_path")
        return self


class EmbeddingsConfig(Section):
    path: str | None = Field(None, description="GloVe / word2vec text file; its dimension must be model.embedding_dim")
    freeze: bool = Field(False, description="keep the whole embedding table fixed (else fine-tuned)")


class TextModel(ModelBase):
    hidden_size: int = Field(150, ge=1, description="LSTM units per direction")
    bidirectional: bool = True
    embedding_dim: int = Field(300, ge=1)
    pooling: Literal["last", "max", "mean"] = "max"
    embedding_dropout: float = Field(0.0, ge=0, lt=1)
    word_dropout: float = Field(0.0, ge=0, lt=1, description="share of training words replaced by <unk>")
    embeddings: EmbeddingsConfig = EmbeddingsConfig()
    sparse_embeddings: bool = Field(
        False, description="sparse gradients for the embedding table, updated by SparseAdam (only the batch's rows); "
        "CPU and gloo only: NCCL cannot all-reduce sparse gradients"
    )


def main_print(message: str) -> None:
    """Data notes once per launch, not once per process."""
    if os.environ.get("RANK", "0") == "0":
        print(message, flush=True)


def run_vocab(run_dir: Path, info: dict[str, Any]) -> Vocab:
    """The run's own vocabulary file, checked against the checkpoint's digest."""
    path = Path(run_dir) / VOCAB_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; the run's vocabulary is needed to read text the way it was trained")
    vocab = Vocab.load(path)
    vocab.check_matches(info["vocab_digest"], str(path))
    return vocab


class TextClassifyTask(Task):
    name = "text_classify"
    Data = TextData
    Model = TextModel
    throughput_unit = "tokens"

    # ------------------------------------------------------------------ data

    def source_files(self) -> list[Path]:
        """The files load_data reads (the prepared-data store's key)."""
        data = self.job.data
        if data.source == "files":
            files = [Path(p).expanduser() for p in (data.path, data.train_path, data.val_path, data.test_path) if p]
        else:
            folder = Path(data.root).expanduser() / "SST" / "trees"
            files = [folder / f"{name}.txt" for name in ("train", "dev", "test")]
        return files

    def load_data(self) -> Splits:
        data = self.job.data
        groups = None
        if data.source == "files":
            words, labels, classes = self._read_files()
        else:
            words, labels, classes, groups = self._read_sst()
        vocab = self._vocab(words["train"])
        columns: dict[str, Split] = {}
        for split, texts in words.items():
            ids = vocab.encode_batch(texts)
            ids = self._truncate(ids, split)
            columns[split] = (Ragged.from_sequences(ids), torch.tensor(labels[split], dtype=torch.long))
        info = {
            "classes": classes,
            "vocab": vocab.to_json(),
            "vocab_digest": vocab.digest,
            "vocab_size": len(vocab),
            "tokenizer": data.tokenizer,
            "max_length": data.max_length,
            "output_groups": groups,
        }
        sizes = ", ".join(f"{k} {len(v[1]):,}" for k, v in columns.items())
        main_print(f"{data.source}: {sizes} texts; {len(classes)} classes; vocabulary {len(vocab):,} words")
        self.pretrained = None
        if self.job.model.embeddings.path:
            self.pretrained = read_vectors(self.job.model.embeddings.path, vocab, self.job.model.embedding_dim)
            main_print(self.pretrained.summary())
        return Splits(train=columns["train"], val=columns.get("val"), test=columns["test"], info=info)

    def _read_sst(self) -> tuple[dict[str, list[list[str]]], dict[str, list[int]], list[str], list[list[int]] | None]:
        """Train, dev (val) and test; with `train_labels: fine` the train labels are 0-4 and
        the model's five outputs are grouped into negative (0, 1) and positive (3, 4)."""
        data = self.job.data
        classes = 2 if data.source == "sst2" else 5
        fine = data.train_labels == "fine"
        folder = Path(data.root).expanduser() / "SST" / "trees"
        words, labels = {}, {}
        for split, name in (("train", "train"), ("val", "dev"), ("test", "test")):
            read_as = 5 if fine and split == "train" else classes
            words[split], labels[split] = sst.read_sst(folder / f"{name}.txt", read_as, data.phrases and split == "train")
        return words, labels, sst.CLASS_NAMES[classes], ([[0, 1], [3, 4]] if fine else None)

    def _read_files(self) -> tuple[dict[str, list[list[str]]], dict[str, list[int]], list[str]]:
        data = self.job.data
        read = lambda p: textfiles.read_table(p, data.text_column, data.label_column, data.format, data.encoding)  # noqa: E731
        if data.path:
            tables = dict(zip(("train", "val", "test"), textfiles.split_by_fraction(
                read(data.path), data.val_fraction, data.test_fraction, data.split_seed)))
        else:
            tables = {"train": read(data.train_path), "val": read(data.val_path) if data.val_path else None,
                      "test": read(data.test_path)}
        tables = {k: t for k, t in tables.items() if t is not None}
        classes = textfiles.label_classes(tables["train"].labels)
        words = {k: textfiles.split_words(t.texts, data.tokenizer) for k, t in tables.items()}
        labels = {k: textfiles.label_ids(t, classes, tables["train"].path) for k, t in tables.items()}
        return words, labels, classes

    def _vocab(self, train_words: list[list[str]]) -> Vocab:
        """The run's vocabulary when resuming (its file, checked against the newest checkpoint's
        digest), else one trained on the train texts."""
        saved = self.run_dir / VOCAB_FILE if self.run_dir is not None else None
        if saved is not None and saved.is_file():
            vocab = Vocab.load(saved)
            found = checkpoint.load_latest(self.run_dir / CHECKPOINTS)
            if found is not None:
                vocab.check_matches(found[1].task_info["vocab_digest"], str(saved))
            main_print(f"vocabulary: {saved} (the run's own)")
            return vocab
        data = self.job.data
        return Vocab.train(train_words, lowercase=data.lowercase, min_freq=data.min_freq, max_size=data.max_vocab)

    def _truncate(self, ids: list[list[int]], split: str) -> list[list[int]]:
        limit = self.job.data.max_length
        long = [len(s) for s in ids if limit and len(s) > limit]
        if long:
            main_print(f"{split}: cut {len(long):,} of {len(ids):,} texts to data.max_length={limit} words "
                       f"(the longest had {max(long):,})")
            ids = [s[:limit] for s in ids]
        return ids

    def write_run_files(self, run_dir: Path, info: dict[str, Any]) -> None:
        """vocab.json beside the checkpoints (atomic), for predict and resumed runs."""
        path = Path(run_dir) / VOCAB_FILE
        if path.is_file():  # a resumed run: the data's vocabulary must still be the run's
            Vocab.load(path).check_matches(info["vocab_digest"], str(path))
            return
        runfiles.write_atomic(path, info["vocab"])

    def build_model(self, info: dict[str, Any]) -> nn.Module:
        m = self.job.model
        self.output_groups = info.get("output_groups")
        outputs = 1 + max(max(g) for g in self.output_groups) if self.output_groups else len(info["classes"])
        model = TextClassifier(info["vocab_size"], m.embedding_dim, m.hidden_size, m.num_layers, outputs,
                               m.bidirectional, m.dropout, m.pooling, m.embedding_dropout, m.word_dropout,
                               m.sparse_embeddings)
        pretrained = getattr(self, "pretrained", None)
        if pretrained is None and m.embeddings.path:  # data mapped from the store: load_data did not run
            pretrained = self.pretrained = read_vectors(m.embeddings.path, Vocab.from_json(info["vocab"]), m.embedding_dim)
            main_print(pretrained.summary())
        if pretrained is not None:
            model.load_vectors(pretrained.vectors, pretrained.found, m.embeddings.freeze)
        elif m.embeddings.freeze:
            model.embedding.weight.requires_grad_(False)
        return model

    # ------------------------------------------------------------------ training and evaluation

    def class_logits(self, model: nn.Module, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits over the evaluated classes: the model's own, or with `output_groups` each class's
        log of summed probability over its outputs (SST-2 read off a five-way model; neutral's
        share is left out and the two renormalised)."""
        logits = model(ids, lengths)
        groups = getattr(self, "output_groups", None)
        if not groups:
            return logits
        return torch.stack([logits[:, group].logsumexp(1) for group in groups], 1)

    def loss(self, model: nn.Module, batch: tuple[Padded, torch.Tensor]) -> torch.Tensor:
        tokens, labels = batch
        return F.cross_entropy(model(tokens.data, tokens.lengths), labels)

    def eval_sums(self, model: nn.Module, batch: tuple[Padded, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Loss, counts and every cell of the confusion matrix (true i, predicted j): all additive."""
        tokens, labels = batch
        logits = self.class_logits(model, tokens.data, tokens.lengths)
        classes = logits.shape[1]
        sums = {
            "loss_sum": F.cross_entropy(logits, labels, reduction="sum"),
            "count": torch.tensor(len(labels), device=labels.device),
            "correct": (logits.argmax(1) == labels).sum(),
        }
        if classes > CONFUSION_CLASSES:  # per-class counts (enough for macro-F1): linear, not squared
            predicted = logits.argmax(1)
            for name, values in (("true", labels), ("pred", predicted), ("hit", labels[predicted == labels])):
                for i, n in enumerate(torch.bincount(values, minlength=classes)):
                    sums[f"{name}_{i}"] = n
            return sums
        cells = torch.bincount(labels * classes + logits.argmax(1), minlength=classes * classes)
        for cell, n in enumerate(cells):
            sums[f"confusion_{cell // classes}_{cell % classes}"] = n
        return sums

    def metrics(self, sums: dict[str, float], prefix: str = "test_") -> dict[str, float]:
        count = max(sums["count"], 1)
        f1 = macro_f1(confusion_from_sums(sums)) if "confusion_0_0" in sums else macro_f1_of_counts(sums)
        return {
            f"{prefix}loss": sums["loss_sum"] / count,
            f"{prefix}accuracy": sums["correct"] / count,
            f"{prefix}macro_f1": f1,
            f"{prefix}samples": int(sums["count"]),
        }

    def export_signature(self, batch: tuple[Padded, torch.Tensor], info: dict[str, Any]) -> ExportSignature:
        """Word ids int64 [batch, words] (0 after each text's end; vocab.json maps words to ids) and
        lengths int64 [batch] -> logits over the classes (class_logits: SST-2 read off a five-way
        model is grouped inside the graph too)."""
        tokens = batch[0]
        return ExportSignature({"ids": tokens.data.long(), "lengths": tokens.lengths.long()},
                               {"ids": {0: "batch", 1: "words"}, "lengths": {0: "batch"}}, ["logits"],
                               forward=self.class_logits,
                               metadata={"classes": info["classes"], "tokenizer": info.get("tokenizer"),
                                         "lowercase": self.job.data.lowercase, "max_length": info.get("max_length"),
                                         "vocabulary": VOCAB_FILE})

    # ------------------------------------------------------------------ after training

    def finish(self, model: nn.Module, splits: Splits, run_dir: Path) -> dict[str, Any]:
        """The test confusion matrix (PNG + result.json), per-class counts and a table of misread texts."""
        classes = splits.info["classes"]
        probs = self._probabilities(model, splits.test)
        labels = splits.test[1].cpu()
        predicted = probs.argmax(1)
        matrix = torch.bincount(labels * len(classes) + predicted, minlength=len(classes) ** 2).reshape(len(classes), -1)
        png = Path(run_dir) / CONFUSION_PNG
        many = len(classes) > CONFUSION_CLASSES
        if many:
            main_print(f"{len(classes):,} classes: no confusion matrix figure or table (over {CONFUSION_CLASSES}); "
                       "per_class in result.json has every class's counts")
        else:
            draw_confusion(matrix, classes, png)
        vocab = Vocab.from_json(splits.info["vocab"])
        tokens: Ragged = splits.test[0]
        wrong = (predicted != labels).nonzero()[:, 0][:100].tolist()
        rows = [[" ".join(vocab.words(tokens[i].tolist())), classes[labels[i]], classes[predicted[i]],
                 round(float(probs[i, predicted[i]]), 4)] for i in wrong]
        return {
            **({} if many else {"confusion_matrix": {"classes": classes, "rows_true_columns_predicted": matrix.tolist()}}),
            "per_class": per_class(matrix, classes),
            **({} if many else {"images": {"confusion_matrix": str(png)}}),
            "tables": {"test_errors": {"columns": ["text", "label", "predicted", "probability"], "rows": rows}},
        }

    def _probabilities(self, model: nn.Module, split: Split, batch_size: int | None = None) -> torch.Tensor:
        """Softmax of every sample of a split, in its order (CPU float32 [N, classes])."""
        device = next(model.parameters()).device
        batch_size = batch_size or self.job.data.eval_batch_size
        tokens: Ragged = split[0]
        order = torch.argsort(tokens.lengths_cpu)  # similar lengths together: little padding
        out = torch.empty(len(tokens), 0)
        chunks = []
        was_training = model.training
        model.eval()
        with torch.no_grad(), self.autocast(device):
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                padded = tokens.pad(idx.to(tokens.device))
                logits = self.class_logits(model, padded.data.to(device), padded.lengths.to(device))
                chunks.append(logits.float().softmax(1).cpu())
        model.train(was_training)
        if chunks:
            out = torch.empty(len(tokens), chunks[0].shape[1])
            out[order] = torch.cat(chunks)
        return out

    def predict(self, model: nn.Module, info: dict[str, Any], inputs: list[str], options: dict[str, Any]) -> list[str]:
        """Label, probability and text, one line each: --text (repeatable) and --file (one text per
        line; or a CSV/TSV/JSONL file with the job's text column, and when it also has the label
        column, an accuracy line at the end)."""
        if inputs:
            raise ValueError(f'texts go in --text "..." or --file FILE, not as arguments ({inputs[0]!r})')
        texts = list(options.get("text") or [])
        for i, text in enumerate(texts, 1):
            if not text.strip():
                raise TextDataError(f"--text number {i} is empty")
        labels: list[str] = []
        if options.get("file"):
            file_texts, labels = self._predict_file(Path(options["file"]), info)
            texts += file_texts
        if not texts:
            raise ValueError('give texts to classify: lstm-train predict RUN_DIR --text "..." or --file lines.txt')
        vocab = run_vocab(self.run_dir, info) if self.run_dir is not None else Vocab.from_json(info["vocab"])
        ids = vocab.encode_batch(textfiles.split_words(texts, info.get("tokenizer", "words")))
        ids, texts = textfiles.cut_for_prediction(ids, texts, info.get("max_length"))
        probs = self._probabilities(model, (Ragged.from_sequences(ids),), batch_size=256)
        p, k = probs.max(1)
        classes = info["classes"]
        lines = [f"{classes[int(c)]}\t{float(q):.4f}\t{text}" for c, q, text in zip(k, p, texts)]
        if labels:
            known = {c: i for i, c in enumerate(classes)}
            predicted = k[len(texts) - len(labels):].tolist()
            right = sum(c == known[label] for c, label in zip(predicted, labels))
            lines.append(f"accuracy {right / len(labels):.4f} ({right} of {len(labels)} in {options['file']})")
        return lines

    def _predict_file(self, path: Path, info: dict[str, Any]) -> tuple[list[str], list[str]]:
        """Texts (and labels, if the file has the label column) of a --file."""
        data = self.job.data
        if path.suffix.lower() not in textfiles.FORMATS:  # plain text: one per line
            lines = textfiles.read_prediction_lines(path, data.encoding)
            for n, line in enumerate(lines, 1):
                if not line.strip():
                    raise TextDataError(f"{path}:{n}: empty line (one text per line)")
            return [line.rstrip("\r") for line in lines], []
        table = textfiles.read_table(path, data.text_column, None, "auto", data.encoding)
        if data.label_column in table.columns:
            table = textfiles.read_table(path, data.text_column, data.label_column, "auto", data.encoding)
            textfiles.label_ids(table, info["classes"], "the run's training data")  # unknown labels: an error
        return table.texts, table.labels


def confusion_from_sums(sums: dict[str, float]) -> torch.Tensor:
    cells = {k: v for k, v in sums.items() if k.startswith("confusion_")}
    classes = math.isqrt(len(cells))
    matrix = torch.zeros(classes, classes, dtype=torch.float64)
    for key, value in cells.items():
        i, j = key.removeprefix("confusion_").split("_")
        matrix[int(i), int(j)] = value
    return matrix


def macro_f1_of_counts(sums: dict[str, float]) -> float:
    """macro_f1 from per-class sums true_<i>, pred_<i>, hit_<i> (the many-class evaluation)."""
    classes = sum(1 for k in sums if k.startswith("true_"))
    scores = [2 * sums[f"hit_{i}"] / d if (d := sums[f"true_{i}"] + sums[f"pred_{i}"]) else 0.0 for i in range(classes)]
    return sum(scores) / classes if classes else 0.0


def macro_f1(matrix: torch.Tensor) -> float:
    """Mean over classes of 2*precision*recall/(precision+recall); a class never predicted
    nor present counts 0 (as scikit-learn's zero_division=0)."""
    if matrix.numel() == 0:
        return 0.0
    matrix = matrix.double()
    hits = matrix.diagonal()
    denominator = matrix.sum(0) + matrix.sum(1)  # predicted + true
    f1 = torch.where(denominator > 0, 2 * hits / denominator.clamp_min(1e-12), torch.zeros_like(hits))
    return float(f1.mean())


def per_class(matrix: torch.Tensor, classes: list[str]) -> dict[str, dict[str, float]]:
    out = {}
    for i, name in enumerate(classes):
        support, predicted, correct = int(matrix[i].sum()), int(matrix[:, i].sum()), int(matrix[i, i])
        f1 = 2 * correct / (support + predicted) if support + predicted else 0.0
        out[name] = {"support": support, "predicted": predicted, "correct": correct,
                     "recall": correct / support if support else 0.0, "f1": round(f1, 4)}
    return out


def draw_confusion(matrix: torch.Tensor, classes: list[str], path: Path) -> None:
    """Counts with rows = true class, columns = predicted, shaded by share of the row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = matrix.numpy()
    shares = counts / counts.sum(1, keepdims=True).clip(min=1)
    size = 1.2 + 0.9 * len(classes)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center",
                    color="white" if shares[i, j] > 0.5 else "black")
    accuracy = counts.trace() / max(counts.sum(), 1)
    ax.set_title(f"test: accuracy {accuracy:.4f} on {int(counts.sum())} texts")
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true class")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


TASK = TextClassifyTask
