"""Schedules sized by the time budget: with train.max_seconds, cosine and one-cycle span the
budget, so a budgeted run ends with the rate decayed however many steps the machine managed;
a resumed run's schedule goes on from the checkpoint's training time.

The rates are checked against the run's own clock, not a quiet machine's: every sync sets the
share of the budget spent (training time / max_seconds, `optim.Budget`) and logs a row stamped
with the wall time, and the steps up to the next sync use that share.  So the share behind a
row's rate is at least the wall time from the first row to the row before it, over the budget,
however slowly a loaded machine ran the steps in between."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from .conftest import result_of, run_cli
from .test_language_model import corpus, job_file

PEAK = 0.01  # job_file's optim.lr
STAMP_S = 0.25  # a row is stamped a little after its sync read the training time (a loaded machine may switch
#                 to another process between the two: tens of milliseconds); a schedule sized by steps is
#                 further off than this from the second second of the budget on


def rows(run_dir: Path) -> list[tuple[float, float]]:
    """(wall time, rate) of every sync's row, in order."""
    lines = (run_dir / "metrics" / "rank-0.jsonl").read_text().splitlines()
    return [(r["time"], r["lr"]) for r in map(json.loads, lines) if "lr" in r]


def highest_from(scheduler: str, share: float) -> float:
    """The highest rate (a share of the peak) the budgeted schedule gives at `share` of the budget
    or later (optim.make_scheduler without warm-up: cosine falls all the way; one-cycle rises to its
    peak at 0.3, then falls as a cosine to 1e-4 / 25 of it)."""
    share = min(1.0, max(0.0, share))
    if scheduler == "cosine":
        return 0.5 * (1 + math.cos(math.pi * share))
    if share <= 0.3:
        return 1.0
    return 1e-4 / 25 + (1 - 1e-4 / 25) * 0.5 * (1 + math.cos(math.pi * (share - 0.3) / 0.7))


def assert_follows_the_clock(seen: list[tuple[float, float]], scheduler: str, budget: float, before: float) -> None:
    """Each row's rate is at most what the schedule gives at the share spent by the sync before it:
    `before` (the share a resumed part started with) plus the wall time since this part's first row.
    A schedule sized by steps (10000 epochs here) stays near its peak and fails this at the second second."""
    start = seen[0][0]
    for (t_before, _), (t, rate) in zip(seen, seen[1:]):
        bound = PEAK * highest_from(scheduler, before + (t_before - start - STAMP_S) / budget)
        assert rate <= bound * (1 + 1e-5), (t - start, rate, bound)


@pytest.mark.parametrize("scheduler", ["cosine", "onecycle"])
def test_a_budgeted_run_ends_with_the_rate_decayed(tmp_path: Path, scheduler: str) -> None:
    text = corpus(tmp_path / "data" / "c.txt")
    out = tmp_path / "run"
    proc = run_cli("run", *job_file(tmp_path, text, **{"train.epochs": "10000", "train.max_seconds": "6",
                                                       "train.log_every": "5", "optim.scheduler": scheduler}),
                   f"train.output_dir={out}")
    assert proc.returncode == 0, proc.stderr
    seen = rows(out)
    result = result_of(out)
    print(f"{scheduler}: {len(seen)} rows over {seen[-1][0] - seen[0][0]:.2f} s, rates {seen[0][1]:.5f} .. "
          f"{max(r for _, r in seen):.5f} .. {seen[-1][1]:.5f}; train_seconds {result['train_seconds']}, "
          f"eval_seconds {result['eval_seconds']}")
    assert len(seen) > 5 and result["stopped_at_time_limit"]
    assert_follows_the_clock(seen, scheduler, 6.0, 0.0)
    # It went through its peak (one-cycle sized by steps would still be warming up, at 1/25 of it) and ended decayed
    # below half of it, where 10000 epochs would keep a cosine sized by steps at its peak.  Half, in 6 s: the run
    # stops where its final validation (with its 200-token sample) still fits, and a loaded machine's slower
    # validation reserves more: 1.2 s before the end of a 4 s budget with three workers, a busy loop and a training
    # run on two cores, where the one-cycle rate was at 0.36 of its peak.  Half of the peak is 3 s (cosine) or
    # 2.1 s (one-cycle) before the end of 6 s.
    assert max(r for _, r in seen) > 0.5 * PEAK and seen[-1][1] < 0.5 * PEAK


def test_a_resumed_budgeted_run_continues_the_schedule(tmp_path: Path) -> None:
    text = corpus(tmp_path / "data" / "c.txt")
    out = tmp_path / "run"
    args = job_file(tmp_path, text, **{"train.epochs": "10000", "train.max_seconds": "3", "train.log_every": "1",
                                       "optim.scheduler": "cosine", "train.checkpoint_every": "1"})
    assert run_cli("run", *args, f"train.output_dir={out}").returncode == 0
    first = rows(out)
    spent = result_of(out)["train_seconds"]  # what its final checkpoint records: where a resumed schedule goes on
    (out / "result.json").unlink()  # as if it had been stopped there: its checkpoint is what remains
    proc = run_cli("run", *args[:1], *args[1:], "train.max_seconds=6", f"train.output_dir={out}")
    assert proc.returncode == 0, proc.stderr
    later = rows(out)[len(first):]
    print(f"first part {spent} s; second part: {len(later)} rows, rates {later[0][1]:.5f} .. {later[-1][1]:.5f}")
    assert later and 1.5 < spent < 6
    # the second part starts at the share of the 6 s budget its checkpoint had spent (about half), not at the peak
    assert later[0][1] == pytest.approx(PEAK * highest_from("cosine", spent / 6), rel=1e-3), (later[0], spent)
    # and goes on by the clock from there, the budget's end as the schedule's end
    assert_follows_the_clock(later, "cosine", 6.0, spent / 6)
    assert later[-1][1] < 0.5 * later[0][1]
