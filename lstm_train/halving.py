"""Successive halving for a sweep's points, decided by each point at its own evaluations.

`sweep.early_terminate: {type: hyperband, min_iter: M, eta: E}` (W&B's key) sets rungs at
M, M*E, M*E^2 ... training steps.  At the first evaluation at or past a rung, a point
records its validation primary metric (a sweep's points always have validation data: `config.
select_on_validation`; never the test split) in `<sweep dir>/rungs/<point>.json`, reads what every other
point recorded at that rung, and stops when at least E points have been there and it is not
in the best 1/E of them (E = 2: the worse half stops).  It then ends as an early-stopped run
(its best weights tested, result.json written, `halving.json` saying why), so `status` and a
resubmission treat it as finished.

Asynchronous, as W&B's hyperband and ASHA are: the first points to reach a rung have nothing
to compare with and go on, so with `slurm.array_parallelism` below the number of points the
first batch of points runs further than a synchronous halving would let it.  The decision is
made on rank 0 from files on the shared filesystem the points already share (their sweep
directory), so it needs no login-node process: `submit` without `--wait` halves too.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from . import runfiles

RUNGS = "rungs"
DECISION = "halving.json"


def rung_at(step: int, min_steps: int, eta: int) -> int | None:
    """The highest rung (in steps) at or below `step`, or None before the first."""
    if step < min_steps:
        return None
    rung = min_steps
    while rung * eta <= step:
        rung *= eta
    return rung


def record_and_decide(run_dir: Path, step: int, metric: str, value: float, higher_is_better: bool,
                      min_steps: int, eta: int, final: bool = False) -> str | None:
    """Record this point's `value` at the rung `step` reached (once per rung) and return why it
    should stop, or None to go on.  `final`: the point's last step (recorded for the others
    to compare with; nothing left to save by stopping)."""
    decided = runfiles.read_json(Path(run_dir) / DECISION)
    if decided is not None:  # stopped before, and resumed since (say the node died before result.json)
        return str(decided["reason"])
    rung = rung_at(step, min_steps, eta)
    if rung is None:
        return None
    folder = Path(run_dir).parent / RUNGS
    folder.mkdir(parents=True, exist_ok=True)
    own = folder / f"{Path(run_dir).name}.json"
    mine = runfiles.read_json(own) or {}
    if str(rung) in mine:  # decided at this rung already (a later evaluation, or a resumed run)
        return None
    score = value if math.isfinite(value) else (-math.inf if higher_is_better else math.inf)
    mine[str(rung)] = {"step": step, "value": score}
    runfiles.write_json(own, mine)
    seen: dict[str, float] = {}
    for path in sorted(folder.glob("*.json")):
        entry = (runfiles.read_json(path) or {}).get(str(rung))
        if entry is not None:
            seen[path.stem] = float(entry["value"])
    if final or len(seen) < eta:
        return None
    ranked = sorted(seen.values(), reverse=higher_is_better)
    keep = math.ceil(len(ranked) / eta)
    cutoff = ranked[keep - 1]
    worse = score < cutoff if higher_is_better else score > cutoff
    if not worse:
        return None
    reason = (f"successive halving at rung {rung} steps: {metric} {value:.4g} is not in the best {keep} of the "
              f"{len(seen)} point(s) there (cutoff {cutoff:.4g}, eta {eta})")
    decision: dict[str, Any] = {"rung": rung, "step": step, "metric": metric, "value": value, "keep": keep,
                                "cutoff": cutoff, "points_at_rung": seen, "reason": reason}
    runfiles.write_json(Path(run_dir) / DECISION, decision)
    return reason
