"""slurm/accelerate.sbatch: plain sbatch + `accelerate launch` across two real SLURM nodes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from .conftest import ROOT


def test_sbatch_template_trains_one_model_on_two_nodes(cluster: None, tmp_path: Path, slurm_env: dict[str, str]) -> None:
    out = tmp_path / "run"
    log = tmp_path / "job.out"
    proc = subprocess.run(
        ["sbatch", "--wait", "--nodes=2", f"--output={log}", "slurm/accelerate.sbatch", "jobs/mnist_lstm.yaml",
         "train.max_steps=40", f"train.output_dir={out}", "tracking.wandb.mode=disabled"],
        capture_output=True, text=True, cwd=ROOT, env=slurm_env, timeout=300,
    )
    text = log.read_text() if log.exists() else ""
    assert proc.returncode == 0, f"{proc.stdout}{proc.stderr}\n--- job log ---\n{text[-3000:]}"
    result = json.loads((out / "result.json").read_text())
    assert result["world_size"] == 2 and result["test_samples"] == 10000
    assert len(result["weights_sha1_per_rank"]) == 2 and len(set(result["weights_sha1_per_rank"])) == 1
    assert "node[1-2]" in text or ("node1" in text and "node2" in text)
