"""A generated word corpus in WikiText-2's layout, for benchmarks where the real one is absent.

    python scripts/wikitext_layout.py --out DIR [--mb 4] [--no-test]

writes DIR/wiki.train.tokens (about --mb MB), wiki.valid.tokens and wiki.test.tokens (a tenth
of that each, as WikiText-2's 10.8 / 1.1 / 1.3 MB; no test file with --no-test), the files
jobs/wikitext2_awd_lstm.yaml reads (`data.root=DIR`).  The text is laid out as the word-level
release is: articles under ` = Title = ` and ` = = Section = = ` heading lines, blank lines
` ` between paragraphs, every token space-separated with a space at each line's start,
punctuation split off, `@-@` for a hyphen inside a word, and tokens seen fewer than 3 times
in the whole source replaced by `<unk>`.  Its sentences are the lines of tinyshakespeare and
Multi30k's English captions under $LSTM_TRAIN_DATA (the shared data every benchmark uses),
divided once into disjoint train / valid / test pools, so held-out text is not training text.

Deterministic: the same data and arguments give the same bytes.  Each file is written to a
temporary name and renamed, so an interrupted run leaves no partial file, and an existing
file is kept (a book's work folder generates it once).  No network, no download: this is
not WikiText-2 (its vocabulary is smaller, about a third of the real 33,278; the run says
how many words), only text of its shape for timing the loops that read it.  Prints one JSON
object: the files, their bytes and tokens, and the training vocabulary.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import re
import sys
from pathlib import Path

import numpy as np

SOURCES = ("tinyshakespeare/input.txt", "Multi30k/train.en")
MIN_COUNT = 3  # WikiText keeps words seen at least 3 times; the rest are <unk>
SPLITS = {"train": 1.0, "valid": 0.1, "test": 0.1}  # bytes, relative to --mb
TOKEN = re.compile(r"@-@|\w+|[^\w\s]")
HYPHEN = re.compile(r"(?<=\w)-(?=\w)")


def tokenize(line: str) -> list[str]:
    """WikiText's spacing: punctuation apart, an inner hyphen as `@-@`."""
    return TOKEN.findall(HYPHEN.sub(" @-@ ", line))


def source_sentences(data: Path) -> list[list[str]]:
    sentences = []
    for name in SOURCES:
        path = data / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: a source of the generated corpus is missing (set LSTM_TRAIN_DATA to "
                                    "the data root that holds " + " and ".join(SOURCES) + ")")
        sentences += [t for t in map(tokenize, path.read_text(encoding="utf-8").splitlines()) if t]
    counts = collections.Counter(w for s in sentences for w in s)
    return [[w if counts[w] >= MIN_COUNT else "<unk>" for w in s] for s in sentences]


@functools.lru_cache(maxsize=2)
def pools(data: Path) -> dict[str, list[list[str]]]:
    """Disjoint sentence pools: 90% train, 5% valid, 5% test, by one fixed permutation."""
    sentences = source_sentences(data)
    order = np.random.default_rng(2017).permutation(len(sentences))
    cut1, cut2 = int(len(order) * 0.9), int(len(order) * 0.95)
    parts = {"train": order[:cut1], "valid": order[cut1:cut2], "test": order[cut2:]}
    return {k: [sentences[i] for i in idx] for k, idx in parts.items()}


def article(rng: np.random.Generator, pool: list[list[str]]) -> list[str]:
    """One article: a title, 2-5 sections of 1-4 paragraphs of 3-12 sentences."""

    def words(n: int) -> str:
        s = pool[rng.integers(len(pool))]
        picked = [w for w in s if w.isalpha()][:n] or ["Untitled"]
        return " ".join(w[:1].upper() + w[1:] for w in picked)

    lines = [" ", f" = {words(int(rng.integers(1, 5)))} = ", " "]
    for section in range(int(rng.integers(2, 6))):
        if section:
            lines += [" ", f" = = {words(int(rng.integers(1, 4)))} = = ", " "]
        for _ in range(int(rng.integers(1, 5))):
            k = int(rng.integers(3, 13))
            lines += [" " + " ".join(w for i in rng.integers(0, len(pool), k) for w in pool[i]) + " ", " "]
    return lines


def write(path: Path, seed: int, pool: list[list[str]], size: int) -> None:
    """About `size` bytes of articles, atomically; an existing file is kept."""
    if path.exists():
        return
    rng = np.random.default_rng(seed)
    lines: list[str] = []
    total = 0
    while total < size:
        new = article(rng, pool)
        lines += new
        total += sum(len(x.encode()) + 1 for x in new)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def generate(out: Path, mb: float, test: bool, data: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    names = [n for n in SPLITS if test or n != "test"]
    if any(not (out / f"wiki.{n}.tokens").exists() for n in names):
        parted = pools(data)
        for seed, name in enumerate(names, 1):
            write(out / f"wiki.{name}.tokens", seed, parted[name], int(mb * SPLITS[name] * 1e6))
    report: dict = {"root": str(out), "files": {}}
    for name in names:
        path = out / f"wiki.{name}.tokens"
        text = path.read_text(encoding="utf-8")
        report["files"][path.name] = {"bytes": path.stat().st_size, "tokens": len(text.split()),
                                      "lines": text.count("\n")}
        if name == "train":
            report["train_vocabulary"] = len(set(text.split())) + 1  # + <eos>
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="the folder for wiki.{train,valid,test}.tokens")
    p.add_argument("--mb", type=float, default=4.0, help="size of wiki.train.tokens in MB (default 4)")
    p.add_argument("--no-test", action="store_true", help="no wiki.test.tokens (a corpus without a test split)")
    p.add_argument("--data", type=Path, default=Path(os.environ.get("LSTM_TRAIN_DATA", "./data")),
                   help="the data root holding the source texts (default $LSTM_TRAIN_DATA)")
    args = p.parse_args(argv)
    if not 0 < args.mb <= 1000:
        p.error(f"--mb {args.mb}: give a size in MB between 0 and 1000")
    try:
        print(json.dumps(generate(args.out, args.mb, not args.no_test, args.data)))
    except FileNotFoundError as e:
        print(f"wikitext_layout: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
