"""The checkpoint format: directories of safetensors, a weights_only state file and JSON that
read back exactly; anything else in their place is refused unread (a crafted pickle never
runs); format-1 run directories (one pickle per checkpoint, before format 2) are refused
with the command that converts them, and `lstm-train convert` makes them resume and predict."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from lstm_train import checkpoint
from lstm_train.checkpoint import checkpoint_files

from .conftest import ROOT, result_of, run_cli

SINE = str(ROOT / "jobs" / "sine_forecast.yaml")
SELECTED = [SINE, "data.sine.series=4", "data.sine.length=200", "data.val_size=0.15", "data.test_size=0.15",
            "model.hidden_size=8", "data.batch_size=32", "data.plot_series=1", "data.classical=none",
            "train.keep_checkpoints=5"]


class Planted:
    """What an attacker puts in a pickle: unpickling it runs `touch MARKER`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def small_checkpoint(step: int) -> checkpoint.Checkpoint:
    net = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(net.parameters())
    net(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scaler.scale(net(torch.ones(1, 3)).sum()).backward()
    scaler.step(optimizer)
    scaler.update()
    return checkpoint.Checkpoint(
        step=step, model=net.state_dict(), optimizer=optimizer.state_dict(),
        scheduler=torch.optim.lr_scheduler.StepLR(optimizer, 3).state_dict(), scaler=scaler.state_dict(),
        per_rank=[{"rng": checkpoint.rng_state(), "carry": {"hidden": torch.randn(2, 4)}}, {"rng": checkpoint.rng_state()}],
        world_size=2, global_batch=64, train_seconds=1.5,
        loop=checkpoint.SavedLoop(parts=2, counts={"samples": 640, "tokens": 0, "padded": 0}, last_eval=step),
        task_info={"classes": ["a", "b"], "pair": (1, 2)}, config={"name": "x", "slurm": {"setup": ["export T=1"]}})


def test_a_checkpoint_reads_back_exactly_and_only_as_data(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    saved = small_checkpoint(10)
    path = checkpoint.save(folder, saved, keep=2)
    assert path == folder / "step-00000010" and sorted(p.name for p in path.iterdir()) == [
        "meta.json", "model.safetensors", "state.pt"]
    assert path.stat().st_mode & 0o777 == 0o700 and all(f.stat().st_mode & 0o777 == 0o600 for f in path.iterdir())
    meta = json.loads((path / "meta.json").read_text())
    assert meta["format"] == "lstm_train.checkpoint" and meta["format_version"] == 2 and meta["step"] == 10
    assert meta["loop"] == {"parts": 2, "counts": {"samples": 640, "tokens": 0, "padded": 0}, "evals_since_best": 0,
                            "last_eval": 10, "stop_reference": None, "init": None}
    assert meta["config"] == {"name": "x"}  # no slurm/tracking/sweep section in a checkpoint
    torch.load(path / "state.pt", weights_only=True)  # nothing but tensors and plain containers

    loaded = checkpoint.load(path)
    assert loaded.step == 10 and loaded.world_size == 2 and loaded.loop == saved.loop
    assert all(torch.equal(loaded.model[k], v) for k, v in saved.model.items())
    assert loaded.scaler == saved.scaler and loaded.scaler["_growth_tracker"] == 1  # fp16's loss scaler
    restored = torch.amp.GradScaler("cpu")
    restored.load_state_dict(loaded.scaler)
    assert restored.state_dict() == saved.scaler
    assert torch.equal(loaded.per_rank[0]["carry"]["hidden"], saved.per_rank[0]["carry"]["hidden"])
    assert loaded.task_info == {"classes": ["a", "b"], "pair": [1, 2]}
    older = {**meta, "loop": {k: v for k, v in meta["loop"].items() if k not in ("stop_reference", "init")}}  # earlier
    (path / "meta.json").write_text(json.dumps(older))
    assert checkpoint.load(path).loop == saved.loop

    # The random streams continue where they were saved.
    checkpoint.set_rng_state(loaded.per_rank[0]["rng"])
    drawn = (random.random(), float(np.random.rand()), float(torch.rand(())))
    checkpoint.set_rng_state(saved.per_rank[0]["rng"])
    assert drawn == (random.random(), float(np.random.rand()), float(torch.rand(())))

    # keep-N: the oldest goes once the new one is in place; the same step saved again replaces it.
    for step in (20, 30, 30):
        checkpoint.save(folder, dataclasses.replace(saved, step=step), keep=2)
    assert [s for s, _ in checkpoint_files(folder)] == [30, 20] and not list(folder.glob(".*"))


def test_damaged_checkpoints_are_skipped_with_a_warning_foreign_ones_refused(tmp_path: Path, capfd) -> None:
    folder = tmp_path / "checkpoints"
    for step in (4, 8):
        checkpoint.save(folder, small_checkpoint(step), keep=5)
    model = folder / "step-00000008" / "model.safetensors"
    model.write_bytes(model.read_bytes()[:100])  # truncated (a full disk, a copy cut short)
    path, loaded = checkpoint.load_latest(folder)
    assert path.name == "step-00000004" and loaded.step == 4
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: skipping unreadable checkpoint {folder / 'step-00000008'}: ")

    marker = tmp_path / "ran"
    state = folder / "step-00000004" / "state.pt"
    torch.save({"optimizer": Planted(marker)}, state)
    with pytest.raises(checkpoint.NotACheckpoint, match=f"{state} is not a checkpoint written by lstm_train"):
        checkpoint.load_latest(folder)
    assert not marker.exists()
    meta = folder / "step-00000004" / "meta.json"
    meta.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(checkpoint.NotACheckpoint, match=f"{meta} is not a checkpoint written by lstm_train"):
        checkpoint.load(folder / "step-00000004")


def write_format_1(run_dir: Path) -> None:
    """Turn a run directory's checkpoints into format 1, the way lstm_train wrote them before
    format 2 (train.save / validate and checkpoint.atomic_save at ecce956): one torch.save'd
    dict per checkpoint, numpy's random state as numpy objects, the whole job in it."""
    folder = run_dir / "checkpoints"
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    for step, path in checkpoint_files(folder):
        new = checkpoint.load(path)
        torch.save({
            "model": new.model, "optimizer": new.optimizer, "scheduler": new.scheduler,
            "rng": [{"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}],
            "step": new.step, "world_size": new.world_size, "global_batch": new.global_batch,
            "train_seconds": new.train_seconds, "loop": dataclasses.asdict(new.loop), "task_info": new.task_info,
            "config": config,
        }, folder / f"step-{step:08d}.pt")
        shutil.rmtree(path)
    best = checkpoint.load_best(folder)
    torch.save({"step": best.step, "value": best.value, "metrics": best.metrics, "model": best.model,
                "task_info": best.task_info, "config": config}, folder / "best.pt")
    shutil.rmtree(folder / "best")


def test_a_format_1_run_is_refused_until_converted_then_resumes_and_predicts(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = [*SELECTED, "train.epochs=2", f"train.output_dir={out}"]
    assert run_cli("run", *args).returncode == 0
    first = result_of(out)
    before = run_cli("predict", str(out))
    assert before.returncode == 0 and before.stdout.strip(), before.stderr[-2000:]
    write_format_1(out)
    (out / "result.json").unlink()  # so that `run` would resume

    for command in (["predict", str(out)], ["run", *args]):
        refused = run_cli(*command)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr[-2000:]
        assert f"run: lstm-train convert {out}" in refused.stderr and "older lstm_train" in refused.stderr
        assert str(out / "checkpoints" / "best.pt") in refused.stderr or str(out / "checkpoints" / "step-") in refused.stderr

    converted = run_cli("convert", str(out))
    assert converted.returncode == 0, converted.stderr[-2000:]
    assert converted.stdout.count("converted ") == len(list((out / "checkpoints").glob("*.pt")))
    after = run_cli("predict", str(out))
    assert after.returncode == 0 and after.stdout == before.stdout, after.stderr[-2000:]
    resumed = run_cli("run", *args[:-2], "train.epochs=3", f"train.output_dir={out}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert result_of(out)["resumed_from_step"] == first["steps"] and result_of(out)["steps"] > first["steps"]


def test_a_crafted_pickle_in_a_run_directory_never_runs(tmp_path: Path) -> None:
    """A run directory from someone else whose checkpoint is a pickle that would create a
    file: predict, resume and convert all exit 2 naming it, and the file is never created."""
    out = tmp_path / "run"
    args = [*SELECTED, "train.max_steps=2", f"train.output_dir={out}"]
    assert run_cli("run", *args).returncode == 0
    marker = tmp_path / "ran"
    folder = out / "checkpoints"
    shutil.rmtree(folder)
    folder.mkdir()
    planted = folder / "step-00000002.pt"
    torch.save({"model": {}, "step": 2, "rng": Planted(marker)}, planted)
    torch.save({"step": 2, "model": Planted(marker)}, folder / "best.pt")
    (out / "result.json").unlink()
    for command in (["predict", str(out)], ["run", *args], ["convert", str(out)]):
        proc = run_cli(*command)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, (command, proc.stderr[-2000:])
        assert str(folder / "best.pt") in proc.stderr or str(planted) in proc.stderr, proc.stderr[-2000:]
        assert not marker.exists(), f"{command[0]} ran the pickle"
    assert "is not a checkpoint written by lstm_train" in proc.stderr  # convert: it read, and refused

    # The same pickle as a format-2 run's state.pt: resume refuses it (predict never reads state.pt).
    shutil.rmtree(folder)
    assert run_cli("run", *args).returncode == 0
    (out / "result.json").unlink()
    state = folder / "step-00000002" / "state.pt"
    torch.save({"optimizer": Planted(marker)}, state)
    proc = run_cli("run", *args)
    assert proc.returncode == 2 and f"{state} is not a checkpoint written by lstm_train" in proc.stderr, proc.stderr
    assert not marker.exists()
