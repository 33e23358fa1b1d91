"""`lstm-train evaluate RUN_DIR FILE...`: new labelled data scored through the test split's code
path.  SST-2's test sentences written as a CSV score exactly the run's own test accuracy (the
must-show script, scripts/evaluate_sst2.sh, on a short run); bad files are refused in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

try:
    from tests.conftest import ROOT, require, result_of, run_cli
except ImportError:
    from conftest import ROOT, require, result_of, run_cli  # type: ignore[no-redef]

SHORT = ["data.phrases=false", "model.embedding_dim=32", "model.hidden_size=32", "model.sparse_embeddings=false",
         "model.dropout=0", "model.embedding_dropout=0", "model.word_dropout=0", "optim.lr=0.005", "train.epochs=1",
         "train.eval_every_epochs=1", "tracking.wandb.mode=disabled"]


def test_sst2_test_sentences_as_a_csv_score_the_runs_own_test_accuracy(tmp_path: Path) -> None:
    data = Path(os.environ.get("LSTM_TRAIN_DATA", ROOT.parent / "shared" / "data"))
    require((data / "SST" / "trees" / "test.txt").is_file(), f"SST not found under {data}")
    run = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "evaluate_sst2.sh"), str(run), *SHORT], capture_output=True,
                          text=True, env=env, timeout=600, cwd=ROOT)
    assert proc.returncode == 0 and ": same" in proc.stdout, proc.stdout + proc.stderr[-3000:]
    result, scored = result_of(run), json.loads((run / "evaluate.json").read_text())
    assert scored["metrics"]["samples"] == result["test_samples"] == 1821
    assert scored["metrics"]["accuracy"] == result["test_accuracy"]  # the same number, not a close one
    assert abs(scored["metrics"]["loss"] - result["test_loss"]) < 1e-9
    assert scored["metrics"]["macro_f1"] > 0.45  # a model that learned something (a constant answer has 0.33)

    # Bad input: one line naming the file and what is wrong, exit 2.
    csv = run / "sst2_test.csv"
    (tmp_path / "odd.csv").write_text(csv.read_text().replace("positive", "great", 1))
    said = run_cli("evaluate", str(run), str(tmp_path / "odd.csv"))
    assert said.returncode == 2 and "odd.csv:" in said.stderr and "label 'great' does not occur" in said.stderr
    said = run_cli("evaluate", str(run), str(tmp_path / "missing.csv"))
    assert said.returncode == 2 and said.stderr.strip() == f"error: {tmp_path / 'missing.csv'}: no such file " \
        "(give labelled data files to score)"
