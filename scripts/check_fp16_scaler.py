"""fp16 on a GPU: the GradScaler's state is saved in state.pt and restored on resume.

Needs a CUDA GPU (on CPU accelerate makes no loss scaler, so the loop's path cannot be
shown there; tests/test_checkpoint.py covers the format's round trip of a scaler state).
Usage (about a minute):  python scripts/check_fp16_scaler.py [OUT_DIR]

Trains the tiny sine job 8 steps in fp16 with a checkpoint every 4, reads the scaler state
of step 4 and 8, deletes step 8 and the result, resumes, and checks that the resumed run's
step-8 scaler state equals the uninterrupted one's (scale and growth tracker).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from lstm_train import checkpoint

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    if not torch.cuda.is_available():
        print("error: needs a CUDA GPU (fp16's GradScaler exists only there)", file=sys.stderr)
        return 2
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()) / "fp16"
    args = [sys.executable, "-m", "lstm_train", "run", str(ROOT / "jobs" / "sine_forecast.yaml"),
            "data.sine.series=4", "data.sine.length=200", "model.hidden_size=8", "data.batch_size=32",
            "data.plot_series=1", "data.classical=none", "train.mixed_precision=fp16", "train.max_steps=8",
            "train.checkpoint_every=4", "train.keep_checkpoints=5", "tracking.wandb.mode=disabled",
            f"train.output_dir={out}"]
    subprocess.run(args, check=True, cwd=ROOT)
    straight = {s: checkpoint.load(p).scaler for s, p in checkpoint.checkpoint_files(out / "checkpoints")}
    print("uninterrupted:", json.dumps(straight))
    assert all(s is not None for s in straight.values()), "fp16 run saved no GradScaler state"
    shutil.rmtree(out / "checkpoints" / "step-00000008")
    (out / "result.json").unlink()
    subprocess.run(args, check=True, cwd=ROOT)
    resumed = checkpoint.load(out / "checkpoints" / "step-00000008").scaler
    print("resumed:      ", json.dumps(resumed))
    assert json.loads(json.dumps(resumed)) == json.loads(json.dumps(straight[8])), "the resumed scaler differs"
    print("ok: the GradScaler state is saved and restored")
    return 0


if __name__ == "__main__":
    sys.exit(main())
