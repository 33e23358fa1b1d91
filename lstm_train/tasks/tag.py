"""Sequence labelling: one tag per word (part of speech, named entities, chunks), the tutorial's
equal-length sequence to sequence.

Data: Universal Dependencies CoNLL-U (any tag column: upos, xpos, deprel...) or
whitespace-column files (CoNLL-2000/2003 style, BIO/IOB tags), see
`lstm_train.data.readers.conll`.  The train split defines the word vocabulary
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
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.readers import conll
from ..data import tagging
from ..data.readers.conll import ConllError, TaggedSentence
from ..data.streams.tag import TagStream
from ..data.ragged import Padded, gather
from ..data.vocab import UNK, Vocab
from ..files.outputs import write_run_output
from .tag_entities import entity_counts, invalid_transitions, is_bio
from ..models.tagger import Tagger
from .base import Batch, ExportSignature, Split, Splits, Task, predict_texts
from .registry import BUILTIN_TASKS
from .confusion import confusion_plot, most_confused, per_class, precision_recall_f1

RUN_FILES = {"words": "vocab_words.json", "chars": "vocab_chars.json"}


class TagTask(Task):
    registration = BUILTIN_TASKS["tag"]
    primary_metric = "accuracy"  # "entity_f1" on BIO data: `info["primary_metric"]`, once the scheme is known
    throughput_unit = "tokens"

    # -- data and model ---------------------------------------------------------------

    def read(self, name: str, with_tags: bool = True) -> list[TaggedSentence]:
        data = self.job.data
        return conll.read_tagged(data.path(name), data.format, data.column, with_tags)

    def source_files(self) -> list[Path]:
        data = self.job.data
        return [data.path(name) for name in ("train", "val", "test") if getattr(data, name)]

    def stream_data(self) -> TagStream:
        """The files one piece each, read a sentence at a time and encoded in chunks
        (`data/streams/tag.py`): no file is ever held in memory."""
        return TagStream(self.job.data, is_bio, invalid_transitions)

    def run_files(self, info: dict[str, Any]) -> dict[str, bytes]:
        """The vocabularies and the tag list, for people and tools (predict reads the vocabularies)."""
        tags = {"tags": info["tags"], "unseen_tags": info["unseen_tags"], "scheme": info["scheme"]}
        return {**{name: info[key].encode("utf-8") for key, name in RUN_FILES.items()},
                "tags.json": (json.dumps(tags, indent=1) + "\n").encode("utf-8")}

    def build_model(self, info: dict[str, Any]) -> nn.Module:
        m = self.job.model
        counts = torch.tensor(info["word_counts"], dtype=torch.float32)
        unk_probability = m.word_dropout / (m.word_dropout + counts.clamp_min(1)) if m.word_dropout > 0 else None
        if unk_probability is not None:
            unk_probability[:4] = 0  # the specials are never dropped
        words, chars = Vocab.from_json(info["words"]), Vocab.from_json(info["chars"])
        return Tagger(
            num_words=len(words), num_chars=len(chars), num_tags=len(info["tags"]), word_dim=m.word_dim,
            char_dim=m.char_dim, char_kind=m.char_encoder, char_size=m.char_size, char_kernel=m.char_kernel,
            hidden_size=m.hidden_size, num_layers=m.num_layers, bidirectional=m.bidirectional, dropout=m.dropout,
            word_unk_probability=unk_probability, crf=m.crf,
            tag_names=info["tags"] + info["unseen_tags"] if info["scheme"] == "bio" else None,
        )

    def batch(self, split: Split, indices: torch.Tensor) -> Batch:
        return gather(split, indices)

    # -- training and evaluation --------------------------------------------------------

    def loss(self, model: nn.Module, batch: Batch, info: dict[str, Any]) -> torch.Tensor:
        (words, lengths), (chars, _), (tags, _) = batch
        loss_sum, tokens = model(words, chars, lengths, tags)
        return loss_sum / tokens.clamp_min(1)

    def eval_sums(self, model: nn.Module, batch: Batch, info: dict[str, Any]) -> dict[str, torch.Tensor]:
        net = model
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
        if net.tag_names is not None:  # BIO data: entities
            names = net.tag_names
            gold = [[names[t] for t in row[:n]] for row, n in zip(tags.tolist(), lengths.tolist())]
            guess = [[names[t] for t in row[:n]] for row, n in zip(predicted.tolist(), lengths.tolist())]
            counts = entity_counts(gold, guess)
            sums.update({f"entities_{k}": torch.tensor(float(v), dtype=torch.float64, device=words.device)
                         for k, v in counts.items()})
        return sums

    def reported_metrics(self, info: dict[str, Any]) -> dict[str, str]:
        """Entity precision/recall/F1 only where the tags are BIO (`info["scheme"]`, known once read)."""
        out = dict(self.job.data.reported_metrics())
        if info.get("scheme") != "bio":
            out = {k: v for k, v in out.items() if not k.startswith("entity_")}
        return out

    def metrics(self, sums: dict[str, float], info: dict[str, Any], prefix: str = "test_") -> dict[str, float]:
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
        net = model
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
        per_tag = per_class(confusion, names)
        pairs = most_confused(confusion, names, 10)
        result: dict[str, Any] = {"test_per_tag": per_tag, "test_most_confused": pairs}
        write_run_output(run_dir, "test_per_tag.tsv", "tag\tgold\tpredicted\tcorrect\tprecision\trecall\tf1\n" + "".join(
            f"{t}\t{c['gold']}\t{c['predicted']}\t{c['correct']}\t{c['precision']:.4f}\t{c['recall']:.4f}"
            f"\t{c['f1']:.4f}\n" for t, c in per_tag.items()))
        sentences = self.read("test")
        lines = ["# word\tgold\tpredicted (a blank line between sentences)\n"]
        for sentence, row in zip(sentences, predicted):
            lines += [f"{word}\t{g}\t{names[p]}\n" for word, g, p in zip(sentence.words, sentence.tags or [], row)]
            lines.append("\n")
        write_run_output(run_dir, "test_predictions.tsv", "".join(lines))
        if info["scheme"] == "bio":
            from seqeval.metrics import classification_report

            report = classification_report([[names[t] for t in g] for g in gold],
                                           [[names[t] for t in p] for p in predicted], digits=4, zero_division=0)
            write_run_output(run_dir, "test_entities.txt", report)
        images = {}
        if pairs:
            shown = list(dict.fromkeys(name for g, p, _ in pairs for name in (g, p)))
            images["confusion"] = confusion_plot(confusion, names, run_dir / "confusion.png",
                                                 "most confused tags (test)", shown)
        result["images"] = images
        result["tables"] = {"per_tag": {"columns": ["tag", "gold", "predicted", "correct", "precision", "recall", "f1"],
                                        "rows": [[t, *c.values()] for t, c in per_tag.items()]}}
        return result

    # -- new sentences ----------------------------------------------------------------------

    def read_labelled(self, files: list[Path], info: dict[str, Any]) -> Split:
        """Tagged files in the run's format (CoNLL-U with its tag column, or whitespace columns) for
        `evaluate`, encoded as the run's test split: its vocabularies (checked against the run
        directory's files, as `predict` does), its character width, its tags then the tags its
        evaluation splits had that training did not; another tag counts wrong as those do (BIO data:
        refused, its entities could not be read)."""
        for name in RUN_FILES.values():
            self.read_run_file(info, name)
        sentences = [s for path in files for s in conll.read_tagged(path, info["format"], info["column"])]
        names = info["tags"] + info["unseen_tags"]
        extra = sorted(tagging.unseen_tags(sentences, names))
        if extra and info["scheme"] == "bio":
            raise ConllError(f"{', '.join(map(str, files))}: tag(s) {', '.join(extra[:10])} are not among the run's "
                             f"tags ({', '.join(names)}): the entities of BIO data are read with the run's tags only")
        words, chars = Vocab.from_json(info["words"]), Vocab.from_json(info["chars"])
        return tagging.encode(sentences, words, chars, names + extra, info["char_width"])


    def tag_sentences(self, model: nn.Module, info: dict[str, Any], sentences: list[list[str]]) -> list[list[str]]:
        """Tags for sentences of words, with the run's own vocabularies."""
        words, chars = Vocab.from_json(info["words"]), Vocab.from_json(info["chars"])
        tagged = [TaggedSentence(s, None, 0) for s in sentences]
        split = tagging.encode(tagged, words, chars, info["tags"], info["char_width"])
        device = next(model.parameters()).device
        ids = self.predict_ids(model, tuple(c.to(device) for c in split))
        return [[info["tags"][i] for i in row] for row in ids]

    def predict(self, model: nn.Module, info: dict[str, Any], inputs: list[str], options: dict[str, Any]) -> list[str]:
        """`--text "The cat sat ."` (repeatable) and `--file` (one sentence a line, whitespace tokens) print
        word/TAG pairs, a line per sentence; `--conllu FILE` fills the tag column (`--output` or stdout)."""
        for name in RUN_FILES.values():  # the run's vocabulary files must be the checkpoint's
            self.read_run_file(info, name)
        if options.get("conllu"):
            return self._predict_conllu(model, info, Path(options["conllu"]), options.get("output"), options)
        sentences = [conll.split_tokens(line) for line in predict_texts(inputs, options)]
        tagged = self.tag_sentences(model, info, sentences)
        return [" ".join(f"{w}/{t}" for w, t in zip(sentence, tags)) for sentence, tags in zip(sentences, tagged)]

    def _predict_conllu(self, model: nn.Module, info: dict[str, Any], path: Path, output: str | None,
                        options: dict[str, Any]) -> list[str]:
        if info["format"] != "conllu":
            raise ConllError(f"{path}: this model was trained on whitespace-column files; --conllu fills a "
                             "CoNLL-U column, so it needs a model trained on CoNLL-U (use --file instead)")
        column = info["column"] or "upos"
        text = conll.fill_conllu(path, column, lambda sentences: self.tag_sentences(model, info, sentences))
        if output:
            from ..files.outputs import write_output

            write_output(Path(output), text, "--output", bool(options.get("force")))
            n = text.count("\n\n")
            return [f"wrote {output}: {n} sentences, column {column.upper()} filled"]
        return text.rstrip("\n").split("\n") + [""]


TASK = TagTask
