"""Write SST-2's test sentences as a CSV (text,label), the way a user brings labelled data to
`lstm-train evaluate`: the treebank's tokens joined by spaces, labels as the run's class names.

    python scripts/sst2_test_csv.py OUT.csv [SST_TREES_DIR]

Used by the evaluate must-show (scripts/evaluate_sst2.sh) and tests/test_evaluate.py."""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

from lstm_train.data.readers import sst


def write_test_csv(out: Path, trees: Path) -> int:
    words, labels = sst.read_sst(trees / "test.txt", 2, False)
    with open(out, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows([" ".join(w), sst.CLASS_NAMES[2][y]] for w, y in zip(words, labels))
    return len(words)


if __name__ == "__main__":
    root = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(os.environ.get("LSTM_TRAIN_DATA", "data")) / "SST" / "trees"
    print(f"wrote {write_test_csv(Path(sys.argv[1]), root)} sentences to {sys.argv[1]}")
