"""A full or read-only disk under a run: a clear error, no temporary file, the older checkpoint
resumable. Real tmpfs mounts (root), real runs."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from lstm_train import checkpoint
from lstm_train.runfiles import RunFileError, write_json

from .conftest import ROOT, require, run_cli

JOB = str(ROOT / "jobs" / "mnist_lstm.yaml")


def mount(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], capture_output=True, text=True)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """mount a tmpfs of a given size (`tmpfs("1m")`) under tmp_path; unmounted afterwards."""
    require(os.geteuid() == 0 and shutil.which("mount") is not None, "mounting a tmpfs needs root")
    mounted: list[Path] = []

    def make(size: str) -> Path:
        where = tmp_path / f"tmpfs{len(mounted)}"
        where.mkdir()
        done = mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where))
        require(done.returncode == 0, f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(where)
        return where

    yield make
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)


def remount(where: Path, options: str) -> None:
    done = mount("-o", f"remount,{options}", str(where))
    assert done.returncode == 0, done.stderr


def leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*.tmp"))


def test_result_json_on_a_full_and_on_a_read_only_disk(tmpfs: Callable[[str], Path]) -> None:
    disk = tmpfs("64k")
    write_json(disk / "result.json", {"test_accuracy": 0.5})
    with pytest.raises(RunFileError) as e:
        write_json(disk / "result.json", {"too_big": "x" * 200_000})
    assert str(e.value).startswith(f"cannot write result.json (195.3 KiB) in {disk}: No space left on device (")
    assert "KiB free of 64.0 KiB there" in str(e.value)
    assert leftovers(disk) == [] and json.loads((disk / "result.json").read_text()) == {"test_accuracy": 0.5}

    remount(disk, "ro")
    with pytest.raises(RunFileError, match=f"cannot write result.json .* in {disk}: Read-only file system"):
        write_json(disk / "result.json", {"test_accuracy": 0.9})
    assert json.loads((disk / "result.json").read_text()) == {"test_accuracy": 0.5}


def test_checkpoint_on_a_read_only_directory_keeps_the_previous_one(tmpfs: Callable[[str], Path]) -> None:
    folder = tmpfs("4m") / "checkpoints"
    state = checkpoint.Checkpoint(
        step=4, model={"w": torch.arange(1000.0)}, optimizer={}, scheduler={}, per_rank=[], world_size=1,
        global_batch=1, train_seconds=0.0, loop=checkpoint.SavedLoop(), task_info={}, config={})
    checkpoint.save(folder, state, keep=1)
    remount(folder.parent, "ro")
    with pytest.raises(RunFileError) as e:
        checkpoint.save(folder, dataclasses.replace(state, step=8), keep=1)
    assert "cannot write step-00000008 (" in str(e.value) and f"in {folder}: Read-only file system" in str(e.value)
    assert f"The newest complete checkpoint, {folder / 'step-00000004'}, is intact." in str(e.value)
    remount(folder.parent, "rw")
    path, loaded = checkpoint.load_latest(folder)
    assert path.name == "step-00000004" and torch.equal(loaded.model["w"], state.model["w"])
    checkpoint.save(folder, dataclasses.replace(state, step=8), keep=1)
    assert [s for s, _ in checkpoint.checkpoint_files(folder)] == [8] and leftovers(folder) == []


def test_a_run_whose_checkpoint_no_longer_fits_resumes_once_space_is_freed(
    fake_mnist: Path, tmp_path: Path, tmpfs: Callable[[str], Path]
) -> None:
    args = ["run", JOB, f"data.root={fake_mnist}", "train.epochs=2", "train.max_steps=12", "train.checkpoint_every=4",
            "train.keep_checkpoints=1"]
    # How big one checkpoint of this job is: a short run of it on the ordinary disk.
    probe = tmp_path / "probe"
    assert run_cli(*args, "train.max_steps=4", f"train.output_dir={probe}").returncode == 0
    size = sum(f.stat().st_size for f in (probe / "checkpoints" / "step-00000004").iterdir())

    # Room for the run's small files and one checkpoint and a half: step 4's fits, step 8's does not
    # (the older one is deleted only once the newer is complete).
    disk = tmpfs(str(size * 3 // 2 + 64 * 1024))
    out = disk / "run"
    full = run_cli(*args, f"train.output_dir={out}")
    assert full.returncode == 2, full.stderr[-3000:]
    # The size is the checkpoint's (about the probe's: the pickled loop state varies by a few bytes).
    said = re.search(rf"error: cannot write step-00000008 \(([\d.]+) KiB\) in {re.escape(str(out / 'checkpoints'))}: "
                     r"No space left on device \(", full.stderr)
    assert said and abs(float(said.group(1)) - size / 1024) < 2, full.stderr[-3000:]
    assert f"The newest complete checkpoint, {out / 'checkpoints' / 'step-00000004'}, is intact." in full.stderr
    assert "Traceback" not in full.stderr and "unexpected pos" not in full.stderr
    assert [s for s, _ in checkpoint.checkpoint_files(out / "checkpoints")] == [4]
    assert leftovers(out) == [] and not (out / "result.json").exists() and not (out / "lock.json").exists()

    remount(disk, "ro")
    read_only = run_cli(*args, f"train.output_dir={out}")
    assert read_only.returncode == 2 and f"in {out}: Read-only file system" in read_only.stderr, read_only.stderr[-3000:]
    assert "Traceback" not in read_only.stderr

    remount(disk, f"rw,size={size * 4 + 256 * 1024}")  # space freed: the same command resumes and finishes
    resumed = run_cli(*args, f"train.output_dir={out}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["resumed_from_step"] == 4 and result["steps"] == 12 and result["test_samples"] == 200
    assert [s for s, _ in checkpoint.checkpoint_files(out / "checkpoints")] == [12] and leftovers(out) == []
