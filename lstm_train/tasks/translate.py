"""Translation (the tutorial's unequal-length sequence to sequence), scored the way the field does.

Data: Multi30k (line-aligned files, official val and test sets), Tatoeba
fra-eng (one TSV, split by distinct English sentence), or a user's own two
line-aligned files or TSV, prepared as a stream (`lstm_train.data.streams.translate`:
byte-range pieces read in workers).  SentencePiece subword vocabularies
(`lstm_train.data.subword`) are trained on the train split (a bounded sample of
it, larger than Multi30k) and travel in `Splits.info`, so every checkpoint
carries them; the run directory holds them as `.model` files too.

Columns: source ids and target ids (<bos> ... <eos>) as `Ragged`; validation
and test also carry each pair's raw source and reference text as UTF-8 bytes
(`Ragged` uint8), so evaluation scores the detokenised output against the
untouched reference, whatever the vocabulary's normalisation or truncation did.

Model: `lstm_train.models.translator.Translator` (biLSTM encoder, LSTM decoder
with Luong or Bahdanau attention).  Loss: label-smoothed cross-entropy over
real target tokens (`lstm_train.models.losses`: fused, since
`F.cross_entropy(label_smoothing=...)` backward costs ~100 ms a batch on this CPU).

Metrics: sacreBLEU.  `eval_sums` returns each batch's sufficient statistics
(n-gram matches and totals, hypothesis and reference lengths; chrF's character
n-gram counts), which add up over batches and ranks to the corpus statistics,
and `metrics` turns the totals into corpus BLEU (cased, 13a tokenisation, the
standard), lower-cased BLEU and chrF, plus loss and perplexity.  Model selection
is on validation BLEU.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Literal

import torch
from sacrebleu.metrics import BLEU, CHRF
from torch import nn

from ..data.parallel import Pairs, ParallelDataError, read_line_aligned, read_tsv
from ..data.ragged import Padded, Ragged
from ..data.subword import BOS, EOS, PAD, SubwordVocab, VocabError
from ..data.streams.translate import Source, TranslateStream, limit_pairs
from ..files.outputs import write_run_output
from ..models.losses import smoothed_cross_entropy
from ..models.translator import Translator
from .base import Batch, Split, Splits, Task, note, predict_texts
from .registry import BUILTIN_TASKS
from .sections.translate import ParallelFiles

# -- job schema -----------------------------------------------------------------------------


# -- text columns ---------------------------------------------------------------------------


def text_column(texts: list[str]) -> Ragged:
    """Raw sentences as one Ragged column of UTF-8 bytes (moves with the split, pads like ids)."""
    encoded = [torch.frombuffer(bytearray(t.encode("utf-8")), dtype=torch.uint8) if t else torch.zeros(0, dtype=torch.uint8)
               for t in texts]
    return Ragged.from_sequences(encoded, dtype=torch.uint8)


def column_texts(padded: Padded) -> list[str]:
    data, lengths = padded.data.cpu(), padded.lengths.cpu().tolist()
    return [bytes(data[i, :n].tolist()).decode("utf-8") for i, n in enumerate(lengths)]


class Scorer:
    """sacreBLEU's corpus BLEU (cased and lower-cased) and chrF from additive statistics."""

    def __init__(self) -> None:
        self.bleu, self.bleu_lc, self.chrf = BLEU(), BLEU(lowercase=True), CHRF()

    def sums(self, hypotheses: list[str], references: list[str]) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, metric in (("bleu", self.bleu), ("bleu_lc", self.bleu_lc), ("chrf", self.chrf)):
            stats = metric._extract_corpus_statistics(hypotheses, [references])
            for j, value in enumerate(map(sum, zip(*stats))):
                out[f"{name}_stat{j:02d}"] = float(value)
        return out

    @staticmethod
    def _stats(sums: dict[str, float], name: str) -> list[int]:
        keys = sorted(k for k in sums if k.startswith(f"{name}_stat"))
        return [int(round(sums[k])) for k in keys]

    def scores(self, sums: dict[str, float]) -> dict[str, float]:
        return {
            "bleu": self.bleu._compute_score_from_stats(self._stats(sums, "bleu")).score,
            "bleu_lc": self.bleu_lc._compute_score_from_stats(self._stats(sums, "bleu_lc")).score,
            "chrf": self.chrf._compute_score_from_stats(self._stats(sums, "chrf")).score,
        }

    def signatures(self) -> dict[str, str]:
        """sacreBLEU's signatures (version, tokeniser, case, smoothing): how to reproduce the scores."""
        for metric in (self.bleu, self.bleu_lc, self.chrf):
            metric.corpus_score(["a"], [["a"]])  # a signature names the reference count, known once scored
        return {"bleu_signature": str(self.bleu.get_signature()), "bleu_lc_signature": str(self.bleu_lc.get_signature()),
                "chrf_signature": str(self.chrf.get_signature())}


