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
checkpoints as `vocab.json` (a run file: a resumed run refuses one its data does
not give, `predict` one that is not the checkpoint's).

Columns: a `Ragged` of token ids and a dense label tensor.  Metrics: accuracy
(primary), macro-F1 and the confusion matrix, all from additive per-batch
counts; `finish` draws the test confusion matrix (confusion_matrix.png, also
sent to W&B) and lists it and the per-class counts in result.json
(`test_confusion_matrix`, `test_per_class`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data.readers import textfiles
from ..data.streams import text_classify
from ..data.readers.embeddings import read_vectors
from ..data.ragged import Padded, Ragged
from ..data.vocab import Vocab
from ..models.text import TextClassifier
from .base import ExportSignature, Split, Splits, Task, note, predict_texts
from .registry import BUILTIN_TASKS
from .confusion import confusion_plot, per_class

VOCAB_FILE = "vocab.json"
CONFUSION_PNG = "confusion_matrix.png"
# Above this many classes the evaluation keeps per-class counts instead of every cell, and no
# figure or full matrix is written: a 1,000-class job must not cost classes squared (or a
# figure matplotlib refuses) before its result.json.
CONFUSION_CLASSES = 50




class TextClassifyTask(Task):
    registration = BUILTIN_TASKS["text_classify"]
    throughput_unit = "tokens"

    # ------------------------------------------------------------------ data

    def source_files(self) -> list[Path]:
        """The files the stream reads (the prepared-data store's key)."""
        data = self.job.data
        if data.source == "files":
            files = [Path(p).expanduser() for p in (data.path, data.train_path, data.val_path, data.test_path) if p]
        else:
            folder = Path(data.root).expanduser() / "SST" / "trees"
            files = [folder / f"{name}.txt" for name in ("train", "dev", "test")]
        return files

    def stream_data(self) -> Any:
        """The preparation as a `Stream` (pieces, scan, plan, encode, info: data/streams/base.py) that the
        store runs on every core or as a SLURM job array; SST and the user's files alike."""
        return text_classify.TextStream(self.job.data)

    def run_files(self, info: dict[str, Any]) -> dict[str, bytes]:
        return {VOCAB_FILE: info["vocab"].encode("utf-8")}

    def build_model(self, info: dict[str, Any]) -> nn.Module:
        m = self.job.model
        groups = info.get("output_groups")
        outputs = 1 + max(max(g) for g in groups) if groups else len(info["classes"])
        model = TextClassifier(info["vocab_size"], m.embedding_dim, m.hidden_size, m.num_layers, outputs,
                               m.bidirectional, m.dropout, m.pooling, m.embedding_dropout, m.word_dropout,
                               m.sparse_embeddings, output_groups=groups)
        if m.embeddings.freeze:
            model.embedding.weight.requires_grad_(False)
        return model

    def init_weights(self, model: nn.Module, info: dict[str, Any]) -> None:
        """Pretrained vectors (`model.embeddings.path`) for the words of the run's vocabulary."""
        m = self.job.model
        if m.embeddings.path:
            pretrained = read_vectors(m.embeddings.path, Vocab.from_json(info["vocab"]), m.embedding_dim)
            note(pretrained.summary())
            model.load_vectors(pretrained.vectors, pretrained.found, m.embeddings.freeze)

    # ------------------------------------------------------------------ training and evaluation

    def loss(self, model: nn.Module, batch: tuple[Padded, torch.Tensor], info: dict[str, Any]) -> torch.Tensor:
        tokens, labels = batch
        return F.cross_entropy(model(tokens.data, tokens.lengths), labels)

    def eval_sums(self, model: nn.Module, batch: tuple[Padded, torch.Tensor],
                  info: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Loss, counts and every cell of the confusion matrix (true i, predicted j): all additive."""
        tokens, labels = batch
        logits = model.class_logits(tokens.data, tokens.lengths)
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

    def metrics(self, sums: dict[str, float], info: dict[str, Any], prefix: str = "test_") -> dict[str, float]:
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
                               forward=TextClassifier.class_logits,
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
        accuracy = float(matrix.trace()) / max(int(matrix.sum()), 1)
        many = len(classes) > CONFUSION_CLASSES
        if many:
            note(f"{len(classes):,} classes: no confusion matrix figure or table (over {CONFUSION_CLASSES}); "
                       "test_per_class in result.json has every class's counts")
        else:
            png = confusion_plot(matrix, classes, Path(run_dir) / CONFUSION_PNG,
                                 f"test: accuracy {accuracy:.4f} on {int(matrix.sum())} texts")
        vocab = Vocab.from_json(splits.info["vocab"])
        tokens: Ragged = splits.test[0]
        wrong = (predicted != labels).nonzero()[:, 0][:100].tolist()
        rows = [[" ".join(vocab.words(tokens[i].tolist())), classes[labels[i]], classes[predicted[i]],
                 round(float(probs[i, predicted[i]]), 4)] for i in wrong]
        return {
            **({} if many else {"test_confusion_matrix": {"classes": classes,
                                                          "rows_true_columns_predicted": matrix.tolist()}}),
            "test_per_class": per_class(matrix, classes),
            **({} if many else {"images": {"confusion_matrix": png}}),
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
                logits = model.class_logits(padded.data.to(device), padded.lengths.to(device))
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
        file = options.get("file")
        table = bool(file) and Path(file).suffix.lower() in textfiles.FORMATS
        if not table:
            texts, labels = predict_texts(inputs, options), []
        else:
            texts = predict_texts(inputs, {**options, "file": None}) if inputs or options.get("text") else []
            file_texts, labels = self._predict_file(Path(file), info)
            texts += file_texts
        vocab = Vocab.from_json(self.read_run_file(info, VOCAB_FILE).decode("utf-8"), VOCAB_FILE)
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

    def read_labelled(self, files: list[Path], info: dict[str, Any]) -> Split:
        """CSV / TSV / JSON Lines files with the job's text and label columns, for `evaluate`: words
        as the run's data was read (an SST run's treebank tokens are space-separated, so they are
        split at spaces), ids from the run's vocab.json, cut at the run's max_length."""
        data = self.job.data
        texts: list[str] = []
        labels: list[int] = []
        for path in files:
            table = textfiles.read_table(path, data.text_column, data.label_column, "auto", data.encoding)
            labels += textfiles.label_ids(table, info["classes"], "the run's training data")
            texts += table.texts
        rule = info.get("tokenizer", "words") if data.source == "files" else "whitespace"
        vocab = Vocab.from_json(self.read_run_file(info, VOCAB_FILE).decode("utf-8"), VOCAB_FILE)
        ids = vocab.encode_batch(textfiles.split_words(texts, rule))
        limit = info.get("max_length")
        return Ragged.from_sequences([s[:limit] for s in ids] if limit else ids), torch.tensor(labels, dtype=torch.long)

    def _predict_file(self, path: Path, info: dict[str, Any]) -> tuple[list[str], list[str]]:
        """Texts (and labels, if the file has the label column) of a CSV/TSV/JSONL --file."""
        data = self.job.data
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


TASK = TextClassifyTask
