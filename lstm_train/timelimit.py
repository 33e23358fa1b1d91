"""What a stop at `train.max_seconds` must leave room for, so that a budgeted run's training time
ends within its budget on a quiet machine and on a busy one.

A run that stops at its time limit still runs one more thing inside its training time: the final
validation (`train.conclude`: the last weights compete with the best).  Stopping when the clock
reaches the limit therefore overshoots by a whole validation, and by more on a loaded machine,
where the validation slows as much as the steps do.  So the loop stops at the last step after
which the next step and the final validation still fit: training time + `Reserve.seconds()`
>= `train.max_seconds`.

How long the final validation takes is known once one has run.  Before that (a short budget ends
before the first `train.eval_every_*` validation), it is estimated by a probe: once training has
used `PROBE_AT` of the budget, parts of the validation split (`Task.eval_pieces`) are evaluated
for a small share of the budget and scaled to the whole, and what a validation runs besides (a
task's evaluation tables) is run once (`train.probe_validation`).  Every real validation replaces the
estimate.  The estimate is scaled by how much the steps have slowed (or sped up) since it was
measured: a machine that got busier slows a validation by as much as the steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

PROBE_AT = 0.5  # share of the budget after which a validation not yet timed in this process is probed:
#                 late enough that a run evaluating anyway (train.eval_every_*) has timed one by then
PROBE_SHARE = 0.005  # the probe's own time: this share of the budget (at least one timed piece) ...
PROBE_MIN_S, PROBE_MAX_S = 0.1, 2.0  # ... but at least and at most this many seconds (a few pieces, not noise)
SMOOTHING = 0.2  # weight of the newest steps in the running time per step
LOAD_RATIO = (0.5, 4.0)  # how far a change of step speed scales the validation's estimate, at most


@dataclass
class Reserve:
    """Per process: the running time per step, the final validation's expected time, and the time
    spent outside steps (evaluations, checkpoints), which the time per step leaves out."""

    step_seconds: float | None = None  # running (smoothed) training time per step, pauses left out
    eval_seconds: float | None = None  # how long the final validation is expected to take
    eval_step_seconds: float | None = None  # the time per step when `eval_seconds` was measured
    paused: float = 0.0  # seconds of this process spent evaluating and checkpointing
    mark: tuple[int, float] | None = None  # (step, training seconds less pauses) at the newest observation

    def observe(self, step: int, seconds: float) -> None:
        """The loop's step and training time now: updates the time per step from the steps since
        the last observation (any number of them; evaluations and checkpoints between left out)."""
        active = seconds - self.paused
        if self.mark is not None and step <= self.mark[0]:
            return  # this step was seen already (a time check and a sync at one step)
        if self.mark is not None:
            per_step = max(0.0, active - self.mark[1]) / (step - self.mark[0])
            self.step_seconds = per_step if self.step_seconds is None else \
                (1 - SMOOTHING) * self.step_seconds + SMOOTHING * per_step
            if self.eval_seconds is not None and self.eval_step_seconds is None:
                self.eval_step_seconds = self.step_seconds  # measured before steps were: the first speed seen
        self.mark = (step, active)

    def pause(self, seconds: float) -> None:
        """Time spent outside steps (a checkpoint written)."""
        self.paused += seconds

    def evaluated(self, seconds: float) -> None:
        """A validation (or the probe's estimate of one) took `seconds`: the final one is expected
        to take as long, at the step speed of now."""
        self.eval_seconds, self.eval_step_seconds = seconds, self.step_seconds

    def seconds(self, final_validation: bool) -> float:
        """What a stop now still runs inside the budget: the next step, and (`final_validation`)
        the final validation, scaled by the steps' change of speed since it was measured."""
        step = self.step_seconds or 0.0
        if not final_validation or self.eval_seconds is None:
            return step
        ratio = 1.0
        if self.step_seconds and self.eval_step_seconds:
            ratio = min(LOAD_RATIO[1], max(LOAD_RATIO[0], self.step_seconds / self.eval_step_seconds))
        return step + self.eval_seconds * ratio


Piece = tuple[Any, Any, float]  # (split, batches, its share of the whole evaluation's work)


def probe(pieces: Iterable[Piece], evaluate: Callable[[Any, Any], None], limit: float) -> float:
    """Seconds a whole evaluation is expected to take, from timing some of its `pieces`
    (`Task.eval_pieces`, in an order that samples all of it): pieces are evaluated until
    PROBE_SHARE of the `limit` (within PROBE_MIN_S and PROBE_MAX_S) is spent, and the time scaled by the share of
    the work they were.  The first piece warms up and is not counted, unless it is the only one."""
    target = min(PROBE_MAX_S, max(PROBE_MIN_S, PROBE_SHARE * limit))
    warm: tuple[float, float] | None = None
    spent = share = 0.0
    for split, batches, part in pieces:
        began = time.perf_counter()
        evaluate(split, batches)
        took = time.perf_counter() - began
        if warm is None:
            warm = (took, part)
            continue
        spent, share = spent + took, share + part
        if spent >= target:
            break
    if share <= 0:
        spent, share = warm if warm is not None and warm[1] > 0 else (0.0, 1.0)
    return spent / share