# -- the task ---------------------------------------------------------------------------------


class TranslateTask(Task):
    registration = BUILTIN_TASKS["translate"]
    primary_metric = "bleu"
    higher_is_better = True
    throughput_unit = "tokens"

    def __init__(self, job: Any, run_dir: Path | None = None) -> None:
        super().__init__(job, run_dir)
        self.scorer = Scorer()

    # -- data ---------------------------------------------------------------------------

    def source_files(self) -> list[Path]:
        d = self.job.data
        root = Path(d.root)
        if d.dataset == "multi30k":
            return [root / "Multi30k" / f"{split}.{lang}" for split in ("train", "val", d.test_set)
                    for lang in (d.source_lang, d.target_lang)]
        if d.dataset == "tatoeba":
            return [root / "Tatoeba" / "fra-eng" / "fra.txt"]
        specs = [getattr(d, split) for split in ("train", "val", "test")]
        return [self._where(p) for s in specs if s is not None for p in (s.tsv, s.source, s.target) if p is not None]

    def _where(self, path: str) -> Path:
        """A user's file: absolute, relative to the working directory where it exists, else to data.root."""
        return Path(path) if Path(path).is_absolute() or Path(path).exists() else Path(self.job.data.root) / path

    def stream_data(self) -> TranslateStream:
        """Parallel text in byte ranges, SentencePiece trained on a bounded sample, encoded in
        workers (`data/streams/translate.py`): memory flat in the corpus size."""
        return TranslateStream(self.sources(), self.job.data)

    def entry_revision(self) -> dict[str, Any]:
        """Pairs split off by key go by a seeded hash of the key sentence since the streamed
        preparation (before: a shuffle of every distinct key, held in memory): such entries are new."""
        return {"split_off": "key hash"} if any(s.split is None for s in self.sources()) else {}

    def sources(self) -> list[Source]:
        """The job's parallel text as the stream reads it: each split's files, or text to split off."""
        d = self.job.data
        root = Path(d.root)
        if d.dataset == "multi30k":
            folder = root / "Multi30k"
            langs = ("de", "en")
            if d.source_lang not in langs or d.target_lang not in langs or d.source_lang == d.target_lang:
                raise ParallelDataError(f"Multi30k has de and en: source_lang/target_lang {d.source_lang!r}/"
                                        f"{d.target_lang!r} must be one each")
            if not folder.is_dir():
                raise FileNotFoundError(f"{folder}: no Multi30k folder (data.root={d.root}; set LSTM_TRAIN_DATA)")
            return [Source(split, str(folder / f"{name}.{d.source_lang}"), str(folder / f"{name}.{d.target_lang}"))
                    for split, name in (("train", "train"), ("val", "val"), ("test", d.test_set))]
        if d.dataset == "tatoeba":
            if {d.source_lang, d.target_lang} != {"en", "fr"}:
                raise ParallelDataError(f"Tatoeba fra-eng has en and fr: source_lang/target_lang {d.source_lang!r}/"
                                        f"{d.target_lang!r} must be one each")
            english = d.source_lang == "en"  # the key: alternative translations of one English sentence together
            return [Source(None, str(root / "Tatoeba" / "fra-eng" / "fra.txt"), None, 0 if english else 1,
                           1 if english else 0, key="source" if english else "target")]
        out = []
        split_off = d.val is None or d.test is None
        for split in ("train", "val", "test"):
            spec: ParallelFiles | None = getattr(d, split)
            if spec is None:
                continue
            name = None if split == "train" and split_off else split
            if spec.tsv is not None:
                out.append(Source(name, str(self._where(spec.tsv)), None, spec.source_column, spec.target_column,
                                  spec.header))
            else:
                out.append(Source(name, str(self._where(spec.source)), str(self._where(spec.target))))
        return out

    def _input(self, texts: list[str], side: Literal["source", "target"]) -> list[str]:
        lower = self.job.data.lowercase
        if lower == "both" or (lower == "source" and side == "source"):
            return [t.lower() for t in texts]
        return texts

    def encode(self, vocab: SubwordVocab, texts: list[str], side: Literal["source", "target"]) -> list[list[int]]:
        ids = vocab.encode_batch(self._input(texts, side))
        return [[BOS, *x, EOS] for x in ids] if side == "target" else ids

    def columns(self, pairs: Pairs, vocabs: tuple[SubwordVocab, SubwordVocab], name: str) -> tuple[tuple, dict[str, Any]]:
        """A split's columns (source ids, target ids; besides training the raw source and reference
        texts) and its report, data.max_length applied as the stream applies it: for `evaluate`."""
        d = self.job.data
        src = self.encode(vocabs[0], pairs.source, "source")
        tgt = self.encode(vocabs[1], pairs.target, "target")
        where = lambda i: f"{pairs.origin}, line {pairs.lines[i] if pairs.lines else i + 1}"  # noqa: E731
        keep, counts = limit_pairs(src, tgt, name, d.max_length, d.too_long, where)
        for what, n in counts.items():
            if n:
                note(f"{pairs.origin}: {n} {name} pair{'s' if n != 1 else ''} {what} (over data.max_length="
                     f"{d.max_length} subword tokens)")
        columns = (Ragged.from_sequences([src[i] for i in keep]), Ragged.from_sequences([tgt[i] for i in keep]))
        if name != "train":
            columns += (text_column(pairs.source), text_column(pairs.target))
        return columns, {"pairs": len(keep), **counts, "blank_lines_skipped": pairs.skipped_blank}

    def read_labelled(self, files: list[Path], info: dict[str, Any]) -> Split:
        """Parallel text for `evaluate`: line-aligned files given as pairs (source, then its target:
        `test.de test.en`) or tab-separated files (source, then target column), encoded with the
        run's vocabularies and scored as its test split (sacreBLEU on the untouched references)."""
        parts: list[Pairs] = []
        aligned = [f for f in files if f.suffix.lower() != ".tsv"]
        if len(aligned) % 2:
            raise ParallelDataError(f"{aligned[-1]}: line-aligned files come in pairs (source, then target: "
                                    f"test.{info['source_lang']} test.{info['target_lang']}), or give a .tsv of "
                                    "source<TAB>target lines")
        parts += [read_line_aligned(a, b) for a, b in zip(aligned[::2], aligned[1::2])]
        parts += [read_tsv(f) for f in files if f.suffix.lower() == ".tsv"]
        pairs = Pairs([s for p in parts for s in p.source], [t for p in parts for t in p.target],
                      " + ".join(p.origin for p in parts), [n for p in parts for n in p.lines])
        for name in self.run_files(info):  # the run's vocabulary files must be the checkpoint's
            self.read_run_file(info, name)
        return self.columns(pairs, vocabularies(info), "test")[0]

    def run_files(self, info: dict[str, Any]) -> dict[str, bytes]:
        """The vocabularies as SentencePiece model files (`vocab.model`, or one per language)."""
        if info["joint"]:
            return {"vocab.model": SubwordVocab.from_base64(info["source_vocab"]).proto}
        return {f"vocab.{info[f'{side}_lang']}.model": SubwordVocab.from_base64(info[f"{side}_vocab"]).proto
                for side in ("source", "target")}

    # -- model --------------------------------------------------------------------------

    def build_model(self, info: dict[str, Any]) -> nn.Module:
        m = self.job.model
        if m.share_embeddings and not info["joint"]:
            raise VocabError("model.share_embeddings needs data.subword.joint: true (one vocabulary for both sides)")
        return Translator(
            source_vocab=info["source_vocab_size"], target_vocab=info["target_vocab_size"], embed_size=m.embed_size,
            hidden_size=m.hidden_size, num_layers=m.num_layers, bidirectional=m.bidirectional,
            decoder_hidden=m.decoder_hidden, decoder_layers=m.decoder_layers, attention=m.attention,
            input_feeding=m.input_feeding, dropout=m.dropout, tie_embeddings=m.tie_embeddings,
            share_embeddings=m.share_embeddings, vocabularies=vocabularies(info),
        )

    def lengths(self, split: Split) -> torch.Tensor:
        """Longer of source and target, in tokens: buckets and token budgets fit both sides."""
        return torch.maximum(split[0].lengths_cpu, split[1].lengths_cpu)

    def tokens(self, split: Split) -> torch.Tensor:
        """Target tokens predicted (throughput as translation papers count it)."""
        return split[1].lengths_cpu - 1

    # -- training and evaluation ----------------------------------------------------------

    def _logits(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        source, target = batch[0], batch[1]
        target_in, target_out = target.data[:, :-1], target.data[:, 1:]
        real = target_out != PAD
        return model(source.data, source.lengths, target_in, real), target_out[real]

    def loss(self, model: nn.Module, batch: Batch, info: dict[str, Any]) -> torch.Tensor:
        logits, gold = self._logits(model, batch)
        smoothed, _ = smoothed_cross_entropy(logits, gold, self.job.model.label_smoothing)
        return smoothed.mean()

    def max_len(self, source_lengths: torch.Tensor) -> torch.Tensor:
        m = self.job.model
        return (source_lengths.float() * m.max_decode_ratio).long() + m.max_decode_extra

    def translate_ids(self, model: nn.Module, source: Padded, beam_size: int | None = None) -> list[str]:
        m = self.job.model
        out = model.generate(source.data, source.lengths, beam_size=beam_size or m.beam_size,
                             length_penalty=m.length_penalty, max_len=self.max_len(source.lengths))
        return model.vocabularies[1].decode_batch(out.tolist())

    def eval_sums(self, model: nn.Module, batch: Batch, info: dict[str, Any]) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            logits, gold = self._logits(model, batch)
            _, nll = smoothed_cross_entropy(logits, gold, 0.0)
            hypotheses = self.translate_ids(model, batch[0])
        references = column_texts(batch[3])
        sums = self.scorer.sums(hypotheses, references)
        sums["sentences"] = float(len(references))
        sums["exact"] = float(sum(h == r for h, r in zip(hypotheses, references)))
        dev = gold.device
        out = {k: torch.tensor(v, dtype=torch.float64, device=dev) for k, v in sums.items()}
        out["loss_sum"] = nll.sum().double()
        out["tokens"] = torch.tensor(float(len(gold)), dtype=torch.float64, device=dev)
        return out

    def metrics(self, sums: dict[str, float], info: dict[str, Any], prefix: str = "test_") -> dict[str, float]:
        loss = sums["loss_sum"] / max(sums["tokens"], 1)
        out = {f"{prefix}{k}": v for k, v in self.scorer.scores(sums).items()}
        out[f"{prefix}loss"] = loss
        out[f"{prefix}perplexity"] = math.exp(min(loss, 50.0))
        out[f"{prefix}exact_match"] = sums["exact"] / max(sums["sentences"], 1)
        out[f"{prefix}sentences"] = int(sums["sentences"])
        return out

    # -- after training -------------------------------------------------------------------

    def translate(self, model: nn.Module, sources: list[str], beam_size: int | None = None,
                  batch_size: int = 100) -> list[str]:
        """Plain-text translations of plain-text sentences, decoded in batches of similar length."""
        net = model
        net.eval()
        dev = next(net.parameters()).device
        ids = [x[: self.job.data.max_length] for x in self.encode(net.vocabularies[0], sources, "source")]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out: list[str] = [""] * len(ids)
        with torch.no_grad(), self.autocast(dev):
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                column = Ragged.from_sequences([ids[i] for i in chunk])
                padded = column.pad(torch.arange(len(chunk)))
                batch = Padded(padded.data.to(dev), padded.lengths.to(dev))
                for i, text in zip(chunk, self.translate_ids(net, batch, beam_size)):
                    out[i] = text
        return out

    def finish(self, model: nn.Module, splits: Splits, run_dir: Path) -> dict[str, Any]:
        """The test set's translations as a TSV and a W&B table; decoding speed; sacreBLEU's signatures."""
        test = splits.test
        everything = torch.arange(len(test[2]))
        sources, references = column_texts(test[2].pad(everything)), column_texts(test[3].pad(everything))
        started = time.perf_counter()
        hypotheses = self.translate(model, sources, batch_size=self.job.data.eval_batch_size)
        seconds = time.perf_counter() - started
        clean = lambda t: t.replace("\t", " ").replace("\n", " ")  # noqa: E731
        lines = ["source\treference\thypothesis"]
        lines += [f"{clean(s)}\t{clean(r)}\t{clean(h)}" for s, r, h in zip(sources, references, hypotheses)]
        path = write_run_output(run_dir, "test_translations.tsv", "\n".join(lines) + "\n")
        m = self.job.model
        return {
            **self.scorer.signatures(),
            "decoding": f"beam {m.beam_size}, length_penalty {m.length_penalty}" if m.beam_size > 1 else "greedy",
            "test_decode_sentences_per_second": len(sources) / max(seconds, 1e-9),
            "test_translations": str(path),
            "tables": {"examples": {"columns": ["source", "reference", "hypothesis"],
                                    "rows": [[s, r, h] for s, r, h in list(zip(sources, references, hypotheses))[:100]]}},
        }

    def predict(self, model: nn.Module, info: dict[str, Any], inputs: list[str], options: dict[str, Any]) -> list[str]:
        for name in self.run_files(info):  # the run's vocabulary files must be the checkpoint's
            self.read_run_file(info, name)
        sentences = predict_texts(inputs, options)
        long = [s for s in self.encode(model.vocabularies[0], sentences, "source") if len(s) > info["max_length"]]
        if long:
            note(f"{len(long)} sentence(s) over max_length={info['max_length']} subword tokens: truncated")
        return self.translate(model, sentences, beam_size=options.get("beam"))


def vocabularies(info: dict[str, Any]) -> tuple[SubwordVocab, SubwordVocab]:
    """The (source, target) vocabularies of a run's info (one object when they are joint)."""
    source = SubwordVocab.from_base64(info["source_vocab"], "checkpoint source vocabulary")
    if info["target_vocab"] == info["source_vocab"]:
        return source, source
    return source, SubwordVocab.from_base64(info["target_vocab"], "checkpoint target vocabulary")


TASK = TranslateTask
