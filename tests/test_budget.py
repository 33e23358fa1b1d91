"""Schedules sized by the time budget: with train.max_seconds, cosine and one-cycle span the
budget, so a budgeted run ends with the rate decayed however many steps the machine managed;
a resumed run's schedule goes on from the checkpoint's training time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import run_cli
from .test_language_model import corpus, job_file


def lrs(run_dir: Path) -> list[float]:
    lines = (run_dir / "metrics" / "rank-0.jsonl").read_text().splitlines()
    return [json.loads(line)["lr"] for line in lines if '"lr"' in line]


@pytest.mark.parametrize("scheduler", ["cosine", "onecycle"])
def test_a_budgeted_run_ends_with_the_rate_decayed(tmp_path: Path, scheduler: str) -> None:
    text = corpus(tmp_path / "data" / "c.txt")
    out = tmp_path / "run"
    proc = run_cli("run", *job_file(tmp_path, text, **{"train.epochs": "10000", "train.max_seconds": "4",
                                                       "train.log_every": "5", "optim.scheduler": scheduler}),
                   f"train.output_dir={out}")
    assert proc.returncode == 0, proc.stderr
    seen = lrs(out)
    assert len(seen) > 5
    # 10000 epochs would keep a step-sized schedule near its peak; the budget decays it
    assert seen[-1] < 0.2 * 0.01 and max(seen) > 0.5 * 0.01


def test_a_resumed_budgeted_run_continues_the_schedule(tmp_path: Path) -> None:
    text = corpus(tmp_path / "data" / "c.txt")
    out = tmp_path / "run"
    args = job_file(tmp_path, text, **{"train.epochs": "10000", "train.max_seconds": "3", "train.log_every": "1",
                                       "optim.scheduler": "cosine", "train.checkpoint_every": "1"})
    assert run_cli("run", *args, f"train.output_dir={out}").returncode == 0
    first = lrs(out)
    (out / "result.json").unlink()  # as if it had been stopped there: its checkpoint is what remains
    proc = run_cli("run", *args[:1], *args[1:], "train.max_seconds=6", f"train.output_dir={out}")
    assert proc.returncode == 0, proc.stderr
    later = lrs(out)[len(first):]
    # the second part starts where half of a 6 s budget is spent (rate about half), not at the peak
    assert later and later[0] < 0.75 * 0.01 and later[-1] < 0.2 * 0.01
