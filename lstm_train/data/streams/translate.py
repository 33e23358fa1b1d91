"""The translate task's preparation as a `Stream` (see stream.py): parallel text in byte ranges,
SentencePiece trained on a bounded sample, encoded in workers.

Sources are line-aligned file pairs (Multi30k, Europarl, most of OPUS) or TSV files (Tatoeba);
each is cut into pieces of about `PIECE_BYTES` on line boundaries, the same lines of both files
(`parallel_read.aligned_cuts`, which refuses files of different line counts before anything is
read twice).  A source names its split, or None: its pairs are split off by a rule of the pair
alone (a seeded hash of its key sentence, so alternative translations of one sentence stay
together), never by position, so the entry is the same from 1 shard or N.

Pass 1 (`scan`) checks every pair (`parallel_read.pairs`: the checks and messages of the
in-memory readers) and counts pairs, blank lines and the training text's bytes.  `plan` trains
the SentencePiece vocabularies (joint, or one per side) from the training pairs read again,
streamed, in corpus order: every pair while the training text is at most `SAMPLE_BYTES`, else
the pairs whose seeded hash falls under SAMPLE_BYTES / the training bytes (SentencePiece holds
what it is given: its memory is the sample's, not the corpus's).  Multi30k's training text (3.9
MB) is under the bound, so its vocabulary, and its entry, are the ones of training on all of it;
a corpus with more training text gets another vocabulary than training on all of it would give.
Measured (`lstm-train prepare`, generated corpora, 2 cores): peak RSS 721 MiB at 11 MB and 735
MiB at 44 MB (the in-memory path it replaced: 781 and 1,472 MiB).
Pass 2 (`encode`) encodes CHUNK pairs at a time with the plan's vocabularies, applies
data.max_length (truncate, skip or refuse, counted) and appends source ids, target ids (<bos> ...
<eos>) and, besides training, each pair's raw source and reference text as UTF-8 bytes.
"""

from __future__ import annotations

import functools
import hashlib
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import base, parallel_read
from ..parallel import ParallelDataError
from .parallel_read import Blanks, PairPiece
from ..store.entry_format import EntryWriter
from .base import Piece, chunks
from ..subword import BOS, EOS, SubwordVocab
from ...messages import note

SAMPLE_BYTES = int(os.environ.get("LSTM_TRAIN_SUBWORD_SAMPLE_BYTES", 8 << 20))  # > Multi30k's 3.9 MB
CHUNK = 8192  # pairs encoded and written at a time
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Source:
    """One split's parallel text (or, `split` None, text to split off by key): a line-aligned
    pair of files (`source`, `target`) or one TSV (`source`, `target` None, its columns)."""

    split: str | None
    source: str
    target: str | None = None
    source_column: int | str = 0
    target_column: int | str = 1
    header: bool = False
    key: str = "source"  # the side whose sentence keeps a split-off pair's alternatives together


