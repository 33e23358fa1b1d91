"""Corpora of any size, measured (issue 26's must-shows): run alone on the machine.

    python scripts/bench_corpora.py generate --out /tmp/corpora            # 10/40/400 MB (+ --big: 4 GB) text, CSV, pair
    python scripts/bench_corpora.py prepare --corpora /tmp/corpora         # time, MB/s, peak RSS per tokenizer and size
    python scripts/bench_corpora.py bpe-reference --corpora /tmp/corpora   # tokenizers' own train + encode_batch
    python scripts/bench_corpora.py shards --corpora /tmp/corpora          # 400 MB: 1 shard here vs 4 through SLURM
    python scripts/bench_corpora.py train --corpora /tmp/corpora           # 4 GB vs 40 MB: each rank's RssAnon, 1 and 2 processes
    python scripts/bench_corpora.py train --sizes 40 400 --procs 2 --steps 150   # other sizes, 2 processes only

`--sizes` (MB) defaults per command: 10 40 400 (generate, prepare, bpe-reference), 400 (shards),
40 4000 (train).  `--json FILE` writes the rows (scripts/book.py reads them).

Text corpora are lines of tinyshakespeare and Multi30k's English captions in random order; CSV
rows are 16 words drawn from the same text with one of four labels; a parallel pair is Multi30k's
training pairs drawn at random into two line-aligned files (`pair-<N>MB.de`, `.en`: N MB in all),
prepared by the translate task (jobs/translate_files_example.yaml's data section: SentencePiece
from a bounded sample, encoding in workers).  All are written in blocks (the generator never holds
a corpus).  Every preparation runs `lstm-train prepare` in a fresh
process with a fresh cache directory; its peak RSS is the largest of the process and its worker
processes (`/usr/bin/time`'s maximum resident set size, which covers reaped children).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from bench_prepared import command, measure_run  # noqa: E402  (the run/RssAnon sampler, shared)

DATA = Path(os.environ.get("LSTM_TRAIN_DATA", ROOT.parent / "shared" / "data"))
SIZES = (10, 40, 400)
DEFAULT_SIZES = {"shards": [400], "train": [40, 4000]}  # elsewhere SIZES
TOKENIZERS = ("chars", "bytes", "words", "bpe")
KINDS = ["text", "csv", "pair"]  # generated corpora: text (language model), CSV (text_classify), parallel pair


def generate(out: Path, sizes: list[int], kinds: list[str] = KINDS) -> None:
    lines = (DATA / "tinyshakespeare" / "input.txt").read_text().splitlines(keepends=True)
    lines += (DATA / "Multi30k" / "train.en").read_text().splitlines(keepends=True)
    lines = np.array([ln for ln in lines if ln.strip()], dtype=object)
    words = np.array(sorted({w.replace('"', "") for ln in lines for w in ln.split()} - {""}), dtype=object)
    rng = np.random.default_rng(1)
    out.mkdir(parents=True, exist_ok=True)
    for mb in sizes:
        size = mb * 1_000_000
        text, csv = out / f"text-{mb}MB.txt", out / f"csv-{mb}MB.csv"
        if "text" in kinds and not text.exists():
            with open(text, "w") as f:
                while f.tell() < size:
                    f.write("".join(lines[rng.integers(0, len(lines), 100_000)]))
        if "csv" in kinds and not csv.exists():
            with open(csv, "w") as f:
                f.write("text,label\n")
                while f.tell() < size:
                    rows = words[rng.integers(0, len(words), (10_000, 16))]
                    labels = rng.integers(0, 4, 10_000)
                    f.write("".join(f"\"{' '.join(r)}\",{'abcd'[k]}\n" for r, k in zip(rows, labels)))
        if "pair" in kinds:  # its own generator: the text and CSV corpora stay the ones earlier books measured
            generate_pair(out, mb, np.random.default_rng([2, mb]))
        print(*(f"{p} {p.stat().st_size}" for p in sorted(out.glob(f"*-{mb}MB.*"))), flush=True)


def generate_pair(out: Path, mb: int, rng: np.random.Generator) -> None:
    """A line-aligned parallel corpus of `mb` MB in all (`pair-<mb>MB.de` and `.en`, as Multi30k's
    train.de / train.en): Multi30k's training pairs drawn at random, both files written in step.
    Written aside and renamed, the target last: a pair whose target exists is whole."""
    source, target = out / f"pair-{mb}MB.de", out / f"pair-{mb}MB.en"
    if source.exists() and target.exists():
        return
    de = (DATA / "Multi30k" / "train.de").read_text().splitlines(keepends=True)
    en = (DATA / "Multi30k" / "train.en").read_text().splitlines(keepends=True)
    pairs = [(s, t) for s, t in zip(de, en) if s.strip() and t.strip()]
    de, en = np.array([s for s, _ in pairs], dtype=object), np.array([t for _, t in pairs], dtype=object)
    size = mb * 1_000_000
    with open(f"{source}.tmp", "w") as fs, open(f"{target}.tmp", "w") as ft:
        while fs.tell() + ft.tell() < size:
            at = rng.integers(0, len(de), 20_000)
            fs.write("".join(de[at]))
            ft.write("".join(en[at]))
    os.replace(f"{source}.tmp", source)
    os.replace(f"{target}.tmp", target)


def job_file(folder: Path, kind: str) -> Path:
    job = folder / f"{kind}.yaml"
    if kind == "lm":
        job.write_text("name: corpora_lm\ntask: language_model\ndata: {tokenizer: chars}\n"
                       "model: {hidden_size: 256, num_layers: 2, embedding_size: 64}\n")
    elif kind == "pair":  # jobs/translate_files_example.yaml's data section; the files given by prepare()
        job.write_text("name: corpora_pair\ntask: translate\ndata: {dataset: files, val_fraction: 0.02, "
                       "test_fraction: 0.05, lowercase: none, subword: {model: unigram, vocab_size: 8000, joint: true}, "
                       "max_length: 100, too_long: truncate, max_tokens: 3000}\n"
                       "model: {embed_size: 64, hidden_size: 64}\n")
    else:
        job.write_text("name: corpora_csv\ntask: text_classify\ndata: {source: files, text_column: text, "
                       "label_column: label, val_fraction: 0.05, test_fraction: 0.05}\n"
                       "model: {embedding_dim: 64, hidden_size: 128}\n")
    return job


def corpus_name(kind: str, mb: int) -> str:
    """The generated corpus a kind prepares (a parallel pair: its source side, the target beside it)."""
    return {"csv": f"csv-{mb}MB.csv", "pair": f"pair-{mb}MB.de"}.get(kind, f"text-{mb}MB.txt")


def corpus_files(corpus: Path) -> list[Path]:
    return [corpus, corpus.with_suffix(".en")] if corpus.name.startswith("pair-") else [corpus]


def prepare(corpus: Path, tokenizer: str | None, extra: list[str] = ()) -> dict:
    """One `lstm-train prepare` in a fresh cache: wall and preparation seconds, MB/s, peak RSS.
    `tokenizer`: a language model's (chars, bytes, words, bpe), "csv" (or None: text_classify) or
    "pair" (translate, on the pair `corpus` and its `.en` side)."""
    kind = tokenizer or "csv"
    with tempfile.TemporaryDirectory(dir=corpus.parent) as tmp:
        tmp = Path(tmp)
        if kind == "pair":
            args = [str(job_file(tmp, "pair")), f"data.train.source={corpus}",
                    f"data.train.target={corpus.with_suffix('.en')}", *extra]
        elif kind != "csv":
            args = [str(job_file(tmp, "lm")), f"data.root={corpus.parent}", f"data.files={corpus.name}",
                    f"data.tokenizer={tokenizer}", *extra]
        else:
            args = [str(job_file(tmp, "csv")), f"data.path={corpus}", *extra]
        env = {**os.environ, "LSTM_TRAIN_CACHE": str(tmp / "cache")}
        cmd = ["/usr/bin/time", "-f", "%M", sys.executable, "-m", "lstm_train", "prepare", *args]
        started = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-3000:])
        seconds = float(re.findall(r"\) in ([0-9.]+) s", proc.stderr)[-1])
        size = sum(f.stat().st_size for f in corpus_files(corpus)) / 1e6
        entry = Path(json.loads(proc.stdout)["path"])
        first = entry / "train.0.npy" if (entry / "train.0.npy").exists() else entry / "train.0.values.npy"
        digest = hashlib.sha256(first.read_bytes()).hexdigest()[:16] if size <= 500 else None
        return {"corpus": " + ".join(f.name for f in corpus_files(corpus)), "tokenizer": kind, "mb": round(size, 1),
                "prepare_s": seconds, "wall_s": round(wall, 2), "mb_per_s": round(size / seconds, 1),
                "peak_rss_mib": round(int(proc.stderr.strip().splitlines()[-1]) / 1024), "train_digest": digest}


def cmd_prepare(args: argparse.Namespace) -> list[dict]:
    rows = []
    for mb in args.sizes:
        for tok in args.tokenizers:
            row = prepare(args.corpora / corpus_name(tok, mb), tok)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def cmd_bpe_reference(args: argparse.Namespace) -> list[dict]:
    """tokenizers' own BPE train (from an iterator of the text's lines) + encode_batch of its lines."""
    from tokenizers import Tokenizer

    from lstm_train.data.lm_tokenizer import train_bpe  # the trainer settings prepare uses, and nothing else

    rows = []
    for mb in args.sizes:
        path = args.corpora / f"text-{mb}MB.txt"
        started = time.perf_counter()

        def batches():
            with open(path) as f:
                while block := f.readlines(8 << 20):
                    yield block

        tok = Tokenizer.from_str(train_bpe(batches(), 4000))
        n = 0
        for block in batches():
            n += sum(len(e.ids) for e in tok.encode_batch(block))
        seconds = time.perf_counter() - started
        row = {"corpus": path.name, "reference": "tokenizers train_from_iterator + encode_batch", "tokens": n,
               "seconds": round(seconds, 2), "mb_per_s": round(path.stat().st_size / 1e6 / seconds, 1)}
        if args.with_ours:  # `lstm-train prepare` with data.tokenizer=bpe on the same text: the BPE ratio
            ours = prepare(path, "bpe")
            row.update(ours_prepare_s=ours["prepare_s"], ours_mb_per_s=ours["mb_per_s"],
                       ours_peak_rss_mib=ours["peak_rss_mib"], ours_over_reference=round(ours["prepare_s"] / seconds, 2))
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def cmd_shards(args: argparse.Namespace) -> list[dict]:
    rows = []
    for mb in args.sizes:
        rows += shards(args.corpora / f"text-{mb}MB.txt")
    return rows


def shards(corpus: Path) -> list[dict]:
    """The corpus prepared as 1 shard here and as 4 shards of a SLURM array: wall times, digests."""
    rows = []
    for label, extra in (("1 shard, here", ["--workers", "1"]), ("4 shards, SLURM array", ["--executor", "slurm",
                                                                                          "--shards", "4"])):
        with tempfile.TemporaryDirectory(dir=corpus.parent) as tmp:
            job = job_file(Path(tmp), "lm")
            env = {**os.environ, "LSTM_TRAIN_CACHE": str(Path(tmp) / "cache")}
            started = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "lstm_train", "prepare", str(job), f"data.root={corpus.parent}",
                                   f"data.files={corpus.name}", "slurm.partition=debug", "slurm.time_min=30", *extra],
                                  capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr[-3000:])
            entry = Path(json.loads(proc.stdout)["path"])
            h = hashlib.sha256()
            for file in sorted(entry.glob("*.npy")):
                h.update(file.name.encode() + file.read_bytes())
            row = {"corpus": corpus.name, "how": label, "wall_s": round(time.perf_counter() - started, 1),
                   "columns_sha256": h.hexdigest()[:16]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def cmd_train(args: argparse.Namespace) -> list[dict]:
    """A few hundred steps on corpora of each size (default 40 MB and 4 GB) at 1 and 2 processes:
    each rank's peak RssAnon (the data is mapped, so it must not grow with the corpus).  The corpus
    is prepared first, apart, so the runs measure training on mapped data."""
    rows = []
    for kind in args.kinds:
        for mb in args.sizes:
            corpus = args.corpora / (f"text-{mb}MB.txt" if kind == "lm" else f"csv-{mb}MB.csv")
            if not corpus.exists():
                raise FileNotFoundError(f"{corpus}: generate it first (bench_corpora.py generate --sizes {mb})")
            # small evaluation splits: the final validation of a 4 GB corpus's 10% would take hours
            data = ([f"data.root={corpus.parent}", f"data.files={corpus.name}", "data.global_batch_size=32",
                     "data.val_fraction=0.0001"]
                    if kind == "lm" else [f"data.path={corpus}", "data.global_batch_size=64",
                                          "data.val_fraction=0.0005", "data.test_fraction=0.0005"])
            env = {**os.environ, "LSTM_TRAIN_CACHE": str(args.cache)}
            for i, procs in enumerate(args.procs):
                with tempfile.TemporaryDirectory(dir=corpus.parent) as tmp:
                    job = job_file(Path(tmp), kind)
                    overrides = [*data, f"train.max_steps={args.steps}", "train.eval_every_steps=100000",
                                 "train.threads=1",
                                 "tracking.wandb.mode=disabled", f"train.output_dir={tmp}/run"]
                    if i == 0:
                        prepare_first = subprocess.run([sys.executable, "-m", "lstm_train", "prepare", str(job), *data],
                                                       capture_output=True, text=True, env=env)
                        if prepare_first.returncode != 0:
                            raise RuntimeError(prepare_first.stderr[-2000:])
                    measured = measure_run(command(procs, str(job), overrides), env, ROOT, timeout=3600)
                    row = {"task": kind, "corpus_mb": mb, "processes": procs, "steps": args.steps, **measured}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("generate", "prepare", "bpe-reference", "shards", "train"))
    parser.add_argument("--corpora", "--out", type=Path, default=Path("/tmp/corpora"))
    parser.add_argument("--sizes", type=int, nargs="+", default=None,
                        help="MB: 10 40 400 by default; shards: 400; train: 40 4000")
    parser.add_argument("--tokenizers", nargs="+", default=[*TOKENIZERS, "csv", "pair"],
                        help="prepare: language-model tokenizers, csv (text_classify) and pair (translate)")
    parser.add_argument("--kinds-generated", dest="generated", nargs="+", default=KINDS, choices=KINDS,
                        help="generate: which corpora (text, csv, pair: a line-aligned parallel corpus)")
    parser.add_argument("--big", action="store_true", help="generate: the 4 GB corpora too")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--kinds", nargs="+", default=["lm", "csv"], help="train: lm (text, chars) and/or csv")
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2], help="train: process counts")
    parser.add_argument("--with-ours", action="store_true",
                        help="bpe-reference: also `lstm-train prepare` (bpe) on each text, and the ratio")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/corpora-cache"))
    parser.add_argument("--drop-cache", action="store_true",
                        help="train: remove --cache afterwards (a 4 GB corpus's entries take ~10 GB)")
    parser.add_argument("--json", type=Path, help="write the rows here too")
    args = parser.parse_args()
    if args.sizes is None:
        args.sizes = DEFAULT_SIZES.get(args.what, list(SIZES))
    if args.what == "generate":
        generate(args.corpora, args.sizes + ([4000] if args.big else []), args.generated)
        return
    try:
        rows = {"prepare": cmd_prepare, "bpe-reference": cmd_bpe_reference, "shards": cmd_shards,
                "train": cmd_train}[args.what](args)
    finally:
        if args.drop_cache:
            shutil.rmtree(args.cache, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
