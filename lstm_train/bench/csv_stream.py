"""Measure text_classify's streamed CSV preparation: MB/s and peak RSS on a generated corpus.

    PYTHONPATH=$PWD python -m lstm_train.bench.csv_stream --mb 10 [--workers 2] [--python-path] [--csv FILE]

Rows of 16 words (a fixed list, numbered) and a label; the stream (data/streams/text_classify.py) is run
over its pieces in `--workers` processes (pass 1, plan, pass 2), as the store's driver does.
`--python-path` turns the Arrow column path (data/streams/table_columns.py) off: the Python path alone,
for comparison; `--csv FILE` measures an existing corpus (scripts/bench_corpora.py's) instead.
The lead runs it alone on the machine; numbers on a busy machine are indicative only.
"""

from __future__ import annotations

import argparse
import functools
import resource
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..config import validate_job
from ..data.streams import base, text_classify
from ..data.store.entry_format import EntryWriter

WORDS = "the a film movie plot good bad great awful story was is and of it this really quite".split()


def corpus(path: Path, megabytes: float) -> None:
    rng = np.random.default_rng(0)
    block = "".join(f'"{" ".join(rng.choice(WORDS, 15))} {i}",{"pos" if i % 2 else "neg"}\n' for i in range(5000))
    with open(path, "w") as f:
        f.write("text,label\n")
        while f.tell() < megabytes * 1e6:
            f.write(block)


def _scan(args: tuple[Any, Any]) -> Any:
    stream, piece = args
    return stream.scan(piece)


def _encode(args: tuple[Any, Any, Any, str]) -> Any:
    stream, piece, plan, folder = args
    out = Path(folder) / f"piece-{piece.index:05d}"
    out.mkdir()
    writer = EntryWriter(out)
    counts = stream.encode(piece, plan, writer)
    writer.close()
    return counts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=float, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--piece-mb", type=float, default=None)
    parser.add_argument("--python-path", action="store_true", help="the Python path only (no Arrow column path)")
    parser.add_argument("--csv", type=Path, default=None, help="an existing CSV (text, label) instead of a generated one")
    args = parser.parse_args()
    text_classify.COLUMNS = not args.python_path
    with tempfile.TemporaryDirectory() as tmp:
        path = args.csv or Path(tmp) / "corpus.csv"
        if args.csv is None:
            corpus(path, args.mb)
        if args.piece_mb:
            base.PIECE_BYTES = int(args.piece_mb * 1e6)
        spec = {"name": "bench", "task": "text_classify", "model": {"embedding_dim": 8, "hidden_size": 8},
                "data": {"source": "files", "path": str(path), "val_fraction": 0.05, "test_fraction": 0.05}}
        stream = text_classify.TextStream(validate_job(spec, "bench").data)
        stream.scratch = str(Path(tmp) / "scratch")  # type: ignore[attr-defined]  (as the store sets it)
        start = time.perf_counter()
        pieces = stream.pieces()
        with ProcessPoolExecutor(args.workers) as pool:
            plan = stream.plan(functools.reduce(base.combine, pool.map(_scan, [(stream, p) for p in pieces])))
            counts = list(pool.map(_encode, [(stream, p, plan, tmp) for p in pieces]))
        info = stream.info(plan, counts)
        seconds = time.perf_counter() - start
        size = path.stat().st_size / 1e6
        rss = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
        print(f"csv {size:.1f} MB, {'python' if args.python_path else 'column'} path, {len(pieces)} pieces, "
              f"{args.workers} workers: {seconds:.2f} s, "
              f"{size / seconds:.2f} MB/s, peak RSS (largest process) {rss / 1024:.0f} MiB, vocabulary {info['vocab_size']}")


if __name__ == "__main__":
    main()
