#!/usr/bin/env bash
# Must-show of `lstm-train evaluate`: the shipped SST-2 job trained, then scored on SST-2's test
# sentences written as a CSV; the two accuracies must be the same number.
#   bash scripts/evaluate_sst2.sh [RUN_DIR] [key=value ...]   (LSTM_TRAIN_DATA: the folder holding SST/)
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/sst2_lstm/evaluate-must-show}
shift || true
PY=${PYTHON:-.venv/bin/python}
[ -f "$RUN/result.json" ] || "$PY" -m lstm_train run sst2_lstm "train.output_dir=$RUN" "$@" >/dev/null
"$PY" scripts/sst2_test_csv.py "$RUN/sst2_test.csv"
"$PY" -m lstm_train evaluate "$RUN" "$RUN/sst2_test.csv" --json > "$RUN/evaluate.json"
"$PY" - "$RUN" <<'PY'
import json, sys
run = sys.argv[1]
trained = json.load(open(f"{run}/result.json"))["test_accuracy"]
scored = json.load(open(f"{run}/evaluate.json"))["metrics"]["accuracy"]
print(f"run's test accuracy {trained:.6f}; evaluate on the CSV {scored:.6f}: {'same' if trained == scored else 'DIFFERENT'}")
sys.exit(0 if trained == scored else 1)
PY
