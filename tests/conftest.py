"""Shared fixtures: real data locations, small IDX datasets, and the CI rule.

In CI (CI=true) a missing prerequisite is a failure, never a silent skip.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lstm_train.data.idx import write_idx

ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, reason: str) -> None:
    """Skip locally when a prerequisite is missing; fail in CI, where everything must run."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"prerequisite missing in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """The real MNIST/Fashion-MNIST files ($LSTM_TRAIN_DATA or ../shared/data)."""
    root = Path(os.environ.get("LSTM_TRAIN_DATA", ROOT.parent / "shared" / "data"))
    require((root / "MNIST" / "raw" / "train-images-idx3-ubyte").exists(), f"MNIST not found under {root}")
    return root


def make_fake_mnist(root: Path, n_train: int = 512, n_test: int = 200, seed: int = 0, name: str = "MNIST") -> Path:
    """A small learnable MNIST-shaped dataset in torchvision's layout: the label is drawn as
    a bright horizontal bar at row 2*label, so an LSTM reading rows learns it in a few steps."""
    rng = np.random.default_rng(seed)
    raw = root / name / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, label in enumerate(labels):
            images[i, 2 * label + 4, 4:24] = 250
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


@pytest.fixture
def fake_mnist(tmp_path: Path) -> Path:
    return make_fake_mnist(tmp_path / "data")


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """`python -m lstm_train ARGS` in a subprocess, as a user would run it."""
    full_env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "lstm_train", *args], capture_output=True, text=True, env=full_env, timeout=timeout, cwd=cwd
    )


def accelerate_cli(num_processes: int, *args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """`accelerate launch --multi_gpu --num_processes N -m lstm_train ARGS` on this CPU machine."""
    full_env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1", **(env or {})}
    accelerate = str(Path(sys.executable).parent / "accelerate")
    cmd = [accelerate, "launch", "--multi_gpu", "--num_processes", str(num_processes), "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
           "-m", "lstm_train", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout, cwd=ROOT)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
