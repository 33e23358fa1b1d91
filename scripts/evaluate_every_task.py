"""Issue 36's must-show for `lstm-train evaluate`: one shipped job per task family trained on the real
data under $LSTM_TRAIN_DATA with a tiny budget, its own test split given to `evaluate` as files of
the task's format, and the two test metrics side by side.

    python scripts/evaluate_every_task.py OUT ROW     # one row: train, write the test files, evaluate
    python scripts/evaluate_every_task.py OUT --table # the rows done so far, as a Markdown table

ROW is one of: mnist, sst2, ud_ewt, multi30k, caption, airline, shakespeare.  Each row appends one
JSON line to OUT/table.jsonl (run them one at a time under /work/bin/testslot)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LSTM_TRAIN_DATA", ROOT / "data"))
OFF = ["tracking.wandb.mode=disabled", "train.checkpoint_every=100000"]


def mnist_files(run: Path, out: Path) -> list[Path]:
    raw = DATA / "MNIST" / "raw"
    return [raw / "t10k-images-idx3-ubyte", raw / "t10k-labels-idx1-ubyte"]


def sst2_files(run: Path, out: Path) -> list[Path]:
    sys.path.insert(0, str(ROOT / "scripts"))
    from sst2_test_csv import write_test_csv

    write_test_csv(out / "sst2_test.csv", DATA / "SST" / "trees")
    return [out / "sst2_test.csv"]


def ud_files(run: Path, out: Path) -> list[Path]:
    return [DATA / "UD_English-EWT" / "en_ewt-ud-test.conllu"]


def multi30k_files(run: Path, out: Path) -> list[Path]:
    return [DATA / "Multi30k" / "test_2016_flickr.de", DATA / "Multi30k" / "test_2016_flickr.en"]


def caption_files(run: Path, out: Path) -> list[Path]:
    from lstm_train.cli import load_run
    from lstm_train.tasks.caption import write_strips

    _, task, _, _ = load_run(run)
    strips = task.strips(train=False)  # the job's own test strips (MNIST test digits, seed + 1)
    return [write_strips(strips.images, strips.tokens, out / "strips")]


def airline_files(run: Path, out: Path) -> list[Path]:
    """The test span and the window of months before it, as a CSV of the series (pmdarima's data)."""
    from lstm_train.cli import load_run
    from lstm_train.data.series import sources

    _, _, _, info = load_run(run)
    air, spans = sources.airline(), info["spans"]
    start = spans["train"] + spans["val"] - info["window"]
    path = out / "airline_test.csv"
    path.write_text("Month,Passengers\n" + "".join(f"{t:%Y-%m},{float(v)!r}\n" for t, v in
                                                   zip(air.times[start:], air.values[start:])))
    return [path]


def shakespeare_files(run: Path, out: Path) -> list[Path]:
    """The corpus' test part as the run cut it (its prepared pieces of the test split)."""
    from lstm_train.cli import load_run
    from lstm_train.data.streams.language_model import LanguageModelStream

    job, *_ = load_run(run)
    path = out / "shakespeare_test.txt"
    with open(path, "wb") as dst:
        for piece in LanguageModelStream(job.data).pieces():
            if piece.split == "test":
                with open(piece.path, "rb") as src:
                    src.seek(piece.start)
                    dst.write(src.read(piece.end - piece.start))
    return [path]


ROWS: dict[str, tuple[str, str, list[str], Callable[[Path, Path], list[Path]], str]] = {
    "mnist": ("classify (MNIST IDX)", "mnist_lstm", ["train.max_steps=100"], mnist_files, "accuracy"),
    "sst2": ("text_classify (SST-2 CSV)", "sst2_lstm",
             ["train.max_steps=300", "data.phrases=false", "model.embedding_dim=32", "model.hidden_size=32",
              "model.sparse_embeddings=false", "optim.lr=0.005"], sst2_files, "accuracy"),
    "ud_ewt": ("tag (UD EWT CoNLL-U)", "ud_ewt_upos",
               ["train.max_steps=300", "model.hidden_size=32", "model.word_dim=32", "model.char_size=32"],
               ud_files, "accuracy"),
    "multi30k": ("translate (Multi30k de-en text)", "multi30k_de_en",
                 ["train.max_steps=300", "model.embed_size=64", "model.hidden_size=64", "model.decoder_hidden=64",
                  "model.num_layers=1", "data.subword.vocab_size=2000", "model.max_decode_extra=5",
                  "model.max_decode_ratio=1.2"], multi30k_files, "bleu"),
    "caption": ("caption (strips: PNG + index)", "mnist_caption",
                ["train.max_steps=60", "data.num_train=5000", "data.num_test=1000", "data.max_digits=3"],
                caption_files, "sequence_accuracy"),
    "airline": ("forecast (airline series CSV)", "airline_forecast", ["train.epochs=10"], airline_files, "mase"),
    "shakespeare": ("language model (tinyshakespeare text)", "shakespeare_char",
                    ["train.max_steps=40", "train.max_seconds=null", "train.eval_every_steps=40",
                     "data.test_fraction=0.05", "model.hidden_size=128", "model.num_layers=1"],
                    shakespeare_files, "loss"),
}


def lstm_train(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "lstm_train", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "WANDB_MODE": "disabled"})
    if proc.returncode:
        sys.exit(f"lstm-train {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return proc


def row(out: Path, name: str) -> dict:
    task, job, keys, files_of, metric = ROWS[name]
    run = out / name / "run"
    if not (run / "result.json").is_file():
        lstm_train("run", job, f"train.output_dir={run}", *keys, *OFF)
    files = files_of(run, out / name)
    scored = json.loads(lstm_train("evaluate", str(run), *map(str, files), "--json").stdout)["metrics"]
    result = json.loads((run / "result.json").read_text())
    return {"task": task, "job": job, "keys": keys, "metric": metric, "run": result[f"test_{metric}"],
            "evaluate": scored[metric], "run_loss": result["test_loss"], "evaluate_loss": scored["loss"],
            "files": [str(f) for f in files], "run_dir": str(run)}


def table(out: Path) -> str:
    lines = ["| task | job | metric | run's result.json | evaluate on the test files | same |", "|---|---|---|---|---|---|"]
    for line in (out / "table.jsonl").read_text().splitlines():
        r = json.loads(line)
        lines.append(f"| {r['task']} | {r['job']} | test_{r['metric']} | {r['run']!r} | {r['evaluate']!r} | "
                     f"{'yes' if r['run'] == r['evaluate'] else 'diff %.2e' % abs(r['run'] - r['evaluate'])} |")
    return "\n".join(lines)


if __name__ == "__main__":
    where = Path(sys.argv[1])
    if sys.argv[2] == "--table":
        print(table(where))
    else:
        where.joinpath(sys.argv[2]).mkdir(parents=True, exist_ok=True)
        done = row(where, sys.argv[2])
        with open(where / "table.jsonl", "a") as f:
            f.write(json.dumps(done) + "\n")
        print(json.dumps(done))
