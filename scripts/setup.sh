#!/usr/bin/env bash
# Create .venv with lstm_train and its dependencies (idempotent, about 1-2 minutes the first time).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# torch/torchvision pinned to the builds known to work together here; the rest from pyproject.toml.
.venv/bin/pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1 -e '.[test,bench,export]' 2>&1 \
  | grep -v "^WARNING: Location" || true
# The UEA archive's JapaneseVowels .ts files, which sktime's wheel ships (the sequence task's
# shipped job and its test read them; only the files are read, so none of sktime's dependencies).
.venv/bin/pip install -q --disable-pip-version-check --no-deps sktime==1.2.0 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import lstm_train, torch, torchvision, accelerate, wandb, submitit" \
  || { echo "setup: the virtual environment is incomplete (see pip's output above)" >&2; exit 1; }