class TranslateStream:
    """The Stream of a translate job: `sources` from the task (which knows the datasets), `data`
    the job's data section (pydantic: picklable)."""

    def __init__(self, sources: list[Source], data: Any) -> None:
        self.sources, self.data = sources, data
        self.given = {s.split for s in sources if s.split is not None}

    # -- pieces --------------------------------------------------------------------------

    def pieces(self) -> list[Piece]:
        out: list[Piece] = []
        for src in self.sources:
            for path in (src.source, src.target):
                if path is not None and not Path(path).is_file():
                    raise FileNotFoundError(f"{path}: no such file" + (" (it is a folder)" if Path(path).exists()
                                                                        else ""))
            if src.target is None:
                columns, start = parallel_read.tsv_header(src.source, src.source_column, src.target_column, src.header)
                cuts, _ = parallel_read.line_cuts(src.source, base.PIECE_BYTES)
                size = Path(src.source).stat().st_size
                starts = [(1 + int(src.header), start, 0)] + [(n + 1, a, 0) for a, n in cuts if start < a < size]
                ends = [a for _, a, _ in starts[1:]] + [None]
                out += [PairPiece(len(out) + k, src.source, a, e, src.split, line=n, columns=columns, key=src.key)
                        for k, ((n, a, _), e) in enumerate(zip(starts, ends))]
                continue
            cuts = parallel_read.aligned_cuts(src.source, src.target, base.PIECE_BYTES)
            starts = [(1, 0, 0)] + [(n + 1, a, b) for n, a, b in cuts]
            ends = [(a, b) for _, a, b in starts[1:]] + [(None, None)]
            out += [PairPiece(len(out) + k, src.source, a, e, src.split, target=src.target, target_start=b,
                              target_end=f, line=n, key=src.key)
                    for k, ((n, a, b), (e, f)) in enumerate(zip(starts, ends))]
        return out

    # -- splits and samples --------------------------------------------------------------

    def split_of(self, piece: PairPiece, source: str, target: str) -> str:
        """The split of a pair: its piece's, or (split off) by a seeded hash of its key sentence."""
        if piece.split is not None:
            return piece.split
        key = source if piece.key == "source" else target
        digest = hashlib.blake2b(f"{self.data.split_seed}\0{key}".encode(), digest_size=8).digest()
        u = int.from_bytes(digest, "little") / 2.0**64
        if u < self.data.val_fraction:
            return "val"
        return "test" if u < self.data.val_fraction + self.data.test_fraction else "train"

    def split_pairs(self, piece: PairPiece, blanks: Blanks) -> Iterator[tuple[str, int, str, str]]:
        """(split, line, source, target) of the piece's pairs; a split-off pair that falls in a split
        given its own files is left out (as the in-memory split did)."""
        for line, s, t in parallel_read.pairs(piece, blanks):
            split = self.split_of(piece, s, t)
            if piece.split is not None or split not in self.given:
                yield split, line, s, t

    def _input(self, text: str, side: str) -> str:
        lower = self.data.lowercase
        return text.lower() if lower == "both" or (lower == "source" and side == "source") else text

    # -- pass 1 --------------------------------------------------------------------------

    def scan(self, piece: Piece) -> dict[str, Any]:
        """Every pair checked; pairs, blank lines and training bytes counted per split (and the
        split-off parts, which must each get pairs)."""
        assert isinstance(piece, PairPiece)
        counts = {s: {"pairs": 0, "bytes": 0} for s in SPLITS}
        parts = {s: 0 for s in SPLITS}
        blanks = Blanks()
        for line, s, t in parallel_read.pairs(piece, blanks):
            split = self.split_of(piece, s, t)
            if piece.split is None:
                parts[split] += 1
                if split in self.given:
                    continue
            counts[split]["pairs"] += 1
            counts[split]["bytes"] += len(s.encode()) + len(t.encode())
        blank_split = piece.split or "train"
        return {"counts": counts, "parts": parts if piece.split is None else {}, "blank": {blank_split: blanks.count}}

    def origins(self) -> dict[str, str]:
        """The corpus of each split as messages name it (\"\": text split off by fractions), the first
        piece's: from the piece list, not the scans, so it never depends on which worker ends first."""
        return {src.split or "": f"{src.source} + {src.target}" if src.target is not None else src.source
                for src in reversed(self.sources)}

    # -- the plan ------------------------------------------------------------------------

    def plan(self, scan: dict[str, Any]) -> dict[str, Any]:
        """The vocabularies, trained on the training pairs (all of them up to SAMPLE_BYTES, else a
        seeded sample of about that much), read again in corpus order."""
        origin = self.origins()
        self._check_parts(scan, origin)
        total = scan["counts"]["train"]["bytes"]
        rate = min(1.0, SAMPLE_BYTES / max(total, 1))
        s = self.data.subword
        common = dict(vocab_size=s.vocab_size, model_type=s.model, character_coverage=s.character_coverage)
        sides = lambda *names: (self._input(x, side) for side in names for x in self._sample(rate, side))  # noqa: E731
        if s.joint:
            vocab = SubwordVocab.train(sides("source", "target"), **common)
            source, target = vocab, vocab
        else:
            source, target = SubwordVocab.train(sides("source"), **common), SubwordVocab.train(sides("target"), **common)
        if rate < 1.0:
            note(f"translate: subword vocabulary trained on a sample of {rate:.1%} of the {total / 1e6:.0f} MB of "
                 f"training text (about {SAMPLE_BYTES >> 20} MiB)")
        return {"source_vocab": source.to_base64(), "target_vocab": target.to_base64(), "origin": origin,
                "blank": scan["blank"]}

    def _check_parts(self, scan: dict[str, Any], origin: dict[str, str]) -> None:
        """Split-off text must give every split it fills pairs; training needs pairs."""
        parts = scan["parts"]
        if parts:
            needed = ["train"] + [s for s in ("val", "test") if s not in self.given]
            if any(not parts.get(s) for s in needed):
                corpus = origin.get("", "the corpus")
                raise ParallelDataError(
                    f"{corpus}: {sum(parts.values())} pairs split into {parts.get('train', 0)} train / "
                    f"{parts.get('val', 0)} val / {parts.get('test', 0)} test: every split needs pairs (more data, "
                    "or other fractions)")
        if not scan["counts"]["train"]["pairs"]:
            raise ParallelDataError(f"{origin.get('train') or origin.get('', 'the corpus')}: no "
                                    "training pairs (every line is empty)")

    def _sample(self, rate: float, side: str) -> Iterator[str]:
        """One side's training sentences in corpus order: all, or those whose pair's hash is under
        `rate` (a rule of the pair alone)."""
        limit = int(rate * 2**32)
        for piece in self.pieces():
            if piece.split not in (None, "train"):
                continue
            for split, _, s, t in self.split_pairs(piece, Blanks()):  # type: ignore[arg-type]
                if split == "train" and (rate >= 1.0 or zlib.crc32(f"{s}\t{t}".encode()) < limit):
                    yield s if side == "source" else t

    # -- pass 2 --------------------------------------------------------------------------

    def encode(self, piece: Piece, plan: dict[str, Any], out: EntryWriter) -> dict[str, Any]:
        """The piece's columns, CHUNK pairs at a time; per split its pairs and how many were
        truncated or skipped (data.max_length)."""
        assert isinstance(piece, PairPiece)
        vocabs = _vocab(plan["source_vocab"]), _vocab(plan["target_vocab"])
        counts: dict[str, dict[str, int]] = {}
        for chunk in chunks(self.split_pairs(piece, Blanks()), CHUNK):
            for split in SPLITS:
                rows = [r for r in chunk if r[0] == split]
                if rows:
                    done = self._write(piece, split, rows, vocabs, out)
                    total = counts.setdefault(split, {"pairs": 0, "truncated": 0, "skipped": 0})
                    for k, v in done.items():
                        total[k] += v
        return counts

    def _write(self, piece: PairPiece, split: str, rows: list[tuple[str, int, str, str]],
               vocabs: tuple[SubwordVocab, SubwordVocab], out: EntryWriter) -> dict[str, int]:
        src = vocabs[0].encode_batch([self._input(r[2], "source") for r in rows])
        tgt = [[BOS, *x, EOS] for x in vocabs[1].encode_batch([self._input(r[3], "target") for r in rows])]
        d = self.data
        keep, counts = limit_pairs(src, tgt, split, d.max_length, d.too_long,
                                   lambda i: f"{piece.origin()}, line {rows[i][1]}")
        out.ragged(split, 0).append([src[i] for i in keep])
        out.ragged(split, 1).append([tgt[i] for i in keep])
        if split != "train":
            for column, side in ((2, 2), (3, 3)):
                encoded = [r[side].encode("utf-8") for r in rows]
                out.ragged(split, column, np.uint8).append_flat(np.frombuffer(b"".join(encoded), np.uint8),
                                                                [len(e) for e in encoded])
        return {"pairs": len(keep), **counts}

    # -- info ----------------------------------------------------------------------------

    def info(self, plan: dict[str, Any], counts: list[dict[str, Any]]) -> dict[str, Any]:
        """The entry's info: languages, the vocabularies (base64, digests, sizes) and per split its
        pairs, truncated, skipped and blank lines (said once per split, as a note)."""
        d = self.data
        source, target = _vocab(plan["source_vocab"]), _vocab(plan["target_vocab"])
        report: dict[str, Any] = {}
        for split in SPLITS:
            total = {"pairs": 0, "truncated": 0, "skipped": 0}
            for c in counts:
                for k, v in c.get(split, {}).items():
                    total[k] += v
            origin = plan["origin"].get(split) or plan["origin"].get("", "")
            for what in ("truncated", "skipped"):
                n = total[what]
                if n:
                    note(f"{origin}: {n} {split} pair{'s' if n != 1 else ''} {what} (over data.max_length="
                         f"{d.max_length} subword tokens)")
            report[split] = {**total, "blank_lines_skipped": plan["blank"].get(split, 0)}
        return {
            "source_lang": d.source_lang, "target_lang": d.target_lang, "lowercase": d.lowercase,
            "max_length": d.max_length, "joint": d.subword.joint,
            "source_vocab": plan["source_vocab"], "target_vocab": plan["target_vocab"],
            "source_vocab_digest": source.digest, "target_vocab_digest": target.digest,
            "source_vocab_size": len(source), "target_vocab_size": len(target), "data": report,
        }


