"""Sequence labelling: one tag per word (part of speech, named entities, chunks), the tutorial's
equal-length sequence to sequence.

Data: Universal Dependencies CoNLL-U (any tag column: upos, xpos, deprel...) or
whitespace-column files (CoNLL-2000/2003 style, BIO/IOB tags), see
`lstm_train.data.conll`.  The train split defines the word vocabulary
(lower-cased), the character vocabulary (cased) and the tag set; the columns are
`Ragged` word ids, per-word character rows and tag ids (`lstm_train.data.tagging`).

Model: word embedding + character CNN/BiLSTM -> BiLSTM -> softmax or CRF
(`lstm_train.models.tagger`).  Padding never scores.

Metrics: token accuracy (the primary metric), accuracy on words seen and unseen
in training, tags the training split never had (counted, always wrong); for
BIO/IOB data entity precision/recall/F1 as conlleval/seqeval compute them (then
the primary metric).  `finish` adds per-tag counts and a confusion plot of the
most confused tags.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from .. import runfiles
from ..data import conll, tagging
from ..data.conll import ConllError, TaggedSentence
from ..data.ragged import Padded, gather
from ..data.textio import read_utf8
from ..data.vocab import UNK, Vocab
from ..entities import entity_counts, invalid_transitions, is_bio, precision_recall_f1
from ..models.tagger import Tagger
from ..schema import ModelBase, SequenceData, default_data_root
from .base import Batch, ExportSignature, Split, Splits, Task

EWT = "UD_English-EWT/en_ewt-ud-"
RUN_FILES = {"words": "vocab_words.json", "chars": "vocab_chars.json"}


class TagData(SequenceData):
    root: str = Field(default_factory=default_data_root, description="relative paths are read from here")
    train: str = Field(EWT + "train.conllu", description="training file (CoNLL-U or whitespace columns)")
    val: str | None = Field(EWT + "dev.conllu", description="validation file (model selection); null: none")
    test: str = Field(EWT + "test.conllu", description="test file, evaluated once at the end")
    format: Literal["auto", "conllu", "columns"] = Field(
        "auto", description="auto: CoNLL-U for *.conllu files, else whitespace columns"
    )
    column: str | int | None = Field(
        None, description="tag column: a CoNLL-U field (upos, xpos, deprel, feats...; default upos) or a column "
                          "number of a whitespace-column file (default -1, the last)"
    )
    scheme: Literal["auto", "bio", "none"] = Field(
        "auto", description="bio: entity precision/recall/F1 too (primary metric: entity F1); auto: bio when "
                            "every training tag is O or B-/I-/E-/S-TYPE"
    )
    lowercase: bool = Field(True, description="lower-case words for the word vocabulary (characters keep case)")
    min_freq: int = Field(1, ge=1, description="words seen fewer times in training read as <unk>")
    max_chars: int = Field(24, ge=3, description="characters per word row incl. <bos>/<eos>; longer words keep "
                                                 "their first and last characters")
    batch_size: int = Field(32, ge=1, description="sentences per batch per process")
    eval_batch_size: int = Field(256, ge=1)

    def path(self, name: str) -> Path:
        path = Path(getattr(self, name))
        return path if path.is_absolute() else Path(self.root) / path


class TagModel(ModelBase):
    hidden_size: int = Field(200, ge=1, description="sentence BiLSTM size per direction")
    num_layers: int = Field(2, ge=1)
    bidirectional: bool = True
    dropout: float = Field(0.33, ge=0.0, lt=1.0, description="on the BiLSTM's inputs, between layers and on its output")
    word_dim: int = Field(100, ge=1)
    char_encoder: Literal["cnn", "lstm", "none"] = "cnn"
    char_dim: int = Field(50, ge=1, description="character embedding size")
    char_size: int = Field(100, ge=1, description="char CNN filters, or char BiLSTM size per direction")
    char_kernel: int = Field(3, ge=1, description="char CNN window (odd)")
    word_dropout: float = Field(
        0.25, ge=0.0, description="alpha: a training word reads as <unk> with probability alpha / (alpha + its "
                                  "count), so rare words teach the <unk> path (0: off)"
    )
    crf: bool = Field(False, description="a linear-chain CRF over the tag scores (Viterbi decoding)")

    @model_validator(mode="after")
    def _kernel(self) -> TagModel:
        if self.char_kernel % 2 == 0:
            raise ValueError(f"char_kernel must be odd (centred windows), got {self.char_kernel}")
        return self


class TagTask(Task):
    name = "tag"
    Data = TagData
    Model = TagModel
    primary_metric = "accuracy"  # "entity_f1" on BIO data: set per instance once the scheme is known
    throughput_unit = "tokens"

    def __init__(self, job: Any, run_dir: Path | None = None) -> None:
        super().__init__(job, run_dir)
        self.info: dict[str, Any] = {}  # Splits.info, kept by load_data / build_model for metrics and predict
        if job.data.scheme == "bio":
            self.primary_metric = "entity_f1"

    # -- data and model ---------------------------------------------------------------

    def read(self, name: str, with_tags: bool = True) -> list[TaggedSentence]:
        data = self.job.data
        return conll.read_tagged(data.path(name), data.format, data.column, with_tags)

    def source_files(self) -> list[Path]:
        data = self.job.data
        return [data.path(name) for name in ("train", "val", "test") if getattr(data, name)]

    def load_data(self) -> Splits:
        data = self.job.data
        train = self.read("train")
        val = self.read("val") if data.val else None
        test = self.read("test")
        tags = tagging.tag_list(train)
        scheme = data.scheme if data.scheme != "auto" else ("bio" if is_bio(tags) else "none")
        if scheme == "bio":
            self.primary_metric = "entity_f1"
        words = Vocab.train((s.words for s in train), lowercase=data.lowercase, min_freq=data.min_freq)
        chars = tagging.train_char_vocab(train)
        width = tagging.char_width(train, data.max_chars)
        evaluated = {"val": val, "test": test} if val is not None else {"test": test}
        unseen: dict[str, int] = {}
        for name, sentences in evaluated.items():
            for tag, count in tagging.unseen_tags(sentences, tags).items():
                unseen[tag] = unseen.get(tag, 0) + count
        all_tags = tags + sorted(unseen)  # ids >= len(tags): tags no output can give (always wrong)
        columns = {name: tagging.encode(s, words, chars, all_tags, width)
                   for name, s in {"train": train, **evaluated}.items()}
        counts = tagging.word_counts(columns["train"][0], len(words))
        info = {
            "words": words.to_json(), "chars": chars.to_json(), "tags": tags, "unseen_tags": sorted(unseen),
            "char_width": width, "scheme": scheme, "word_counts": counts.tolist(),
            "format": conll.detect_format(data.path("train")) if data.format == "auto" else data.format,
            "column": data.column,
        }
        self.info = info
        self._report(train, evaluated, columns, len(words), tags, unseen, scheme)
        return Splits(train=columns["train"], val=columns.get("val"), test=columns["test"], info=info)

    def _report(self, train: list[TaggedSentence], evaluated: dict[str, list[TaggedSentence]],
                columns: dict[str, Split], vocab_size: int, tags: list[str], unseen: dict[str, int],
                scheme: str) -> None:
        """One summary of the data on the main process: sizes, unseen words, unseen tags, BIO oddities."""
        if int(os.environ.get("RANK", "0")) != 0:
            return
        say = lambda text: print(f"tag: {text}", file=sys.stderr, flush=True)  # noqa: E731
        tokens = sum(len(s.words) for s in train)
        say(f"train {len(train)} sentences, {tokens} words, {len(tags)} tags, vocabulary {vocab_size} words, "
            f"scheme {scheme}")
        for name, sentences in evaluated.items():
            word_ids = columns[name][0].values
            unknown = float((word_ids == UNK).float().mean()) if len(word_ids) else 0.0
            say(f"{name} {len(sentences)} sentences, {len(word_ids)} words, {unknown:.1%} unseen in training")
        if unseen:
            listed = ", ".join(f"{t} ({c})" for t, c in sorted(unseen.items(), key=lambda kv: -kv[1]))
            say(f"tags never seen in training (counted as errors, reported as unseen_tag_tokens): {listed}")
        if scheme == "bio":
            for name, sentences in {"train": train, **evaluated}.items():
                odd = invalid_transitions(s.tags or [] for s in sentences)
                if odd:
                    say(f"{name}: {odd} I- tags do not continue an entity of their type (after O, another type or "
                        "at a sentence start): counted as the start of an entity, as conlleval and seqeval do")

    def write_run_files(self, run_dir: Path, info: dict[str, Any]) -> None:
        """The vocabularies and tag list beside the checkpoints; on resume, check they are the same."""
        for key, name in RUN_FILES.items():
            path = run_dir / name
            vocab = Vocab.from_json(info[key], f"{key} vocabulary")
            if path.exists():
                Vocab.load(path).check_matches(vocab.digest, f"{path} (rebuilt from {self.job.data.train})")
            else:
                vocab.save(path)
        runfiles.write_atomic(run_dir / "tags.json", json.dumps({"tags": info["tags"], "unseen_tags": info["unseen_tags"],
                                                       "scheme": info["scheme"]}, indent=1) + "\n")

    def check_run_files(self, info: dict[str, Any]) -> None:
        """The run directory's vocabulary files must be the checkpoint's (a copied or edited file
        would silently change what `predict` reads)."""
        for key, name in RUN_FILES.items():
            path = self.run_dir / name if self.run_dir else None
            if path is not None and path.exists():
                Vocab.load(path).check_matches(Vocab.from_json(info[key]).digest, str(path))

    def build_model(self, info: dict[str, Any]) -> nn.Module:
        m = self.job.model
        counts = torch.tensor(info["word_counts"], dtype=torch.float32)
        unk_probability = m.word_dropout / (m.word_dropout + counts.clamp_min(1)) if m.word_dropout > 0 else None
        if unk_probability is not None:
            unk_probability[:4] = 0  # the specials are never dropped
        self.info = info
        if info["scheme"] == "bio":  # also when the data was mapped from the store (load_data did not run)
            self.primary_metric = "entity_f1"
        words, chars = Vocab.from_json(info["words"]), Vocab.from_json(info["chars"])
        return Tagger(
            num_words=len(words), num_chars=len(chars), num_tags=len(info["tags"]), word_dim=m.word_dim,
            char_dim=m.char_dim, char_kind=m.char_encoder, char_size=m.char_size, char_kernel=m.char_kernel,
            hidden_size=m.hidden_size, num_layers=m.num_layers, bidirectional=m.bidirectional, dropout=m.dropout,
            word_unk_probability=unk_probability, crf=m.crf,
        )

    def batch(self, split: Split, indices: torch.Tensor) -> Batch:
        return gather(split, indices)

    # -- training and evaluation --------------------------------------------------------

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        (words, lengths), (chars, _), (tags, _) = batch
        loss_sum, tokens = model(words, chars, lengths, tags)
        return loss_sum / tokens.clamp_min(1)

    def eval_sums(self, model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        net = getattr(model, "module", model)
        (words, lengths), (chars, _), (tags, _) = batch
        scores = net(words, chars, lengths)
        loss_sum, _ = net.loss_from_scores(scores, tags, lengths)
        predicted = net.decode(scores, lengths)
        mask = Padded(words, lengths).mask()
        tags = tags.long()
        correct = (predicted == tags) & mask
        unseen = (words == UNK) & mask
        double = lambda x: x.sum().double()  # noqa: E731
        sums = {
            "loss_sum": loss_sum.detach().double(), "tokens": double(mask), "correct": double(correct),
            "unseen_tokens": double(unseen), "unseen_correct": double(correct & unseen),
            "unseen_tag_tokens": double((tags >= net.num_tags) & mask),
        }
        if self.info["scheme"] == "bio":
            names = self.info["tags"] + self.info["unseen_tags"]
            gold = [[names[t] for t in row[:n]] for row, n in zip(tags.tolist(), lengths.tolist())]
            guess = [[names[t] for t in row[:n]] for row, n in zip(predicted.tolist(), lengths.tolist())]
            counts = entity_counts(gold, guess)
            sums.update({f"entities_{k}": torch.tensor(float(v), dtype=torch.float64, device=words.device)
                         for k, v in counts.items()})
        return sums

    def metrics(self, sums: dict[str, float], prefix: str = "test_") -> dict[str, float]:
        tokens = max(sums["tokens"], 1.0)
        seen = sums["tokens"] - sums["unseen_tokens"]
        out = {
            f"{prefix}loss": sums["loss_sum"] / tokens,
            f"{prefix}accuracy": sums["correct"] / tokens,
            f"{prefix}accuracy_seen": (sums["correct"] - sums["unseen_correct"]) / max(seen, 1.0),
            f"{prefix}accuracy_unseen": sums["unseen_correct"] / max(sums["unseen_tokens"], 1.0),
            f"{prefix}tokens": int(sums["tokens"]),
            f"{prefix}unseen_word_tokens": int(sums["unseen_tokens"]),
            f"{prefix}unseen_tag_tokens": int(sums["unseen_tag_tokens"]),
        }
        if "entities_gold" in sums:
            p, r, f1 = precision_recall_f1(sums["entities_correct"], sums["entities_predicted"], sums["entities_gold"])
            out.update({f"{prefix}entity_precision": p, f"{prefix}entity_recall": r, f"{prefix}entity_f1": f1})
        return out

    def export_signature(self, batch: Batch, info: dict[str, Any]) -> ExportSignature:
        """Word ids int64 [batch, words] (vocab_words.json, lower-cased), each word's characters
        int64 [batch, words, char_width] (vocab_chars.json, BOS word EOS then 0) and lengths int64
        [batch] -> tag scores [batch, words, tags] (tags.json; the argmax is the softmax tagger's
        answer, a CRF's Viterbi decoding over them is not in the graph)."""
        (words, lengths), (chars, _), _ = batch
        return ExportSignature({"words": words.long(), "chars": chars.long(), "lengths": lengths.long()},
                               {"words": {0: "batch", 1: "words"}, "chars": {0: "batch", 1: "words"},
                                "lengths": {0: "batch"}}, ["scores"],
                               metadata={"tags": info["tags"], "char_width": info["char_width"], "crf": self.job.model.crf,
                                         "vocabularies": dict(RUN_FILES)})

    # -- after training -------------------------------------------------------------------

    def predict_ids(self, model: nn.Module, split: Split) -> list[list[int]]:
        """Predicted tag ids of every sentence of a split, in the split's order."""
        net = getattr(model, "module", model)
        net.eval()
        lengths = split[0].lengths_cpu
        order = torch.argsort(lengths, stable=True)  # similar lengths together: little padding
        out: list[list[int]] = [[] for _ in range(len(lengths))]
        device = split[0].device
        with torch.no_grad(), self.autocast(device):
            for part in order.split(self.job.data.eval_batch_size):
                (words, n), (chars, _), _ = gather(split, part.to(device))
                predicted = net.decode(net(words, chars, n), n).tolist()
                for i, row, k in zip(part.tolist(), predicted, n.tolist()):
                    out[i] = row[:k]
        return out

    def finish(self, model: nn.Module, splits: Splits, run_dir: Path) -> dict[str, Any]:
        """Per-tag counts, the most confused tag pairs and their plot, test predictions as a file."""
        info = splits.info
        tags, names = info["tags"], info["tags"] + info["unseen_tags"]
        predicted = self.predict_ids(model, splits.test)
        gold_column = splits.test[2]
        gold = [gold_column[i].tolist() for i in range(len(gold_column))]
        confusion = torch.zeros(len(names), len(tags), dtype=torch.long)
        for g, p in zip(gold, predicted):
            confusion.index_put_((torch.tensor(g, dtype=torch.long), torch.tensor(p, dtype=torch.long)),
                                 torch.ones(len(g), dtype=torch.long), accumulate=True)
        per_tag = per_tag_counts(confusion, names)
        pairs = most_confused(confusion, names, 10)
        result: dict[str, Any] = {"test_per_tag": per_tag, "test_most_confused": pairs}
        (run_dir / "test_per_tag.tsv").write_text(
            "tag\tgold\tpredicted\tcorrect\tprecision\trecall\tf1\n"
            + "".join(f"{t}\t{c['gold']}\t{c['predicted']}\t{c['correct']}\t{c['precision']:.4f}\t{c['recall']:.4f}"
                      f"\t{c['f1']:.4f}\n" for t, c in per_tag.items())
        )
        sentences = self.read("test")
        with (run_dir / "test_predictions.tsv").open("w", encoding="utf-8") as f:
            f.write("# word\tgold\tpredicted (a blank line between sentences)\n")
            for sentence, row in zip(sentences, predicted):
                for word, g, p in zip(sentence.words, sentence.tags or [], row):
                    f.write(f"{word}\t{g}\t{names[p]}\n")
                f.write("\n")
        if info["scheme"] == "bio":
            from seqeval.metrics import classification_report

            report = classification_report([[names[t] for t in g] for g in gold],
                                           [[names[t] for t in p] for p in predicted], digits=4, zero_division=0)
            (run_dir / "test_entities.txt").write_text(report)
        images = {}
        if pairs:
            images["confusion"] = confusion_plot(confusion, names, pairs, run_dir / "confusion.png")
        result["images"] = images
        result["tables"] = {"per_tag": {"columns": ["tag", "gold", "predicted", "correct", "precision", "recall", "f1"],
                                        "rows": [[t, *c.values()] for t, c in per_tag.items()]}}
        return result

    # -- new sentences ----------------------------------------------------------------------

    def tag_sentences(self, model: nn.Module, info: dict[str, Any], sentences: list[list[str]]) -> list[list[str]]:
        """Tags for sentences of words, with the run's own vocabularies."""
        words, chars = Vocab.from_json(info["words"]), Vocab.from_json(info["chars"])
        tagged = [TaggedSentence(s, None, 0) for s in sentences]
        split = tagging.encode(tagged, words, chars, info["tags"], info["char_width"])
        device = next(getattr(model, "module", model).parameters()).device
        ids = self.predict_ids(model, tuple(c.to(device) for c in split))
        return [[info["tags"][i] for i in row] for row in ids]

    def predict(self, model: nn.Module, info: dict[str, Any], inputs: list[str], options: dict[str, Any]) -> list[str]:
        """`--text "The cat sat ."` (repeatable) and `--file` (one sentence a line, whitespace tokens) print
        word/TAG pairs, a line per sentence; `--conllu FILE` fills the tag column (`--output` or stdout)."""
        self.info = info
        self.check_run_files(info)
        if inputs:
            raise ConllError(f"tag predict reads --text, --file or --conllu, not positional inputs ({inputs[0]!r})")
        if options.get("conllu"):
            return self._predict_conllu(model, info, Path(options["conllu"]), options.get("output"))
        lines = list(options.get("text") or [])
        if options.get("file"):
            lines += read_utf8(options["file"], ConllError).splitlines()
        if not lines:
            raise ConllError("nothing to tag: give --text \"a sentence\", --file FILE or --conllu FILE")
        sentences = [conll.split_tokens(line) for line in lines]
        nonempty = [s for s in sentences if s]
        tagged = iter(self.tag_sentences(model, info, nonempty)) if nonempty else iter(())
        out = []
        for sentence in sentences:
            out.append(" ".join(f"{w}/{t}" for w, t in zip(sentence, next(tagged))) if sentence else "")
        return out

    def _predict_conllu(self, model: nn.Module, info: dict[str, Any], path: Path, output: str | None) -> list[str]:
        if info["format"] != "conllu":
            raise ConllError(f"{path}: this model was trained on whitespace-column files; --conllu fills a "
                             "CoNLL-U column, so it needs a model trained on CoNLL-U (use --file instead)")
        column = info["column"] or "upos"
        text = conll.fill_conllu(path, column, lambda sentences: self.tag_sentences(model, info, sentences))
        if output:
            Path(output).write_text(text, encoding="utf-8")
            n = text.count("\n\n")
            return [f"wrote {output}: {n} sentences, column {column.upper()} filled"]
        return text.rstrip("\n").split("\n") + [""]


TASK = TagTask


def per_tag_counts(confusion: torch.Tensor, names: list[str]) -> dict[str, dict[str, float]]:
    """gold / predicted / correct counts and precision, recall, F1 per tag (rows: gold, cols: predicted)."""
    out = {}
    known = confusion.shape[1]
    for i, name in enumerate(names):
        gold = int(confusion[i].sum())
        predicted = int(confusion[:, i].sum()) if i < known else 0
        correct = int(confusion[i, i]) if i < known else 0
        if not gold and not predicted:
            continue
        p, r, f1 = precision_recall_f1(correct, predicted, gold)
        out[name] = {"gold": gold, "predicted": predicted, "correct": correct, "precision": round(p, 4),
                     "recall": round(r, 4), "f1": round(f1, 4)}
    return out


def most_confused(confusion: torch.Tensor, names: list[str], top: int) -> list[list[Any]]:
    """The `top` (gold, predicted, count) pairs with the most errors."""
    errors = confusion.clone()
    diagonal = torch.arange(min(errors.shape))
    errors[diagonal, diagonal] = 0
    counts, flat = errors.flatten().sort(descending=True)
    pairs = []
    for count, index in zip(counts.tolist()[:top], flat.tolist()[:top]):
        if count == 0:
            break
        g, p = divmod(index, errors.shape[1])
        pairs.append([names[g], names[p], count])
    return pairs


def confusion_plot(confusion: torch.Tensor, names: list[str], pairs: list[list[Any]], path: Path) -> Path:
    """A heat map of the confusion counts among the tags of the most confused pairs."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    shown = []
    for g, p, _ in pairs:
        for name in (g, p):
            if name not in shown:
                shown.append(name)
    rows = [names.index(n) for n in shown]
    cols = [names.index(n) for n in shown if names.index(n) < confusion.shape[1]]
    sub = confusion[rows][:, cols].float()
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * len(cols), 1.0 + 0.5 * len(rows)))
    ax.imshow(sub.log1p(), cmap="Blues")
    for i in range(len(rows)):
        for j in range(len(cols)):
            value = int(sub[i, j])
            if value:
                ax.text(j, i, str(value), ha="center", va="center", fontsize=7,
                        color="white" if sub[i, j] > sub.max() / 3 else "black")
    ax.set_xticks(range(len(cols)), [names[c] for c in cols], rotation=90, fontsize=8)
    ax.set_yticks(range(len(rows)), [names[r] for r in rows], fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title("most confused tags (test)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
