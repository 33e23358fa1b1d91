#!/usr/bin/env bash
# The whole test suite: set up .venv, start the local SLURM cluster (root, Debian), run pytest.
# Extra arguments go to pytest (e.g. -k resume).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  bash slurm/local-cluster.sh up
else
  echo "test: not root on a Debian-like machine: the SLURM tests will be skipped (they fail under CI=true)" >&2
fi
export LSTM_TRAIN_DATA=${LSTM_TRAIN_DATA:-$(cd .. && pwd)/shared/data}
export WANDB_SILENT=true
exec .venv/bin/python -m pytest "$@"