def limit_pairs(src: list[list[int]], tgt: list[list[int]], split: str, limit: int, too_long: str,
                where: Callable[[int], str]) -> tuple[list[int], dict[str, int]]:
    """data.max_length applied to encoded pairs in place: truncated (targets keep their <eos>),
    skipped (training pairs) or refused naming the pair (`where(i)`: "file, line N"); validation
    and test pairs are never skipped.  Returns the indices kept and the counts."""
    keep, counts = [], {"truncated": 0, "skipped": 0}
    for i, (s, t) in enumerate(zip(src, tgt)):
        long_t = split == "train" and len(t) > limit
        if len(s) <= limit and not long_t:
            keep.append(i)
            continue
        if too_long == "error":
            side, n = ("source", len(s)) if len(s) > limit else ("target", len(t))
            raise ParallelDataError(f"{where(i)}: the {side} sentence is {n} subword tokens, over data.max_length="
                                    f"{limit}; raise max_length, or set data.too_long to truncate or skip")
        if too_long == "skip" and split == "train":
            counts["skipped"] += 1
            continue
        counts["truncated"] += 1
        src[i] = s[:limit]
        if long_t:
            tgt[i] = t[: limit - 1] + [EOS]
        keep.append(i)
    return keep, counts


@functools.lru_cache(maxsize=4)
def _vocab(text: str) -> SubwordVocab:
    return SubwordVocab.from_base64(text, "the preparation's vocabulary")
